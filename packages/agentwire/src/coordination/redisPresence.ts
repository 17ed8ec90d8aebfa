import type { RedisEngine } from '../engine/redisEngine.js';
import { coalesceWrites } from '../engine/redisWrites.js';
import type { ConnectionPresence, ConnectionRef } from './presence.js';

/** KEYS: the user's connection set. ARGV: now, expiry, connectionId, cap. */
const ACQUIRE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`;

type ScriptedRedis = RedisEngine['redis'] & { awAcquire(...args: (string | number)[]): Promise<number> };

/**
 * The per-user connection cap across nodes: a sorted set per user (score = expiry) that each
 * node renews for its live connections. Exact while nodes are alive; a node that dies leaves
 * its entries counted until they expire (`ttlMs`), so the cap errs on the strict side.
 */
export class RedisPresence implements ConnectionPresence {
  readonly #redis: ScriptedRedis;

  constructor(
    private readonly engine: RedisEngine,
    private readonly ttlMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {
    this.#redis = engine.redis as ScriptedRedis;
    this.#redis.defineCommand('awAcquire', { numberOfKeys: 1, lua: ACQUIRE });
  }

  /** How often `renew` must run for entries never to expire while their node lives. */
  get renewIntervalMs(): number {
    return Math.floor(this.ttlMs / 3);
  }

  async acquire(ref: ConnectionRef, cap: number): Promise<boolean> {
    const now = this.now();
    const ok = await this.#redis.awAcquire(this.#key(ref.userId), now, now + this.ttlMs, ref.connectionId, cap, this.ttlMs * 2);
    return ok === 1;
  }

  async release(ref: ConnectionRef): Promise<void> {
    await this.#redis.zrem(this.#key(ref.userId), ref.connectionId);
  }

  async renew(refs: readonly ConnectionRef[]): Promise<void> {
    if (refs.length === 0) return;
    const expiry = this.now() + this.ttlMs;
    // Separate commands, not a pipeline: on a Redis Cluster the users' keys live on several
    // masters. On one Redis they still leave in one write.
    coalesceWrites(this.#redis);
    // Not XX: an entry lost to a flush or restart, or pruned after a long outage, is added back.
    const renewed = refs.map((ref) => this.#redis.zadd(this.#key(ref.userId), expiry, ref.connectionId));
    // The set's own TTL (set by acquire) must follow too, or the whole set of a user whose
    // connections outlive it expires and the cluster-wide count drops to zero.
    for (const userId of new Set(refs.map((ref) => ref.userId))) renewed.push(this.#redis.pexpire(this.#key(userId), this.ttlMs * 2));
    await Promise.all(renewed);
  }

  #key(userId: string): string {
    return this.engine.keys(userId).connections;
  }
}
