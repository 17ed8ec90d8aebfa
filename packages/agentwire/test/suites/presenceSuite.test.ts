/**
 * The ConnectionPresence contract (the per-user connection cap across nodes), run against every
 * shared presence. Without one, each node's coordinator caps its own connections
 * (coordinator.test.ts); RedisPresence, on one Redis and on a Cluster, is today the only
 * implementation of the interface.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ConnectionPresence, ConnectionRef } from '../../src/coordination/presence.js';
import { machineRedisBackend } from '../helpers/machineRedis.js';
import { RedisClusterServer } from '../helpers/redisCluster.js';

interface PresenceUnderTest {
  readonly presence: ConnectionPresence;
  close(): Promise<void>;
}

/** Makes the presence of one node; nodes made with the same `cluster` name share their counts. */
type PresenceFactory = (cluster: string, options: { ttlMs: number; now: () => number }) => Promise<PresenceUnderTest>;

/** A 3-master Redis Cluster of this file's own: users spread over its slots. */
let redisCluster: RedisClusterServer | undefined;
beforeAll(async () => {
  redisCluster = await RedisClusterServer.start();
});
afterAll(async () => {
  await redisCluster?.stop();
});

/** The Redis presence on the machine's Redis, or on the file's cluster. */
function redisPresence(onCluster: boolean): PresenceFactory {
  return async (cluster, { ttlMs, now }) => {
    const backend = await machineRedisBackend({ keyPrefix: `suite-${cluster}`, presenceTtlMs: ttlMs, now }, onCluster ? redisCluster : undefined);
    return { presence: backend.presence, close: () => backend.close() };
  };
}

const implementations: [string, PresenceFactory][] = [
  ['RedisPresence', redisPresence(false)],
  ['RedisPresence on a Redis Cluster', redisPresence(true)],
];

const TTL_MS = 30_000;

function ref(userId: string, connectionId: string): ConnectionRef {
  return { userId, connectionId };
}

describe.each(implementations)('ConnectionPresence contract: %s', (_name, make) => {
  const opened: PresenceUnderTest[] = [];
  let now = 1_000_000;
  afterEach(async () => {
    for (const each of opened.splice(0)) await each.close();
  });
  /** Two nodes of one fresh cluster. */
  async function nodes(): Promise<[ConnectionPresence, ConnectionPresence]> {
    const cluster = randomUUID().slice(0, 12);
    const made = [await make(cluster, { ttlMs: TTL_MS, now: () => now }), await make(cluster, { ttlMs: TTL_MS, now: () => now })];
    opened.push(...made);
    return [made[0]!.presence, made[1]!.presence];
  }

  it('counts a user’s connections up to the cap, and a release frees a place', async () => {
    const [presence] = await nodes();
    expect(await presence.acquire(ref('u1', 'c1'), 2)).toBe(true);
    expect(await presence.acquire(ref('u1', 'c2'), 2)).toBe(true);
    expect(await presence.acquire(ref('u1', 'c3'), 2)).toBe(false);
    // Acquiring a connection already counted does not count it twice.
    expect(await presence.acquire(ref('u1', 'c2'), 2)).toBe(true);
    await presence.release(ref('u1', 'c1'));
    expect(await presence.acquire(ref('u1', 'c3'), 2)).toBe(true);
    expect(await presence.acquire(ref('u1', 'c4'), 2)).toBe(false);
    // Releasing what is not counted changes nothing.
    await presence.release(ref('u1', 'c9'));
    expect(await presence.acquire(ref('u1', 'c4'), 2)).toBe(false);
  });

  it('counts each user on its own', async () => {
    const [presence] = await nodes();
    expect(await presence.acquire(ref('u1', 'c1'), 1)).toBe(true);
    expect(await presence.acquire(ref('u2', 'c1'), 1)).toBe(true);
    expect(await presence.acquire(ref('u1', 'c2'), 1)).toBe(false);
    expect(await presence.acquire(ref('u2', 'c2'), 1)).toBe(false);
    await presence.release(ref('u2', 'c1'));
    expect(await presence.acquire(ref('u1', 'c2'), 1)).toBe(false);
    expect(await presence.acquire(ref('u2', 'c2'), 1)).toBe(true);
  });

  it('counts the connections of every node against one cap', async () => {
    const [a, b] = await nodes();
    expect(await a.acquire(ref('u1', 'a1'), 3)).toBe(true);
    expect(await b.acquire(ref('u1', 'b1'), 3)).toBe(true);
    expect(await a.acquire(ref('u1', 'a2'), 3)).toBe(true);
    expect(await b.acquire(ref('u1', 'b2'), 3)).toBe(false);
    await a.release(ref('u1', 'a1'));
    expect(await b.acquire(ref('u1', 'b2'), 3)).toBe(true);
  });

  it('keeps renewed connections counted and lets those of a node that stopped renewing expire', async () => {
    const [alive, dead] = await nodes();
    expect(await alive.acquire(ref('u1', 'a1'), 2)).toBe(true);
    expect(await dead.acquire(ref('u1', 'd1'), 2)).toBe(true);
    now += TTL_MS / 2;
    await alive.renew([ref('u1', 'a1')]);
    expect(await alive.acquire(ref('u1', 'a2'), 2)).toBe(false);
    now += TTL_MS / 2 + 1;
    // d1 was not renewed for longer than the TTL: its place is free; a1 still counts.
    expect(await alive.acquire(ref('u1', 'a2'), 2)).toBe(true);
    expect(await alive.acquire(ref('u1', 'a3'), 2)).toBe(false);
  });
});
