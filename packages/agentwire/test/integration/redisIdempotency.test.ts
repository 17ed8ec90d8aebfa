/**
 * Redis commands that reach Redis twice: ioredis re-sends a command whose reply was lost with
 * its connection (autoResendUnfulfilledCommands), after Redis already applied it. The ENQUEUE
 * script (which also claims the message id) and the ADVANCE script must give the replay the
 * outcome of the first application (one run per id, exactly one terminal event, the next run
 * executes). Also: a
 * cross-node cancel whose pub/sub message is lost still reaches the owner through its lease
 * renewal, presence renewal re-adds lost entries, and a failed setup releases its presence entry.
 *
 * Each test runs its own redis-server; replies are lost by a TCP proxy that cuts the link right
 * after Redis answered the armed request. Waits are event-driven with deadlines.
 */
import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock, type Clock } from '@agentwire/protocol';
import { UserCoordinator } from '../../src/coordination/userCoordinator.js';
import type { EventEngine } from '../../src/engine/types.js';
import { RedisConnection, RedisEngine, RedisPresence, RedisRunStore } from '../../src/redis/index.js';
import type { RedisKeys } from '../../src/redis/keys.js';
import type { Agent } from '../../src/runs/agent.js';
import { RunManager, type RunOutcome, type SubmitReply } from '../../src/runs/runManager.js';
import type { RunRecord } from '../../src/runs/runStore.js';
import { RedisProxy } from '../helpers/redisProxy.js';
import { ManualClock } from '../helpers/manualClock.js';
import { RedisServer, waitForSubscribers } from '../helpers/redisServer.js';
import { TcpProxy, pubSubLink } from '../helpers/tcpProxy.js';
import { Waiters } from '../helpers/waitFor.js';

const noop = () => {};
const USER = 'ida';

let redis: RedisServer | null = null;
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await redis?.stop();
  redis = null;
});

async function useRedis(): Promise<RedisServer> {
  redis = await RedisServer.start();
  return redis;
}

function admin(): Redis {
  const client = redis!.client();
  client.on('error', noop);
  cleanups.push(() => client.disconnect());
  return client;
}

async function connectionTo(url: string): Promise<RedisConnection> {
  const connection = new RedisConnection({ url, keyPrefix: 'idem', onError: noop });
  cleanups.push(() => connection.close());
  await connection.ready();
  return connection;
}

/** An engine on a connection of its own, and that connection. */
async function engineAt(url: string): Promise<{ engine: RedisEngine; connection: RedisConnection; keys: RedisKeys }> {
  const connection = await connectionTo(url);
  return { engine: new RedisEngine(connection), connection, keys: connection.keys };
}

/** Runs proceed at once, except those whose text starts with `hold`: they wait for abort. */
class TestAgent implements Agent {
  readonly started: string[] = [];
  readonly waiters = new Waiters(() => `started=${this.started.join(',')}`);

  async *run(input: Parameters<Agent['run']>[0]) {
    this.started.push(input.runId);
    this.waiters.notify();
    yield { type: 'thinking' as const, text: input.text };
    if (input.text.startsWith('hold')) {
      await new Promise<void>((resolve) => input.signal.addEventListener('abort', () => resolve(), { once: true }));
    }
    yield { type: 'answer' as const, text: `done ${input.text}` };
  }
}

interface Node {
  readonly engine: RedisEngine;
  readonly connection: RedisConnection;
  readonly keys: RedisKeys;
  readonly store: RedisRunStore;
  readonly runs: RunManager;
  readonly agent: TestAgent;
  readonly ended: RunOutcome[];
  readonly waiters: Waiters;
  submit(id: string, thread: string, text: string): Promise<SubmitReply>;
  waitEnded(count: number, timeoutMs?: number): Promise<void>;
}

async function startNode(nodeId: string, options: { url?: string; clock?: Clock; leaseMs?: number; threadPolicy?: 'enqueue' | 'reject' } = {}): Promise<Node> {
  const { engine, connection, keys } = await engineAt(options.url ?? redis!.url);
  const store = new RedisRunStore(connection, { nodeId, leaseMs: options.leaseMs ?? 60_000, onError: noop });
  const agent = new TestAgent();
  const ended: RunOutcome[] = [];
  const waiters = new Waiters(() => `ended=${ended.join(',')} started=${agent.started.length}`);
  const runs = new RunManager({
    engine,
    agent,
    clock: options.clock ?? systemClock,
    threadPolicy: options.threadPolicy ?? 'enqueue',
    runTimeoutMs: 60_000,
    store,
    lostRunSweepMs: 600_000,
    onRunEnded: (outcome) => {
      ended.push(outcome);
      waiters.notify();
    },
  });
  cleanups.push(async () => {
    const draining = runs.drain(0);
    // On a manual clock the drain's timer (due now) fires only when the clock moves.
    if (options.clock instanceof ManualClock) await options.clock.advance(0);
    await draining;
    await runs.close();
  });
  return {
    engine,
    connection,
    keys,
    store,
    runs,
    agent,
    ended,
    waiters,
    submit: (id, thread, text) =>
      new Promise<SubmitReply>((resolve, reject) => {
        runs.submit(USER, { id, threadId: thread, text }, resolve).catch(reject);
      }),
    waitEnded: (count, timeoutMs = 10_000) => waiters.until(() => ended.length >= count, timeoutMs, `${count} runs ended`).then(noop),
  };
}

/**
 * A node whose engine talks to Redis through a proxy, after one completed run (`m1` on `t1`):
 * the scripts are loaded, so a request armed next on the proxy is the script call itself.
 */
async function nodeBehindProxy(): Promise<{ proxy: RedisProxy; node: Node; first: string }> {
  await useRedis();
  const proxy = await startProxy();
  const node = await startNode('n1', { url: proxy.url });
  const first = ackOf(await node.submit('m1', 't1', 'one'));
  await node.waitEnded(1);
  return { proxy, node, first };
}

async function startProxy(): Promise<RedisProxy> {
  const proxy = await RedisProxy.start(redis!.port);
  cleanups.push(() => proxy.close());
  return proxy;
}

type Frame = Record<string, unknown>;

async function logOf(engine: RedisEngine): Promise<Frame[]> {
  const head = await engine.head(USER);
  return (await engine.read(USER, 1, head.lastSeq)).map((entry) => JSON.parse(entry.json) as Frame);
}

/** Every run in the log has exactly agent_started, agent_thinking, one agent_completed (last). */
function expectCompletedRuns(log: Frame[], runIds: readonly string[]): void {
  expect([...new Set(log.map((e) => e.run_id))].sort()).toEqual([...runIds].sort());
  for (const runId of runIds) {
    const events = log.filter((e) => e.run_id === runId);
    expect(
      events.map((e) => e.type),
      `events of ${runId}`,
    ).toEqual(['agent_started', 'agent_thinking', 'agent_completed']);
    expect(events[2]).toMatchObject({ status: 'completed' });
  }
}

function ackOf(reply: SubmitReply): string {
  if (reply.kind !== 'ack') throw new Error(`not an ack: ${JSON.stringify(reply)}`);
  return reply.runId;
}

describe('a command re-sent after its reply was lost', () => {
  it('ENQUEUE: the replay neither queues the run twice nor demotes it, so the acked run executes once', async () => {
    const { proxy, node, first } = await nodeBehindProxy();
    proxy.loseReplyTo(/run-owner:/, /\$5\r\nstart\r\n/);
    const reply = await node.submit('m2', 't1', 'two');
    expect(proxy.cuts).toBe(1);
    expect(reply).toMatchObject({ kind: 'ack', status: 'started', threadId: 't1' });
    await node.waitEnded(2);
    expect(node.ended).toEqual(['completed', 'completed']);
    expectCompletedRuns(await logOf(node.engine), [first, ackOf(reply)]);
    // onRunEnded comes after the thread advanced: nothing is left queued on it.
    expect(await admin().lrange(node.keys.user(USER).thread('t1'), 0, -1)).toEqual([]);
    // The message id is claimed in the same script: the replay found its own claim, not a duplicate.
    expect(JSON.parse((await admin().get(node.keys.user(USER).claim('m2')))!)).toEqual({ runId: ackOf(reply), threadId: 't1' });
    expect(await node.submit('m2', 't1', 'two')).toEqual({ kind: 'ack', status: 'duplicate', runId: ackOf(reply), threadId: 't1' });
  });

  it('ENQUEUE whose reply is lost while Redis stays unreachable: the request fails, and once Redis is back the node starts the run it owns', async () => {
    const { proxy, node, first } = await nodeBehindProxy();
    proxy.loseReplyTo(/run-owner:/, /\$5\r\nstart\r\n/);
    // Open connections stay; the reconnect after the cut is refused, so ioredis gives up.
    await proxy.refuse();
    await expect(node.submit('m2', 't1', 'two')).rejects.toThrow();
    expect(proxy.cuts).toBe(1);
    expect(node.agent.started).toEqual([first]);
    await proxy.acceptAgain();
    await node.waitEnded(2);
    expect(node.ended).toEqual(['completed', 'completed']);
    const second = node.agent.started[1]!;
    expectCompletedRuns(await logOf(node.engine), [first, second]);
    // The client, told its request failed, resends the id: a duplicate of the run that executed.
    expect(await node.submit('m2', 't1', 'two')).toEqual({ kind: 'ack', status: 'duplicate', runId: second, threadId: 't1' });
  });

  it('an enqueue applied only part-way (it failed before writing its claim) is settled as absent: it never starts', async () => {
    await useRedis();
    const node = await startNode('n1');
    // The run record is written, then the lease index (wrong type) fails the script: no rollback.
    await admin().set(node.keys.user(USER).leases, 'not a sorted set');
    await expect(node.submit('m1', 't1', 'one')).rejects.toThrow(/WRONGTYPE/);
    const runId = (await admin().lindex(node.keys.user(USER).thread('t1'), 0))!;
    expect(await admin().hget(node.keys.user(USER).run(runId), 'state')).toBe('running');
    const record: RunRecord = { runId, userId: USER, threadId: 't1', messageId: 'm1', text: 'one' };
    expect(await node.store.enqueue(record, 'enqueue', 32, { replayOnly: true })).toBe('absent');
    expect(node.agent.started).toEqual([]);
  });

  it('an enqueue in doubt that was never applied creates nothing when settled', async () => {
    await useRedis();
    const node = await startNode('n1');
    const record: RunRecord = { runId: 'run_never', userId: USER, threadId: 't1', messageId: 'm-never', text: 'x' };
    expect(await node.store.enqueue(record, 'enqueue', 32, { replayOnly: true })).toBe('absent');
    expect(await admin().exists(node.keys.user(USER).claim('m-never'), node.keys.user(USER).run('run_never'))).toBe(0);
    expect(await admin().llen(node.keys.user(USER).thread('t1'))).toBe(0);
  });

  it('ENQUEUE answering duplicate: the replay answers the same duplicate and starts nothing', async () => {
    const { proxy, node, first } = await nodeBehindProxy();
    proxy.loseReplyTo(/run-owner:/, /\*2\r\n\$9\r\nduplicate\r\n/);
    expect(await node.submit('m1', 't2', 'again')).toEqual({ kind: 'ack', status: 'duplicate', runId: first, threadId: 't1' });
    expect(proxy.cuts).toBe(1);
    expect(node.agent.started).toEqual([first]);
    expectCompletedRuns(await logOf(node.engine), [first]);
  });

  it('ADVANCE: the replay hands out the same next run, which executes', async () => {
    const { proxy, node, first } = await nodeBehindProxy();
    const held = await node.submit('m2', 't1', 'hold two');
    expect(held).toMatchObject({ status: 'started' });
    await node.agent.waiters.until(() => node.agent.started.length === 2, 5000, 'the second run to start');
    const queued = await node.submit('m3', 't1', 'three');
    expect(queued).toMatchObject({ status: 'queued' });
    // ADVANCE: three keys, the second the lease set; its first answer is the next run (5 fields).
    proxy.loseReplyTo(/\$1\r\n3\r\n[^]*run-leases/, /\*5\r\n/);
    // Cancel ends the held run (locally), and the thread advances to the queued one.
    await new Promise<void>((resolve) => void node.runs.cancel(USER, ackOf(held), () => resolve()));
    await node.waitEnded(3);
    expect(proxy.cuts).toBe(1);
    expect(node.ended).toEqual(['completed', 'cancelled', 'completed']);
    expect(node.agent.started).toEqual([first, ackOf(held), ackOf(queued)]);
    const log = await logOf(node.engine);
    expectCompletedRuns(
      log.filter((e) => e.run_id !== ackOf(held)),
      [first, ackOf(queued)],
    );
    expect(log.filter((e) => e.run_id === ackOf(held)).map((e) => [e.type, e.status])).toEqual([
      ['agent_started', undefined],
      ['agent_thinking', undefined],
      ['agent_completed', 'cancelled'],
    ]);
    expect(await admin().lrange(node.keys.user(USER).thread('t1'), 0, -1)).toEqual([]);
  });

  it('ENQUEUE and ADVANCE applied twice directly: no second queue entry, no restart of a handed-out or ended run', async () => {
    await useRedis();
    const { engine, connection, keys } = await engineAt(redis!.url);
    const store = new RedisRunStore(connection, { nodeId: 'n1', leaseMs: 60_000, onError: noop });
    cleanups.push(() => store.close());
    const record = (runId: string): RunRecord => ({ runId, userId: USER, threadId: 't1', messageId: `m-${runId}`, text: runId });
    const a = record('run_a');
    const b = record('run_b');
    const queue = keys.user(USER).thread('t1');
    const client = admin();
    expect(await store.enqueue(a, 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(a, 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(b, 'enqueue', 32)).toBe('queued');
    expect(await store.enqueue(b, 'enqueue', 32)).toBe('queued');
    expect(await client.lrange(queue, 0, -1)).toEqual(['run_a', 'run_b']);
    expect(await client.hget(keys.user(USER).run('run_a'), 'state')).toBe('running');

    await engine.append(USER, [terminal('run_a')], { runId: 'run_a', terminal: true });
    const next = await store.advance(a);
    expect(next).toEqual({ record: b, cancelRequested: false });
    // Replayed: the same assignment; replayed from another node: nothing.
    expect(await store.advance(a)).toEqual(next);
    const other = new RedisRunStore(connection, { nodeId: 'n2', leaseMs: 60_000, onError: noop });
    cleanups.push(() => other.close());
    expect(await other.advance(a)).toBeNull();
    // A late replay of b's ENQUEUE: b was handed out by ADVANCE, whose node starts it.
    expect(await store.enqueue(b, 'enqueue', 32)).toBe('queued');
    // A late replay of a's ENQUEUE: a ended.
    expect(await store.enqueue(a, 'enqueue', 32)).toBe('queued');
    expect(await client.lrange(queue, 0, -1)).toEqual(['run_b']);
  });

  it('ADVANCE skips an ended record in the queue and never sets it running again', async () => {
    await useRedis();
    const { engine, connection, keys } = await engineAt(redis!.url);
    const store = new RedisRunStore(connection, { nodeId: 'n1', leaseMs: 60_000, onError: noop });
    cleanups.push(() => store.close());
    const a: RunRecord = { runId: 'run_a', userId: USER, threadId: 't1', messageId: 'ma', text: 'a' };
    const b: RunRecord = { runId: 'run_b', userId: USER, threadId: 't1', messageId: 'mb', text: 'b' };
    const c: RunRecord = { runId: 'run_c', userId: USER, threadId: 't1', messageId: 'mc', text: 'c' };
    expect(await store.enqueue(a, 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(b, 'enqueue', 32)).toBe('queued');
    expect(await store.enqueue(c, 'enqueue', 32)).toBe('queued');
    // b already ended (as a queued run swept as run_lost does) while still in the queue.
    await engine.append(USER, [terminal('run_b')], { runId: 'run_b', terminal: true });
    await engine.append(USER, [terminal('run_a')], { runId: 'run_a', terminal: true });
    expect(await store.advance(a)).toEqual({ record: c, cancelRequested: false });
    const client = admin();
    expect(await client.hget(keys.user(USER).run('run_b'), 'state')).toBe('ended');
    expect(await client.lrange(keys.user(USER).thread('t1'), 0, -1)).toEqual(['run_c']);
  });
});

function terminal(runId: string) {
  return {
    type: 'agent_completed' as const,
    status: 'completed' as const,
    text: '',
    run_id: runId,
    thread_id: 't1',
    ts: new Date(0).toISOString(),
  };
}

describe('message ids under the reject policy', () => {
  it('the same id sent to two nodes while the thread is busy: both answers are thread_busy, never a duplicate of a run that does not exist', async () => {
    await useRedis();
    const n1 = await startNode('n1', { threadPolicy: 'reject' });
    const n2 = await startNode('n2', { threadPolicy: 'reject' });
    const held = ackOf(await n1.submit('m1', 't1', 'hold'));
    await n1.agent.waiters.until(() => n1.agent.started.length === 1, 5000, 'the held run to start');
    for (let round = 0; round < 20; round++) {
      const replies = await Promise.all([n1.submit(`m-busy-${round}`, 't1', 'x'), n2.submit(`m-busy-${round}`, 't1', 'x')]);
      expect(
        replies.map((r) => (r.kind === 'error' ? r.code : r.status)),
        `round ${round}`,
      ).toEqual(['thread_busy', 'thread_busy']);
    }
    expect(await admin().keys(n1.keys.user(USER).claim('m-busy-*'))).toEqual([]);
    // Once the thread is free the id is new: it starts a run.
    await n1.runs.cancel(USER, held, noop);
    await n1.waitEnded(1);
    expect(await n2.submit('m-busy-0', 't1', 'x')).toMatchObject({ kind: 'ack', status: 'started' });
  });

  it('an ENQUEUE that fails part-way leaves no claim: the same id later starts its run', async () => {
    await useRedis();
    const node = await startNode('n1');
    const queueKey = node.keys.user(USER).thread('t1');
    // A key of the wrong type makes the script fail after its first reads (Redis does not roll back).
    await admin().set(queueKey, 'not a list');
    await expect(node.submit('m1', 't1', 'one')).rejects.toThrow(/WRONGTYPE/);
    expect(await admin().exists(node.keys.user(USER).claim('m1'))).toBe(0);
    await admin().del(queueKey);
    expect(await node.submit('m1', 't1', 'one')).toMatchObject({ kind: 'ack', status: 'started' });
  });
});

describe('cross-node cancel', () => {
  it('reaches the owner through its lease renewal when the pub/sub request is lost', async () => {
    await useRedis();
    const leaseMs = 3000;
    // The owner's connection goes through this proxy; stalling its pub/sub link alone loses the request.
    const ownerProxy = await TcpProxy.start(redis!.port);
    cleanups.push(() => ownerProxy.close());
    const clock = new ManualClock();
    const owner = await startNode('owner', { url: `redis://127.0.0.1:${ownerProxy.port}`, clock, leaseMs });
    const other = await startNode('other', { clock: new ManualClock(), leaseMs });
    // Before the nodes close (cleanups run in reverse): the subscriber's QUIT must get through.
    cleanups.push(() => ownerProxy.unstall());
    await waitForSubscribers(admin(), 'idem:node:owner:cancel', 1, { sharded: true });
    const subscriber = await pubSubLink(ownerProxy, admin());
    const ack = await owner.submit('m1', 't1', 'hold');
    const runId = ackOf(ack);
    await owner.agent.waiters.until(() => owner.agent.started.length === 1, 5000, 'the run to start');
    subscriber.stalledToServer = true;
    subscriber.stalledToClient = true;
    const cancel = await new Promise((resolve) => void other.runs.cancel(USER, runId, resolve));
    expect(cancel).toEqual({ kind: 'ack', status: 'cancelling', runId, threadId: 't1' });
    // The request reached the owner's subscriber connection, where the proxy holds it.
    await ownerProxy.waitFor(() => subscriber.heldBytesToClient > 0, 5000, 'the cancel request to be held');
    expect(owner.ended).toEqual([]);
    await clock.advance(Math.floor(leaseMs / 3));
    await owner.waitEnded(1, 5000);
    expect(owner.ended).toEqual(['cancelled']);
    // The request is still held: the run ended through the renewal, not the pub/sub message.
    expect(subscriber.stalledToClient).toBe(true);
    expect(subscriber.closed).toBe(false);
    const log = await logOf(owner.engine);
    expect(log.map((e) => [e.run_id, e.type, e.status])).toEqual([
      [runId, 'agent_started', undefined],
      [runId, 'agent_thinking', undefined],
      [runId, 'agent_completed', 'cancelled'],
    ]);
  });
});

describe('presence', () => {
  it('renew re-adds an entry lost to a flush, so the cluster cap holds again', async () => {
    await useRedis();
    const { connection, keys } = await engineAt(redis!.url);
    const presence = new RedisPresence(connection, { ttlMs: 30_000 });
    const ref = { userId: USER, connectionId: 'c1' };
    expect(await presence.acquire(ref, 1)).toBe(true);
    await admin().flushall();
    await presence.renew([ref]);
    expect(await admin().zscore(keys.user(USER).connections, 'c1')).not.toBeNull();
    expect(await presence.acquire({ userId: USER, connectionId: 'c2' }, 1)).toBe(false);
  });

  it('a setup that fails after acquiring presence releases its entry', async () => {
    await useRedis();
    const { engine, connection, keys } = await engineAt(redis!.url);
    const presence = new RedisPresence(connection, { ttlMs: 30_000 });
    const failing = new Error('head failed');
    const broken = new Proxy(engine, {
      get(target, property, receiver) {
        if (property === 'head') return () => Promise.reject(failing);
        const value = Reflect.get(target, property, receiver) as unknown;
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    }) as unknown as EventEngine;
    const coordinator = new UserCoordinator(USER, broken, { maxConnections: 2, presence }, noop);
    const member = { connectionId: 'c1', isOpen: () => true, deliver: noop, resync: noop };
    const generation = coordinator.admit(member);
    await expect(coordinator.setup(member, generation, {})).rejects.toBe(failing);
    expect(await admin().zcard(keys.user(USER).connections)).toBe(0);
  });
});

describe('message-id claims (owned by the run store)', () => {
  it('one message id makes one run across nodes, and a refused run leaves its id free', async () => {
    await useRedis();
    const [a, b] = [await connectionTo(redis!.url), await connectionTo(redis!.url)];
    const storeA = new RedisRunStore(a, { nodeId: 'a', onError: noop });
    const storeB = new RedisRunStore(b, { nodeId: 'b', onError: noop });
    cleanups.push(
      () => storeA.close(),
      () => storeB.close(),
    );
    const record = (runId: string, messageId: string, threadId = 't'): RunRecord => ({ runId, userId: 'dave', threadId, messageId, text: 'x' });
    const outcomes = await Promise.all([storeA.enqueue(record('run_a', 'm1'), 'enqueue', 32), storeB.enqueue(record('run_b', 'm1'), 'enqueue', 32)]);
    expect(outcomes.filter((o) => o === 'start')).toHaveLength(1);
    const winner = outcomes[0] === 'start' ? 'run_a' : 'run_b';
    expect(outcomes.find((o) => typeof o === 'object')).toEqual({ duplicate: { runId: winner, threadId: 't' } });
    // Refused (the thread is busy under `reject`): no claim, so the id makes a run later.
    expect(await storeA.enqueue(record('run_c', 'm2'), 'reject', 32)).toBe('busy');
    expect(await storeB.enqueue(record('run_d', 'm2', 'free'), 'reject', 32)).toBe('start');
    expect(await storeA.enqueue(record('run_e', 'm2', 'free'), 'enqueue', 32)).toEqual({ duplicate: { runId: 'run_d', threadId: 'free' } });
  });
});
