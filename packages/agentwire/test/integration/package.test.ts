import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChildTracker, REPO_ROOT } from '../helpers/childProcess.js';

/**
 * The packages as a user gets them: `npm pack` of every workspace package, the tarballs installed
 * into an empty project, and the README's Embedding and Client SDK examples run there exactly as the
 * README shows them, with plain `node` (the runtime running this suite: CI runs it on Node 20
 * and on Node 24). The tarballs are packed from the dist/ folders that `npm test` builds first (pretest):
 * `--ignore-scripts` keeps a build from replacing dist/ under the other test files' feet.
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

/** What each package's tarball must hold: its build and nothing of the sources. */
const EXPECTED_FILES = new Map<string, string[]>([
  ['agentwire', ['bin/agentwire.mjs', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/redis/scripts/append.lua']],
  ['@agentwire/client', ['dist/index.js', 'dist/index.d.ts', 'dist/node.js']],
  ['@agentwire/protocol', ['dist/index.js', 'dist/index.d.ts']],
  ['@agentwire/chat-page', ['dist/index.js', 'dist/chat.js']],
  ['@agentwire/storm', ['dist/index.js', 'dist/workerEntry.js']],
]);

beforeAll(async () => {
  for (const dir of ['agentwire', 'client', 'protocol', 'chat-page', 'storm']) {
    expect(existsSync(join(REPO_ROOT, 'packages', dir, 'dist/index.js')), `packages/${dir}/dist is built (npm run build; npm test builds it first)`).toBe(true);
  }
  scratch = mkdtempSync(join(tmpdir(), 'agentwire-package-'));
  const packed = JSON.parse(await run(['npm', 'pack', '--workspaces', '--ignore-scripts', '--json', '--pack-destination', scratch], 60_000)) as Array<{
    name: string;
    filename: string;
    files: Array<{ path: string }>;
  }>;
  expect(packed.map((p) => p.name).sort()).toEqual([...EXPECTED_FILES.keys()].sort());
  for (const { name, files } of packed) {
    const paths = files.map((f) => f.path);
    for (const expected of EXPECTED_FILES.get(name)!) expect(paths, name).toContain(expected);
    expect(
      paths.filter((f) => !/^(dist\/|bin\/|package\.json$|README\.md$|LICENSE)/.test(f)),
      `${name}: files outside dist/ and bin/`,
    ).toEqual([]);
    expect(
      paths.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')),
      `${name}: TypeScript sources`,
    ).toEqual([]);
  }
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true }));
  await run(['npm', 'install', '--prefix', scratch, '--prefer-offline', '--no-audit', '--no-fund', ...packed.map((p) => join(scratch, p.filename))], 90_000);
}, 150_000);

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
