/**
 * The Redis backend (one Redis or a Redis Cluster): the event engine, the run store and the
 * connection presence side by side on one shared connection layer. Nothing outside this folder
 * names a Redis key, field or script.
 */
import { RedisConnection, type RedisConnectionOptions } from './connection.js';
import { RedisEngine } from './engine.js';
import { RedisPresence } from './presence.js';
import { RedisRunStore } from './runStore.js';
import { RedisThreadMarks } from './threadMarks.js';
import { DEFAULTS } from '../config/settings.js';

export { RedisConnection, type ClusterNode, type RedisConnectionOptions } from './connection.js';
export { RedisEngine, type RedisEngineOptions } from './engine.js';
export { RedisPresence, type RedisPresenceOptions } from './presence.js';
export { RedisRunStore, type RedisRunStoreOptions } from './runStore.js';
export { RedisThreadMarks } from './threadMarks.js';

/** Where and how the Redis backend runs: its connection, plus the retention, leases and node id of its parts. */
export interface RedisBackendOptions extends RedisConnectionOptions {
  /** Entries kept per user log. Default: AGENTWIRE_RETENTION_EVENTS's (10000). */
  readonly retentionEvents?: number;
  /** A user's log, runs and message-id claims expire after this long without activity. Default 24 h. */
  readonly retentionMs?: number;
  /** Runs of a node that has not renewed its lease for this long are presumed lost. Default 15000. */
  readonly leaseMs?: number;
  /** This gateway node's name (run ownership, cancel requests); random when unset. */
  readonly nodeId?: string;
  /** A dead node's connections stop counting against the per-user cap after this long. Default 30000. */
  readonly presenceTtlMs?: number;
  readonly now?: () => number;
}

/** The parts of a Redis backend, for `createGateway({ engine, runStore, presence })`. */
export interface RedisBackend {
  readonly engine: RedisEngine;
  readonly runStore: RedisRunStore;
  readonly presence: RedisPresence;
  /** Renames and deletions of threads for the default history store, shared by every node. */
  readonly threadMarks: RedisThreadMarks;
  /** The connection the three share: key names (`keys`), the raw client, readiness. */
  readonly connection: RedisConnection;
  /** Closes the shared connection; call after the gateway's `shutdown()`. */
  close(): Promise<void>;
}

/**
 * The Redis backend of a gateway node: `agentwire serve` with AGENTWIRE_REDIS_URL or
 * AGENTWIRE_REDIS_CLUSTER_NODES uses this, and so can an embedder. Starts connecting at once;
 * `engine.ready()` resolves once Redis answers.
 */
export function createRedisBackend(options: RedisBackendOptions): RedisBackend {
  const connection = new RedisConnection(options);
  const now = options.now ? { now: options.now } : {};
  const retentionMs = options.retentionMs !== undefined ? { retentionMs: options.retentionMs } : {};
  const engine = new RedisEngine(connection, {
    ...retentionMs,
    ...(options.retentionEvents !== undefined ? { retentionEvents: options.retentionEvents } : {}),
    ...now,
  });
  const runStore = new RedisRunStore(connection, {
    ...retentionMs,
    ...(options.leaseMs !== undefined ? { leaseMs: options.leaseMs } : {}),
    ...(options.nodeId !== undefined ? { nodeId: options.nodeId } : {}),
    ...(options.onError ? { onError: options.onError } : {}),
    ...now,
  });
  const presence = new RedisPresence(connection, { ...(options.presenceTtlMs !== undefined ? { ttlMs: options.presenceTtlMs } : {}), ...now });
  const threadMarks = new RedisThreadMarks(connection, { retentionMs: options.retentionMs ?? DEFAULTS.retentionMs });
  return { engine, runStore, presence, threadMarks, connection, close: () => connection.close() };
}
