/**
 * The settings table as people read it: `agentwire serve --help` and the README's markdown
 * table. Pure text in, text out; `npm run docs:settings` writes the README.
 */
import { SETTINGS } from './settings.js';

export const README_TABLE_BEGIN = '<!-- settings:begin (generated from packages/agentwire/src/config/settings.ts by `npm run docs:settings`; do not edit) -->';
export const README_TABLE_END = '<!-- settings:end -->';

/** `agentwire serve --help`. */
export function serveHelp(): string {
  const width = Math.max(...SETTINGS.map((s) => s.flag.length));
  const lines = SETTINGS.map((s) => `  ${s.flag.padEnd(width)}  ${s.env}  (default ${s.defaultText})\n  ${' '.repeat(width)}  ${s.description}`);
  return `agentwire serve [flags]\n\nEvery flag has an environment variable; flags win.\n\n${lines.join('\n')}\n`;
}

/** The README's settings table in markdown, one row per setting. */
export function settingsMarkdownTable(): string {
  const cell = (text: string) => text.replace(/\|/g, '\\|');
  const rows = SETTINGS.map((s) => `| \`${s.env}\` | \`${s.flag}\` | ${cell(s.defaultText)} | ${cell(s.description)} |`);
  return ['| env | flag | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

/** The README with the text between the markers replaced by the current table; throws when a marker is missing. */
export function withSettingsTable(readme: string): string {
  const begin = readme.indexOf(README_TABLE_BEGIN);
  const end = readme.indexOf(README_TABLE_END);
  if (begin < 0 || end < begin) throw new Error(`README has no settings table markers (${README_TABLE_BEGIN} ... ${README_TABLE_END})`);
  return `${readme.slice(0, begin + README_TABLE_BEGIN.length)}\n${settingsMarkdownTable()}\n${readme.slice(end)}`;
}

/**
 * How the README's table differs from the settings table, one line per differing row, naming
 * the row; empty when they agree.
 */
export function settingsTableDrift(readme: string): string[] {
  const current = readme.split('\n');
  const wanted = withSettingsTable(readme).split('\n');
  const drift: string[] = [];
  for (let i = 0; i < Math.max(current.length, wanted.length); i++) {
    if (current[i] !== wanted[i]) drift.push(`README line ${i + 1}: is ${JSON.stringify(current[i] ?? '')}, table says ${JSON.stringify(wanted[i] ?? '')}`);
  }
  return drift;
}
