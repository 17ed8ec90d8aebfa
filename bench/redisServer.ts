/**
 * The bench's own redis-server: a free port on 127.0.0.1, a temp dir, the append-only file on
 * with Redis' default `appendfsync everysec` (the tests' helper, test/helpers/redisServer.ts,
 * fsyncs every write instead, which measures the disk rather than agentwire). Ended by its pid.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** `redis-server --version`, or throws a clear error when it is not installed. */
export function redisServerVersion(): string {
  const result = spawnSync('redis-server', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (result.error || result.status !== 0) throw new Error(`the redis phase needs redis-server on PATH (${result.error?.message ?? result.stderr})`);
  return /v=(\S+)/.exec(result.stdout)?.[1] ?? result.stdout.trim();
}

export class BenchRedis {
  private constructor(
    readonly port: number,
    readonly child: ChildProcess,
    readonly dir: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<BenchRedis> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'agentwire-bench-redis-'));
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--protected-mode', 'no'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const redis = new BenchRedis(port, child, dir);
    let output = '';
    const started = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start on ${port}: ${output}`)), 10_000);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`cannot run redis-server: ${error.message}`));
      });
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}: ${output}`));
      });
    });
    try {
      await started;
    } catch (error) {
      await redis.stop();
      throw error;
    }
    return redis;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      process.kill(child.pid, 'SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
