/**
 * The bench's Redis is the tests' own server (test/helpers/redisServer.ts, started with
 * `appendfsync everysec`), flushed between configurations through an admin connection.
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
  /** For FLUSHALL between configurations, INFO and CONFIG RESETSTAT. */
  readonly admin: Redis;
  stop(): Promise<void>;
}

export async function startBenchRedis(): Promise<BenchRedis> {
  const server = await RedisServer.start({ appendfsync: 'everysec' });
  const admin = new Redis(server.url, { maxRetriesPerRequest: 3 });
  return {
    url: server.url,
    admin,
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
