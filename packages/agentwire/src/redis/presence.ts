import type { ConnectionPresence, ConnectionRef } from '../coordination/presence.js';
import type { RedisConnection } from './connection.js';

/** Entry lifetime and clock of a `RedisPresence`. */
export interface RedisPresenceOptions {
  /** A node's entries expire this long after its last renewal (it died). Default 30000. */
  readonly ttlMs?: number;
  readonly now?: () => number;
}

/**
 * The per-user connection cap across nodes: a sorted set per user (score = expiry) that each
 * node renews for its live connections. Exact while nodes are alive; a node that dies leaves
 * its entries counted until they expire (`ttlMs`), so the cap errs on the strict side.
 */
export class RedisPresence implements ConnectionPresence {
  readonly #connection: RedisConnection;
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(connection: RedisConnection, options: RedisPresenceOptions = {}) {
    this.#connection = connection;
    this.#ttlMs = options.ttlMs ?? 30_000;
    this.#now = options.now ?? Date.now;
  }

  /** How often `renew` must run for entries never to expire while their node lives. */
  get renewIntervalMs(): number {
    return Math.floor(this.#ttlMs / 3);
  }

  async acquire(ref: ConnectionRef, cap: number): Promise<boolean> {
    const now = this.#now();
    const ok = await this.#connection.script('acquireConnection', [this.#key(ref.userId)], [now, now + this.#ttlMs, ref.connectionId, cap, this.#ttlMs * 2]);
    return ok === 1;
  }

  async release(ref: ConnectionRef): Promise<void> {
    await this.#connection.client.zrem(this.#key(ref.userId), ref.connectionId);
  }

  async renew(refs: readonly ConnectionRef[]): Promise<void> {
    if (refs.length === 0) return;
    const redis = this.#connection.client;
    const expiry = this.#now() + this.#ttlMs;
    // Separate commands, not a pipeline: on a Redis Cluster the users' keys live on several
    // masters. On one Redis they still leave in one write.
    this.#connection.coalesceWrites();
    // Not XX: an entry lost to a flush or restart, or pruned after a long outage, is added back.
    const renewed = refs.map((ref) => redis.zadd(this.#key(ref.userId), expiry, ref.connectionId));
    // The set's own TTL (set by acquire) must follow too, or the whole set of a user whose
    // connections outlive it expires and the cluster-wide count drops to zero.
    for (const userId of new Set(refs.map((ref) => ref.userId))) renewed.push(redis.pexpire(this.#key(userId), this.#ttlMs * 2));
    await Promise.all(renewed);
  }

  #key(userId: string): string {
    return this.#connection.keys.user(userId).connections;
  }
}
