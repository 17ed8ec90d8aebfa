import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { stopChild } from './childProcess.js';

/** A free TCP port on 127.0.0.1, found by binding port 0. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * A redis-server of the test's own, on a free port, with an append-only file in a temp dir so a
 * restart keeps the data. Fails (never skips) when redis-server is missing: CI installs it.
 */
export class RedisServer {
  #process: ChildProcess | null = null;
  #paused = false;
  readonly dir = mkdtempSync(join(tmpdir(), 'agentwire-redis-'));

  readonly #appendfsync: 'always' | 'everysec';

  /** Only `RedisServer.start()` constructs one (it waits until the server listens). */
  constructor(
    readonly port: number,
    appendfsync: 'always' | 'everysec',
  ) {
    this.#appendfsync = appendfsync;
  }

  /**
   * `appendfsync`: 'always' (default) so a restart in a test loses nothing; the bench uses
   * Redis' default 'everysec', since syncing every write would measure the disk.
   */
  static async start(options: { appendfsync?: 'always' | 'everysec' } = {}): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), options.appendfsync ?? 'always');
    try {
      await server.startProcess();
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.#process?.pid;
  }

  async startProcess(): Promise<void> {
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        this.#appendfsync,
        '--save',
        '',
        '--protected-mode',
        'no',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.#process = child;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start on ${this.port}: ${output}`)), 10_000);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`cannot run redis-server (is it installed?): ${error.message}`));
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
  }

  /**
   * Freezes the server (SIGSTOP): a stall. Its sockets stay open and keep taking commands, but
   * nothing is answered until `resume()`. Pair it with `resume()` in a `finally`; `stop()` and
   * `stopProcess()` resume a paused server first.
   */
  pause(): void {
    if (this.#process?.pid === undefined || this.#paused) return;
    process.kill(this.#process.pid, 'SIGSTOP');
    this.#paused = true;
  }

  /** Lets a paused server go on (SIGCONT): it answers what it was sent meanwhile, in order. */
  resume(): void {
    if (this.#process?.pid === undefined || !this.#paused) return;
    this.#paused = false;
    process.kill(this.#process.pid, 'SIGCONT');
  }

  /** Stops the server (SIGTERM: it finishes writing its append-only file) and waits for exit. */
  async stopProcess(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.resume();
    await stopChild(this.#process, signal);
  }

  async restart(): Promise<void> {
    await this.stopProcess();
    await this.startProcess();
  }

  client(): Redis {
    return new Redis(this.url, { lazyConnect: false, maxRetriesPerRequest: 3 });
  }

  async stop(): Promise<void> {
    await this.stopProcess('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Polls Redis (there is no event for it) until `channel` has `count` subscribers: plain pub/sub
 * (NUMSUB) or sharded (SHARDNUMSUB).
 */
export async function waitForSubscribers(
  client: Redis,
  channel: string,
  count: number,
  { sharded = false, timeoutMs = 5000 }: { sharded?: boolean; timeoutMs?: number } = {},
): Promise<void> {
  const kind = sharded ? 'shard subscribers' : 'subscribers';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const reply = (await client.call('PUBSUB', sharded ? 'SHARDNUMSUB' : 'NUMSUB', channel)) as [string, number];
    if (Number(reply[1]) === count) return;
    if (Date.now() > deadline) throw new Error(`${channel} has ${reply[1]} ${kind}, not ${count}, after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
