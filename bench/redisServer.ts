/**
 * The bench's Redis is the tests' own server (test/helpers/redisServer.ts, started with
 * `appendfsync everysec`); this only checks up front that redis-server is installed.
 */
import { spawnSync } from 'node:child_process';

/** `redis-server --version`, or throws a clear error when it is not installed. */
export function redisServerVersion(): string {
  const result = spawnSync('redis-server', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (result.error || result.status !== 0) throw new Error(`the redis phase needs redis-server on PATH (${result.error?.message ?? result.stderr})`);
  return /v=(\S+)/.exec(result.stdout)?.[1] ?? result.stdout.trim();
}
