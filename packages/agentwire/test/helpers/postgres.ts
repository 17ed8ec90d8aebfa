import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './redisServer.js';
import { stopChild } from './childProcess.js';

/** The machine's PostgreSQL (trust auth); tests make a database of their own on it. */
export const MACHINE_POSTGRES = process.env.AGENTWIRE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const PG_BIN = '/usr/lib/postgresql/15/bin';

/** A fresh database `agentwire_test_<random>` on the machine's PostgreSQL, dropped by `drop()`. */
export async function createTestDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `agentwire_test_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: MACHINE_POSTGRES });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(MACHINE_POSTGRES);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: MACHINE_POSTGRES });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** The uid/gid of the `postgres` account when running as root (PostgreSQL refuses to run as root). */
function postgresAccount(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
}

/**
 * A PostgreSQL 15 server of the test's own (initdb in a temp dir, trust auth, a free port, its
 * socket in the same dir), started and stopped by the test; the server process is a direct child,
 * ended by its pid.
 */
export class PostgresServer {
  #process: ChildProcess | null = null;
  readonly #account = postgresAccount();

  /** Only `PostgresServer.start()` constructs one (it waits until the server accepts connections). */
  constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  static async start(): Promise<PostgresServer> {
    const dir = mkdtempSync(join(tmpdir(), 'agentwire-pg-'));
    const server = new PostgresServer(dir, await freePort());
    try {
      if (server.#account) chownSync(dir, server.#account.uid, server.#account.gid);
      const init = spawnSync(`${PG_BIN}/initdb`, ['-D', join(dir, 'data'), '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8'], {
        encoding: 'utf8',
        ...server.#account,
      });
      if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.error?.message}`);
      await server.startProcess();
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  get pid(): number | undefined {
    return this.#process?.pid;
  }

  async startProcess(): Promise<void> {
    const child = spawn(
      `${PG_BIN}/postgres`,
      ['-D', join(this.dir, 'data'), '-p', String(this.port), '-k', this.dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'],
      { stdio: ['ignore', 'pipe', 'pipe'], ...this.#account },
    );
    this.#process = child;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`postgres did not start on ${this.port}: ${output}`)), 20_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('database system is ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`postgres exited with ${code}: ${output}`));
      });
    });
  }

  #paused: number[] = [];

  /**
   * Freezes the server and every backend (SIGSTOP by pid): a stall. Connections stay open and
   * nothing is answered until `resume()`.
   */
  pause(): void {
    const pid = this.#process?.pid;
    if (pid === undefined || this.#paused.length > 0) return;
    const children = spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .stdout.split('\n')
      .map((line) => Number(line.trim()))
      .filter((child) => child > 0);
    this.#paused = [pid, ...children];
    for (const each of this.#paused) process.kill(each, 'SIGSTOP');
  }

  resume(): void {
    for (const each of this.#paused.splice(0)) {
      try {
        process.kill(each, 'SIGCONT');
      } catch {
        // Gone meanwhile.
      }
    }
  }

  /** Stops the server by its pid (SIGINT: fast shutdown, clients disconnected) and waits for its exit. */
  async stopProcess(signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
    this.resume();
    await stopChild(this.#process, signal);
  }

  async stop(): Promise<void> {
    await this.stopProcess('SIGQUIT');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The backends waiting for a lock that backend `blockerPid` holds, once there are any; `[]` as soon
 * as `settled()` is true (what was awaited went on without waiting). PostgreSQL announces no lock
 * wait, so its view of them is asked again after every answer (no timer), up to `timeoutMs`.
 */
export async function backendsBlockedBy(
  db: pg.Pool | pg.Client,
  blockerPid: number,
  options: { settled?: () => boolean; timeoutMs?: number } = {},
): Promise<Array<{ pid: number; query: string }>> {
  const deadline = performance.now() + (options.timeoutMs ?? 5000);
  for (;;) {
    if (options.settled?.()) return [];
    const { rows } = await db.query<{ pid: number; query: string }>('SELECT pid, query FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))', [
      blockerPid,
    ]);
    if (rows.length > 0) return rows;
    if (performance.now() > deadline) throw new Error(`timed out waiting for a backend blocked by ${blockerPid}`);
  }
}
