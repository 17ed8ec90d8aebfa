#!/usr/bin/env node
/**
 * The build (`npm run build`; npm runs it as `prepare` on `npm ci`): every package of the
 * workspace compiles here, nothing at run time. `node scripts/build.mjs [package…]` builds the
 * named packages (folder names under packages/), in dependency order, else all of them.
 * - tsc (each package's tsconfig.json): src/ to JavaScript and .d.ts in its dist/.
 * - Lua: the Redis scripts (packages/agentwire/src/redis/scripts/*.lua, read at run time) are
 *   copied beside the compiled code, src/<path> to dist/<path>; tsc copies nothing but code.
 * - esbuild: the chat page script (packages/chat-page/src/page.ts with the client SDK, markdown-it
 *   and DOMPurify) into one minified browser file, packages/chat-page/dist/chat.js, which the
 *   gateway serves as it is.
 * Each dist/ is made afresh so that a tarball never carries the output of a deleted source.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** Packages in dependency order: each one's workspace dependencies come before it. */
const ORDER = ['protocol', 'client', 'chat-page', 'storm', 'agentwire'];

const root = fileURLToPath(new URL('..', import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !ORDER.includes(name));
if (unknown.length > 0) {
  process.stderr.write(`build: unknown package ${unknown.join(', ')} (packages: ${ORDER.join(', ')})\n`);
  process.exit(2);
}

for (const name of ORDER.filter((name) => wanted.length === 0 || wanted.includes(name))) {
  const dir = join(root, 'packages', name);
  rmSync(join(dir, 'dist'), { recursive: true, force: true });
  const compiled = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json')], { cwd: dir, stdio: 'inherit' });
  if (compiled.error || compiled.status !== 0) {
    process.stderr.write(`build: tsc failed for packages/${name} (${compiled.error?.message ?? `exit ${compiled.status}`})\n`);
    process.exit(1);
  }
  const luaScripts = join(dir, 'src/redis/scripts');
  if (existsSync(luaScripts)) {
    cpSync(luaScripts, join(dir, 'dist/redis/scripts'), { recursive: true, filter: (path) => !/\.[^/]+$/.test(path) || path.endsWith('.lua') });
  }
  if (name === 'chat-page') {
    await build({
      entryPoints: [join(dir, 'src/page.ts')],
      outfile: join(dir, 'dist/chat.js'),
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      // markdown-it (with its entity table) and DOMPurify make up most of the page: minified,
      // the script is about a third of its plain size.
      minify: true,
      charset: 'utf8',
      legalComments: 'none',
      logLevel: 'warning',
    });
  }
}
