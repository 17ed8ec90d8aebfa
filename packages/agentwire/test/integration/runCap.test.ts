import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '@agentwire/protocol';
import { createRedisBackend } from '../../src/redis/index.js';
import type { Agent } from '../../src/runs/agent.js';
import { RunManager, type RunOutcome } from '../../src/runs/runManager.js';
import type { EnqueueOutcome, RunRecord } from '../../src/runs/runStore.js';
import { fcParams } from '../helpers/fastCheck.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { RedisServer } from '../helpers/redisServer.js';
import { Waiters } from '../helpers/waitFor.js';
import type { Frame, TestClient } from '../helpers/wsClient.js';

/**
 * The per-user run cap (PROTOCOL.md section 6, `AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER`): runs of a
 * user that are running or queued, over all threads and all nodes; one more message gets error
 * `too_many_runs`, starts nothing and leaves its id unclaimed.
 */

let redis: RedisServer;
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(async () => {
  await redis?.stop();
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const noop = () => {};
const accepted = (outcome: EnqueueOutcome) => outcome === 'start' || outcome === 'queued';

function isReplyTo(id: string) {
  return (f: Frame) => (f.type === 'ack' || f.type === 'error') && (f.id === id || f.ref === id);
}

/** Sends a user_message and resolves with the ack or error for it that arrives after it. */
function message(client: TestClient, id: string, threadId: string, text: string): Promise<Frame> {
  const from = client.frames.length;
  client.send({ type: 'user_message', id, thread_id: threadId, text });
  return client.waitFor(isReplyTo(id), 5000, `reply to ${id}`, from);
}

/** The pong comes after every frame the server sent before it read the ping. */
async function barrier(client: TestClient, id: string): Promise<void> {
  client.send({ type: 'ping', id });
  await client.waitFor((f) => f.type === 'pong' && f.id === id, 5000, `pong ${id}`);
}

async function gateway(options: Parameters<typeof startGateway>[0]): Promise<TestGateway> {
  const env = await startGateway({ drainTimeoutMs: 0, runTimeoutMs: 60_000, ...options });
  cleanups.push(() => env.stop());
  return env;
}

async function redisNode(prefix: string, nodeId: string, leaseMs = 60_000) {
  const backend = createRedisBackend({ url: redis.url, keyPrefix: prefix, nodeId, leaseMs, onError: noop });
  await backend.engine.ready();
  cleanups.push(() => backend.close());
  return { engine: backend.engine, store: backend.runStore, keys: backend.connection.keys, redis: backend.connection.client };
}

function record(userId: string, n: number, threadId = `t${n}`): RunRecord {
  return { runId: `run_${n}`, userId, threadId, messageId: `m${n}`, text: `/hang ${n}` };
}

describe('the cap over real sockets', () => {
  it('one more run than the cap gets too_many_runs: nothing starts, the id stays free, other users are unaffected', async () => {
    const env = await gateway({ maxActiveRunsPerUser: 3 });
    const alice = await env.ready('alice');
    const second = await env.ready('alice');
    // Running and queued runs both count: two running, one queued behind the first.
    const started = [await message(alice, 'm1', 't1', '/hang'), await message(second, 'm2', 't2', '/hang')];
    expect(started.map((f) => f.status)).toEqual(['started', 'started']);
    expect(await message(alice, 'm3', 't1', '/hang')).toMatchObject({ type: 'ack', status: 'queued' });
    // A new thread, and another connection of the same user: both over the cap.
    expect(await message(alice, 'm4', 't4', 'hello')).toEqual({
      type: 'error',
      code: 'too_many_runs',
      message: 'at most 3 runs may be running or queued at once',
      ref: 'm4',
    });
    expect(await message(second, 'm5', 't5', 'hello')).toMatchObject({ type: 'error', code: 'too_many_runs', ref: 'm5' });
    await barrier(alice, 'after-refusals');
    expect(
      alice
        .events()
        .filter((e) => e.type === 'agent_started')
        .map((e) => e.message_id),
    ).toEqual(['m1', 'm2']);

    // Another user has a cap of its own.
    const bob = await env.ready('bob');
    for (const n of [1, 2, 3]) expect(await message(bob, `b${n}`, `t${n}`, '/hang')).toMatchObject({ type: 'ack', status: 'started' });

    // Once a run ended, the refused id is new: it starts a run (it is no duplicate).
    alice.send({ type: 'cancel', id: 'c2', run_id: started[1]!.run_id });
    await alice.runEvents(started[1]!.run_id as string);
    const retried = await message(alice, 'm4', 't4', 'hello');
    expect(retried).toMatchObject({ type: 'ack', status: 'started', thread_id: 't4' });
    await alice.runEvents(retried.run_id as string);
  });

  it('two gateways on one Redis share the cap: a user firing at both gets exactly the cap accepted', async () => {
    const cap = 4;
    const nodes = [];
    for (const nodeId of ['g1', 'g2']) {
      const { engine, store } = await redisNode('capgw', nodeId);
      nodes.push(await gateway({ engine, runStore: store, maxActiveRunsPerUser: cap, rateLimitBurst: 100 }));
    }
    const clients = await Promise.all(nodes.map((env) => env.ready('carol')));
    const replies = await Promise.all(Array.from({ length: 12 }, (_, n) => message(clients[n % 2]!, `m${n}`, `t${n}`, '/hang')));
    expect(replies.filter((f) => f.type === 'ack')).toHaveLength(cap);
    expect(replies.filter((f) => f.type === 'error').map((f) => f.code)).toEqual(Array(12 - cap).fill('too_many_runs'));
    // Both nodes took some: the count is shared, not per node.
    expect(new Set(replies.filter((f) => f.type === 'ack').map((f) => Number(String(f.id).slice(1)) % 2)).size).toBe(2);
  });
});

describe('the cap in the Redis run store', () => {
  it('two nodes racing never accept more than the cap, over threads and nodes, and free it as runs end', async () => {
    // One user per round on the same two nodes: each round starts from an empty cap.
    const nodes = [await redisNode('cap-race', 'n1'), await redisNode('cap-race', 'n2')];
    const { keys: keyspace, redis: client, store } = nodes[0]!;
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        // Per attempt: which node, and which of a few threads (so some runs queue behind others).
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 20 }),
        async (cap, attempts) => {
          const user = `dora-${++round}`;
          const keys = keyspace.user(user);
          const records = attempts.map(([, thread], n) => record(user, n, `t${thread}`));
          const outcomes = await Promise.all(
            attempts.map(([second], n) => nodes[second ? 1 : 0]!.store.enqueue(records[n]!, 'enqueue', 32, { maxActive: cap })),
          );
          const admitted = outcomes.filter(accepted).length;
          expect(admitted).toBe(Math.min(cap, attempts.length));
          expect(outcomes.filter((o) => !accepted(o))).toEqual(Array(attempts.length - admitted).fill('too_many_runs'));
          expect(await client.zcard(keys.activeRuns)).toBe(admitted);
          // Refused runs left nothing behind: no claim, no record.
          for (const [n, outcome] of outcomes.entries()) {
            if (!accepted(outcome)) expect(await client.exists(keys.claim(`m${n}`), keys.run(`run_${n}`))).toBe(0);
          }
          // Ending every running run (and those its thread hands out next) frees the whole cap.
          let running = records.filter((_, n) => outcomes[n] === 'start');
          while (running.length > 0) {
            const next = await Promise.all(running.map((run) => store.advance(run)));
            running = next.flatMap((assignment) => (assignment ? [assignment.record] : []));
          }
          expect(await client.zcard(keys.activeRuns)).toBe(0);
          expect(await store.enqueue(record(user, 99), 'enqueue', 32, { maxActive: cap })).toBe('start');
        },
      ),
      fcParams(15, 20_000),
    );
  });

  it('a refused message claims nothing: the same message is accepted once a run ended', async () => {
    const { keys: keyspace, redis: client, store } = await redisNode('cap-claim', 'n1');
    for (const n of [1, 2]) expect(await store.enqueue(record('erin', n), 'enqueue', 32, { maxActive: 2 })).toBe('start');
    const refused = record('erin', 3);
    expect(await store.enqueue(refused, 'enqueue', 32, { maxActive: 2 })).toBe('too_many_runs');
    const keys = keyspace.user('erin');
    expect(await client.exists(keys.claim('m3'), keys.run('run_3'), keys.thread('t3'))).toBe(0);
    expect(await store.advance(record('erin', 1))).toBeNull();
    expect(await store.enqueue(refused, 'enqueue', 32, { maxActive: 2 })).toBe('start');
    // And now it is claimed: the same id again is a duplicate of that run.
    expect(await store.enqueue({ ...refused, runId: 'run_3b' }, 'enqueue', 32, { maxActive: 2 })).toEqual({
      duplicate: { runId: 'run_3', threadId: 't3' },
    });
  });

  it('runs that ended without advancing, or whose record is gone, stop counting', async () => {
    const { engine, keys: keyspace, redis: client, store } = await redisNode('cap-stale', 'n1');
    for (const n of [1, 2]) await store.enqueue(record('fay', n), 'enqueue', 32, { maxActive: 2 });
    expect(await store.enqueue(record('fay', 3), 'enqueue', 32, { maxActive: 2 })).toBe('too_many_runs');
    // Run 1's terminal event is in the log (its node died before advancing the thread).
    const stamp = { run_id: 'run_1', thread_id: 't1', ts: new Date(0).toISOString() };
    await engine.append('fay', [{ type: 'agent_started', message_id: 'm1', text: 'x', ...stamp }], { runId: 'run_1', terminal: false });
    await engine.append('fay', [{ type: 'agent_completed', status: 'completed', text: 'ok', ...stamp }], { runId: 'run_1', terminal: true });
    expect(await store.enqueue(record('fay', 3), 'enqueue', 32, { maxActive: 2 })).toBe('start');
    // Run 2's record was evicted.
    await client.del(keyspace.user('fay').run('run_2'));
    expect(await store.enqueue(record('fay', 4), 'enqueue', 32, { maxActive: 2 })).toBe('start');
    expect(await store.enqueue(record('fay', 5), 'enqueue', 32, { maxActive: 2 })).toBe('too_many_runs');
  });

  it("a dead node's runs hold the cap only until another node ends them as lost", async () => {
    const dead = await redisNode('cap-dead', 'dead', 200);
    const alive = await redisNode('cap-dead', 'alive', 200);
    for (const n of [1, 2]) expect(await dead.store.enqueue(record('gus', n), 'enqueue', 32, { maxActive: 2 })).toBe('start');
    expect(await alive.store.enqueue(record('gus', 3), 'enqueue', 32, { maxActive: 2 })).toBe('too_many_runs');
    // The dead node never renews; the alive one's sweeper ends both runs with run_lost.
    const outcomes: RunOutcome[] = [];
    const waiters = new Waiters(() => `outcomes: ${outcomes.join(',')}`);
    const idle: Agent = { async *run() {} };
    const runs = new RunManager({
      engine: alive.engine,
      agent: idle,
      clock: systemClock,
      threadPolicy: 'enqueue',
      runTimeoutMs: 10_000,
      store: alive.store,
      lostRunSweepMs: 50,
      onRunEnded: (outcome) => {
        outcomes.push(outcome);
        waiters.notify();
      },
    });
    cleanups.push(() => runs.close());
    await waiters.until(() => outcomes.length === 2, 10_000, 'both lost runs to end');
    expect(outcomes).toEqual(['run_lost', 'run_lost']);
    expect(await alive.store.enqueue(record('gus', 3), 'enqueue', 32, { maxActive: 2 })).toBe('start');
  });
});
