/**
 * The bench's Redis is the tests' own server (test/helpers/redisServer.ts, started with
 * `appendfsync everysec`), emptied between configurations through an admin connection.
 *
 * Its append-only file is compacted after each emptying, and no rewrite starts by itself: the
 * file grows through a run (emptying does not shrink it), and Redis rewrote it in a forked child
 * each time it doubled past 64 MB, at a random point of about every other measurement; the
 * rewrite's compression and checksums (a tenth of redis-server's CPU samples in a `perf` profile
 * of a max step) took CPU from the gateway on the two cores. What every write costs in the file
 * (the append itself, fsync every second) is still measured (docs/BENCHMARKS.md).
 */
import { spawnSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { RedisServer } from '../packages/agentwire/test/helpers/redisServer.js';

/** `redis-server --version`, or throws a clear error when it is not installed. */
export function redisServerVersion(): string {
  const result = spawnSync('redis-server', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (result.error || result.status !== 0) throw new Error(`the redis phase needs redis-server on PATH (${result.error?.message ?? result.stderr})`);
  return /v=(\S+)/.exec(result.stdout)?.[1] ?? result.stdout.trim();
}

export interface BenchRedis {
  readonly url: string;
  /** For INFO and CONFIG RESETSTAT. */
  readonly admin: Redis;
  /** Empties Redis and compacts its append-only file; resolves once the rewrite is done. */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

export async function startBenchRedis(): Promise<BenchRedis> {
  const server = await RedisServer.start({ appendfsync: 'everysec' });
  const admin = new Redis(server.url, { maxRetriesPerRequest: 3 });
  // No rewrite but those of reset(): far above what a bench run writes.
  await admin.config('SET', 'auto-aof-rewrite-min-size', String(64 * 1024 ** 3));
  return {
    url: server.url,
    admin,
    reset: async () => {
      await admin.flushall();
      await admin.bgrewriteaof();
      const deadline = Date.now() + 30_000;
      // Redis announces no end of a rewrite: INFO is asked until none is running or scheduled.
      while (/^aof_rewrite_(?:in_progress|scheduled):1/m.test(await admin.info('persistence'))) {
        if (Date.now() > deadline) throw new Error('the bench Redis did not finish rewriting its append-only file in 30 s');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    stop: async () => {
      admin.disconnect();
      await server.stop();
    },
  };
}

/** redis-server's CPU time so far (user + system, all its threads), in µs, from INFO. */
export async function redisCpuUs(admin: Redis): Promise<number> {
  const info = await admin.info('cpu');
  const seconds = (field: string) => Number(new RegExp(`^${field}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  return (seconds('used_cpu_user') + seconds('used_cpu_sys')) * 1e6;
}
