import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

/**
 * scripts/ensure-test-deps.mjs, the `pretest` step that makes `npm test` pass on a fresh
 * machine: run as a child with a PATH the test controls (a temp dir), so "redis-server is
 * missing" and "apt-get" are what the test puts there. Chromium is looked up at its absolute
 * path (where test/browser.test.ts launches it), present on every machine that runs the suite.
 */

const SCRIPT = 'scripts/ensure-test-deps.mjs';

let dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  dirs = [];
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ensure-test-deps-'));
  dirs.push(dir);
  return dir;
}

function runScript(path: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT], { env: { PATH: path }, timeout: 20_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number(error.code ?? -1) : 0, stdout, stderr });
    });
  });
}

async function writeExecutable(path: string, body: string): Promise<void> {
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
}

describe('ensure-test-deps (pretest)', () => {
  it('is silent and exits 0 when everything is installed', async () => {
    expect(await runScript(process.env.PATH ?? '')).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('without apt-get, exits 1 naming the missing program and its package', async () => {
    const empty = await tempDir();
    const result = await runScript(empty);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('redis-server (the Redis tests start their own redis-server)');
    expect(result.stderr).toContain('python3 (the upstream-agent tests run examples/python-agent/agent.py)');
    expect(result.stderr).toContain('Debian packages: redis-server python3');
    expect(result.stderr).not.toContain('chromium');
  });

  it('with apt-get: as root installs the missing package, otherwise names the one sudo command', async () => {
    const bin = await tempDir();
    const log = join(bin, 'apt-get.log');
    // A stand-in apt-get: records its arguments; "install" puts each named package's program on PATH.
    await writeExecutable(
      join(bin, 'apt-get'),
      `echo "$DEBIAN_FRONTEND $*" >> ${log}\n` +
        `if [ "$1" = install ]; then for p in "$@"; do case "$p" in install|-*) ;; *) printf '#!/bin/sh\\n' > ${bin}/$p; /bin/chmod +x ${bin}/$p;; esac; done; fi`,
    );
    const result = await runScript(bin);
    if (process.getuid?.() === 0) {
      expect(result).toMatchObject({ code: 0, stderr: 'ensure-test-deps: installing redis-server python3 with apt-get\n' });
      expect(await readFile(log, 'utf8')).toBe('noninteractive update -qq\nnoninteractive install -y -qq redis-server python3\n');
    } else {
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('  sudo apt-get update && sudo apt-get install -y redis-server python3\n');
      await expect(readFile(log, 'utf8')).rejects.toThrow(/ENOENT/);
    }
  });

  it('exits 1, not 0, when apt-get leaves the program missing (as root; otherwise it is not run)', async () => {
    const bin = await tempDir();
    await writeExecutable(join(bin, 'apt-get'), 'exit 0');
    const result = await runScript(bin);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(process.getuid?.() === 0 ? /still missing after apt-get install: redis-server python3/ : /sudo apt-get/);
  });
});
