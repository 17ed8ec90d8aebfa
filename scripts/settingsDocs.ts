/**
 * `npm run docs:settings`: rewrites the README's settings table from the settings table
 * (src/config/settings.ts). With `--check` it changes nothing and exits 1 when they differ.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { settingsTableDrift, withSettingsTable } from '../packages/agentwire/src/config/index.js';

const readmePath = fileURLToPath(new URL('../README.md', import.meta.url));
const readme = readFileSync(readmePath, 'utf8');
if (process.argv.includes('--check')) {
  const drift = settingsTableDrift(readme);
  for (const line of drift) process.stderr.write(`${line}\n`);
  if (drift.length > 0) process.stderr.write('README settings table is out of date: run npm run docs:settings\n');
  process.exitCode = drift.length > 0 ? 1 : 0;
} else {
  const updated = withSettingsTable(readme);
  if (updated !== readme) writeFileSync(readmePath, updated);
  process.stdout.write(updated === readme ? 'README settings table is up to date\n' : 'README settings table rewritten\n');
}
