import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChildTracker, REPO_ROOT } from './helpers/childProcess.js';

/**
 * The package as a user gets it: `npm pack` of this repository, installed from the tarball into
 * an empty project, and the README's Embedding and Client SDK examples run there exactly as the
 * README shows them, with plain `node` (the runtime running this suite: CI runs it on Node 20
 * and on Node 24). The tarball is packed from the dist/ that `npm test` builds first (pretest):
 * `--ignore-scripts` keeps `prepare` from rebuilding dist/ under the other test files' feet.
 */

const children = new ChildTracker();
const SECRET = 'package-test-secret-0123456789-abcdefgh';
let scratch = '';

/** The README's ```js block that follows the link to `file`. */
function readmeExample(file: string): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf(`](${file})`);
  expect(at, `README.md links ${file}`).toBeGreaterThan(-1);
  const block = /```js\n([\s\S]*?)```\n/.exec(readme.slice(at));
  expect(block, `a js block after the link to ${file}`).not.toBeNull();
  return block![1]!;
}

/** Runs `command` to its end and returns its stdout; fails with its output if it exits non-zero. */
async function run(command: string[], timeoutMs: number): Promise<string> {
  const child = children.spawn([], {}, { command, timeoutMs });
  const exit = await child.waitExit();
  expect(exit, `${command.join(' ')}\n${child.stderr}`).toEqual({ code: 0, signal: null });
  return child.stdout;
}

beforeAll(async () => {
  expect(existsSync(join(REPO_ROOT, 'dist/index.js')), 'dist/ is built (npm run build; npm test builds it first)').toBe(true);
  scratch = mkdtempSync(join(tmpdir(), 'agentwire-package-'));
  const packed = JSON.parse(
    await run(['npm', 'pack', '--ignore-scripts', '--json', '--pack-destination', scratch], 30_000),
  ) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const files = packed[0]!.files.map((f) => f.path);
  expect(files).toContain('dist/index.js');
  expect(files).toContain('dist/index.d.ts');
  expect(files).toContain('dist/web/chat.js');
  expect(files.filter((f) => !/^(dist\/|bin\/|package\.json$|README\.md$|LICENSE)/.test(f)), 'files outside dist/ and bin/').toEqual([]);
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true }));
  await run(
    ['npm', 'install', '--prefix', scratch, '--prefer-offline', '--no-audit', '--no-fund', join(scratch, packed[0]!.filename)],
    60_000,
  );
}, 90_000);

afterAll(async () => {
  await children.killAll();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('the packed package', () => {
  it('shows examples/*.mjs in the README as they are', () => {
    for (const file of ['examples/embed.mjs', 'examples/client.mjs']) {
      expect(readmeExample(file), file).toBe(readFileSync(join(REPO_ROOT, file), 'utf8'));
    }
  });

  it('needs nothing that compiles at run time', () => {
    for (const tool of ['tsx', 'esbuild', 'typescript']) {
      expect(existsSync(join(scratch, 'node_modules', tool)), `${tool} installed with the package`).toBe(false);
    }
  });

  it("runs the README's Embedding and Client SDK examples with plain node", async () => {
    writeFileSync(join(scratch, 'embed.mjs'), readmeExample('examples/embed.mjs'));
    writeFileSync(join(scratch, 'client.mjs'), readmeExample('examples/client.mjs'));
    const gateway = children.spawn([], { AGENTWIRE_JWT_SECRET: SECRET, PORT: '0' }, { command: [process.execPath, join(scratch, 'embed.mjs')] });
    const [, url] = await gateway.waitForStdout(/^gateway on (ws:\/\/\S+)$/m);

    const client = children.spawn([], { AGENTWIRE_JWT_SECRET: SECRET, AGENTWIRE_URL: url! }, { command: [process.execPath, join(scratch, 'client.mjs')] });
    expect(await client.waitExit(), client.stderr).toEqual({ code: 0, signal: null });
    expect(client.lines()).toEqual([
      '[connecting]',
      '[ready]',
      '#1 agent_started: hello',
      '#2 agent_thinking: Reading "hello"',
      '#3 agent_completed: You said: hello',
      '[closed]',
    ]);

    gateway.signal('SIGTERM');
    expect(await gateway.waitExit(), gateway.stderr).toEqual({ code: 0, signal: null });
    expect(gateway.stderr).toBe('');
  });

  it('runs its bin with plain node', async () => {
    const help = await run([process.execPath, join(scratch, 'node_modules/.bin/agentwire'), 'serve', '--help'], 15_000);
    expect(help).toMatch(/AGENTWIRE_JWT_SECRET/);
  });
});
