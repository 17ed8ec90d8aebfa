import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './redisServer.js';
import { Waiters } from './waitFor.js';

const run = promisify(execFile);

/** Shape of a test cluster: masters, replicas per master, and how soon a silent node counts as failed. */
export interface RedisClusterOptions {
  readonly masters?: number;
  /** Replicas per master (each takes over when its master fails). Default 0. */
  readonly replicas?: number;
  /** cluster-node-timeout: a master silent this long is failed over. Default Redis' 15000. */
  readonly nodeTimeoutMs?: number;
}

/**
 * A Redis Cluster of the test's own: three masters (by default no replicas, no persistence) on
 * free ports, created with `redis-cli --cluster create`. `stop` kills every process by its pid.
 */
export class RedisClusterServer {
  readonly dir = mkdtempSync(join(tmpdir(), 'agentwire-rcluster-'));
  readonly #processes = new Map<number, ChildProcess>();

  /** Only `RedisClusterServer.start()` constructs one (it waits until the server listens). */
  constructor(
    readonly ports: readonly number[],
    readonly options: RedisClusterOptions,
  ) {}

  static async start(options: RedisClusterOptions = {}): Promise<RedisClusterServer> {
    const ports: number[] = [];
    const replicas = options.replicas ?? 0;
    while (ports.length < (options.masters ?? 3) * (1 + replicas)) {
      const port = await freePort();
      if (!ports.includes(port)) ports.push(port);
    }
    const cluster = new RedisClusterServer(ports, options);
    try {
      await Promise.all(ports.map((port) => cluster.#startNode(port)));
      await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes'], {
        timeout: 30_000,
      });
      await Promise.all(ports.map((port) => waitClusterOk(port)));
      // A replica starts empty and takes a while (Redis' diskless sync waits 5 s for more
      // replicas) to receive its master's data: until then a failover loses everything.
      if (replicas > 0) await Promise.all(ports.map((port) => waitReplicationUp(port)));
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  get nodes(): Array<{ host: string; port: number }> {
    return this.ports.map((port) => ({ host: '127.0.0.1', port }));
  }

  /** A plain connection to one master, for admin commands. */
  admin(port: number): Redis {
    return new Redis(port, '127.0.0.1', { lazyConnect: false });
  }

  async #startNode(port: number): Promise<void> {
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--dir',
        this.dir,
        '--save',
        '',
        '--appendonly',
        'no',
        '--protected-mode',
        'no',
        ...(this.options.nodeTimeoutMs ? ['--cluster-node-timeout', String(this.options.nodeTimeoutMs)] : []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.#processes.set(port, child);
    let output = '';
    await new Promise<void>((resolve, reject) => {
      child.once('error', (error) => reject(new Error(`cannot run redis-server (is it installed?): ${error.message}`)));
      child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${output}`)));
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) resolve();
      });
    });
  }

  /** The port of the master serving `key`'s slot, as `port` (a live node) sees the cluster. */
  async masterOf(key: string, port: number): Promise<number> {
    const admin = this.admin(port);
    try {
      const slot = Number(await admin.cluster('KEYSLOT', key));
      const range = (await admin.cluster('SLOTS')).find(([from, to]) => from <= slot && slot <= to);
      if (!range?.[2]) throw new Error(`no node serves slot ${slot}`);
      return Number(range[2][1]);
    } finally {
      admin.disconnect();
    }
  }

  /** SIGKILLs one node's process and waits until it is gone. */
  kill(port: number): Promise<void> {
    return killed(this.#processes.get(port)!);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.#processes.values()].map((child) => killed(child)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    process.kill(child.pid!, 'SIGKILL');
  });
}

/**
 * Polls one node's INFO `section` every 100 ms until `holds` is true of its text, within
 * `timeoutMs` (a node that does not answer yet is polled again).
 */
async function waitForInfo(port: number, section: 'cluster' | 'replication', holds: (info: string) => boolean, timeoutMs: number, what: string): Promise<void> {
  const redis = new Redis(port, '127.0.0.1');
  const waiters = new Waiters();
  let held = false;
  const poll = setInterval(() => {
    const info = section === 'cluster' ? redis.cluster('INFO') : redis.call('INFO', 'replication');
    void info.then(
      (text) => {
        held = holds(String(text));
        waiters.notify();
      },
      () => {},
    );
  }, 100);
  try {
    await waiters.until(() => held, timeoutMs, what);
  } finally {
    clearInterval(poll);
    redis.disconnect();
  }
}

/** Waits until the node reports `cluster_state:ok` (its slots are all assigned and agreed). */
function waitClusterOk(port: number): Promise<void> {
  return waitForInfo(port, 'cluster', (info) => info.includes('cluster_state:ok'), 20_000, `cluster_state:ok on ${port}`);
}

/** Waits until a replica's link to its master is up (its initial sync is done); a master passes at once. */
function waitReplicationUp(port: number): Promise<void> {
  return waitForInfo(
    port,
    'replication',
    (info) => info.includes('role:master') || info.includes('master_link_status:up'),
    30_000,
    `the replica on ${port} to finish its initial sync`,
  );
}
