#!/usr/bin/env node
/**
 * The package's build (`npm run build`; npm runs it as `prepare` on `npm ci` in a clone and on
 * `npm pack`): everything compiles here, nothing at run time.
 * - tsc (tsconfig.build.json): src/ to JavaScript and .d.ts in dist/.
 * - esbuild: the chat page script (src/web/page.ts with the client SDK) into one browser file,
 *   dist/web/chat.js, which the gateway serves as it is.
 * dist/ is made afresh so that a tarball never carries the output of a deleted source.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const at = (path) => join(root, path);

rmSync(at('dist'), { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const compiled = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (compiled.error || compiled.status !== 0) {
  process.stderr.write(`build: tsc failed (${compiled.error?.message ?? `exit ${compiled.status}`})\n`);
  process.exit(1);
}

await build({
  entryPoints: [at('src/web/page.ts')],
  outfile: at('dist/web/chat.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  charset: 'utf8',
  legalComments: 'none',
  logLevel: 'warning',
});
