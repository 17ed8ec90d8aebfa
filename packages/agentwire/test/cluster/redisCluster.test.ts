import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisBackend } from '../../src/redis/index.js';
import type { EnqueueOutcome, RunRecord } from '../../src/runs/runStore.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { RedisClusterServer } from '../helpers/redisCluster.js';
import type { Frame, TestClient } from '../helpers/wsClient.js';

/**
 * The Redis engine on a real 3-master Redis Cluster (AGENTWIRE_REDIS_CLUSTER_NODES) keeps the
 * guarantees it has on one Redis: every script touches one slot, users spread over the masters,
 * live events cross gateway nodes, a dead node's runs end as run_lost, and the run cap and
 * message-id idempotency hold cluster-wide.
 */

let cluster: RedisClusterServer;
beforeAll(async () => {
  cluster = await RedisClusterServer.start();
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const noop = () => {};

async function clusterNode(prefix: string, nodeId: string, leaseMs = 60_000) {
  const backend = createRedisBackend({ clusterNodes: cluster.nodes, keyPrefix: prefix, nodeId, leaseMs, onError: noop });
  await backend.engine.ready();
  cleanups.push(() => backend.close());
  return { engine: backend.engine, store: backend.runStore };
}

async function gatewayOn(prefix: string, nodeId: string, options: Parameters<typeof startGateway>[0] = {}, leaseMs = 60_000): Promise<TestGateway> {
  const { engine, store } = await clusterNode(prefix, nodeId, leaseMs);
  const env = await startGateway({ engine, runStore: store, drainTimeoutMs: 0, runTimeoutMs: 60_000, ...options });
  cleanups.push(() => env.stop());
  return env;
}

function message(client: TestClient, id: string, threadId: string, text: string): Promise<Frame> {
  const from = client.frames.length;
  client.send({ type: 'user_message', id, thread_id: threadId, text });
  return client.waitFor((f) => (f.type === 'ack' || f.type === 'error') && (f.id === id || f.ref === id), 10_000, `reply to ${id}`, from);
}

function record(userId: string, n: number, threadId = `t${n}`): RunRecord {
  return { runId: `run_${n}`, userId, threadId, messageId: `m${n}`, text: `/hang ${n}` };
}

describe('the Redis engine on a 3-master Redis Cluster', () => {
  it('spreads users over every master, and each user appends and reads back in order', async () => {
    const { engine } = await clusterNode('spread', 'n1');
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    await Promise.all(users.map((user) => engine.append(user, [{ type: 'agent_thinking', run_id: 'run_x', text: user } as never])));
    for (const user of users) expect((await engine.read(user, 1, 1)).map((e) => e.seq)).toEqual([1]);
    const perMaster = await Promise.all(
      cluster.ports.map(async (port) => {
        const admin = cluster.admin(port);
        try {
          return await admin.dbsize();
        } finally {
          admin.disconnect();
        }
      }),
    );
    expect(perMaster.every((keys) => keys > 0)).toBe(true);
  });

  it('a run started on one gateway node streams live to the same user on the other, and completes once', async () => {
    const [a, b] = [await gatewayOn('live', 'ga'), await gatewayOn('live', 'gb')];
    const onA = await a.ready('zoe');
    const onB = await b.ready('zoe');
    const ack = await message(onA, 'm1', 't1', 'what is 2+3?');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    const seenOnB = await onB.runEvents(ack.run_id as string, 10_000);
    expect(seenOnB.map((e) => e.type).at(-1)).toBe('agent_completed');
    expect(seenOnB.filter((e) => e.type === 'agent_completed')).toHaveLength(1);
    // The same message id through the other node is a duplicate of that run, not a new one.
    expect(await message(onB, 'm1', 't1', 'what is 2+3?')).toMatchObject({ type: 'ack', status: 'duplicate', run_id: ack.run_id });
  }, 30_000);

  it("a cancel via the other node reaches the run's owner", async () => {
    const [a, b] = [await gatewayOn('cancel', 'ca'), await gatewayOn('cancel', 'cb')];
    const owner = await a.ready('cam');
    const other = await b.ready('cam');
    const ack = await message(owner, 'm1', 't1', '/hang until cancelled');
    await owner.waitFor((f) => f.type === 'agent_started', 10_000, 'agent_started');
    other.send({ type: 'cancel', id: 'c1', run_id: ack.run_id });
    const events = await owner.runEvents(ack.run_id as string, 10_000);
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
  }, 30_000);

  it('a node that stops renewing loses its runs to another node: run_lost, then its thread moves on', async () => {
    const dead = await clusterNode('lost', 'dead', 300);
    // A sweeper judges leases after a whole lease of unbroken contact: a short one here.
    const env = await gatewayOn('lost', 'alive', { lostRunSweepMs: 50 }, 300);
    const client = await env.ready('uma');
    // The dead node takes the run and its lease and never executes or renews it.
    const lost = { runId: 'run_lost_1', userId: 'uma', threadId: 't1', messageId: 'm1', text: 'hello' };
    expect(await dead.store.enqueue(lost, 'enqueue', 32)).toBe('start');
    expect(await dead.store.enqueue({ ...lost, runId: 'run_after', messageId: 'm2', text: 'what is 1+1?' }, 'enqueue', 32)).toBe('queued');
    const lostEvents = await client.runEvents('run_lost_1', 15_000);
    expect(lostEvents.map((e) => [e.type, e.code])).toEqual([
      ['agent_started', undefined],
      ['agent_error', 'run_lost'],
    ]);
    const after = await client.runEvents('run_after', 15_000);
    expect(after.at(-1)).toMatchObject({ type: 'agent_completed' });
  }, 30_000);

  it('the run cap and message-id claims hold across nodes', async () => {
    const cap = 4;
    const [n1, n2] = [await clusterNode('cap', 'n1'), await clusterNode('cap', 'n2')];
    const outcomes: EnqueueOutcome[] = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? n1 : n2).store.enqueue(record('carl', i), 'enqueue', 32, { maxActive: cap })),
    );
    expect(outcomes.filter((o) => o === 'start' || o === 'queued')).toHaveLength(cap);
    expect(outcomes.filter((o) => o === 'too_many_runs')).toHaveLength(10 - cap);
    // One message id sent through both nodes at once: one run, the other a duplicate of it.
    const same = { runId: 'run_a', userId: 'dina', threadId: 't', messageId: 'm-same', text: 'x' };
    const both = await Promise.all([n1.store.enqueue(same, 'enqueue', 32), n2.store.enqueue({ ...same, runId: 'run_b' }, 'enqueue', 32)]);
    const duplicates = both.filter((o) => typeof o === 'object');
    expect(duplicates).toHaveLength(1);
    expect(both.filter((o) => o === 'start')).toHaveLength(1);
  });
});
