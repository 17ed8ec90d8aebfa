/**
 * Redis failure and recovery: what a gateway over the Redis engine does when redis-server
 * restarts in mid-stream, while it is down (also for longer than a run lease), when pub/sub
 * notifications are lost, when a reply is lost with its connection, when the two connections of
 * the engine come back in either order or drop again while resubscribing, and when the data is
 * flushed; plus a fast-check interleaving of setups with resume positions racing appends from two
 * nodes over a real Redis.
 *
 * Every test runs its own redis-server (AOF on, so a SIGTERM restart keeps the log), never the
 * machine's shared one. Waits are driven by events (socket frames, engine hooks) or by polling an
 * HTTP probe the way a load balancer does, and every wait has a deadline.
 */
import { once } from 'node:events';
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { UserCoordinator, type CoordinatorMember, type ResumePosition, type SetupResult } from '../../src/coordination/userCoordinator.js';
import { RedisConnection, RedisPresence, RedisRunStore, type RedisConnectionOptions, type RedisEngineOptions } from '../../src/redis/index.js';
import type { GapListener, LiveListener, LogHead, Subscription } from '../../src/engine/types.js';
import type { EventBody, LogEntry } from '@agentwire/protocol';
import { leaseMember } from '../../src/redis/keys.js';
import type { RunRecord } from '../../src/runs/runStore.js';
import { TestCluster } from '../helpers/cluster.js';
import { startGateway, stopAdvancing, type TestGateway } from '../helpers/gateway.js';
import { httpGet, tryUpgrade, waitStatus } from '../helpers/http.js';
import { RedisProxy } from '../helpers/redisProxy.js';
import { TestRedisEngine } from '../helpers/redisBackend.js';
import { RedisServer, waitForSubscribers } from '../helpers/redisServer.js';
import { InstrumentedEngine, deferred } from '../helpers/instrumentedEngine.js';
import { ManualClock } from '../helpers/manualClock.js';
import { ScheduledEngine } from '../helpers/scheduledEngine.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { Waiters } from '../helpers/waitFor.js';
import { seqProblem, type Frame, type TestClient } from '../helpers/wsClient.js';

const isEvent = (frame: Frame) => typeof frame.seq === 'number';
const noop = () => {};

/** The Redis engine with hooks a test can wait on: failed appends, gap signals, reads, heads. */
class ObservedEngine extends TestRedisEngine {
  static override on(options: RedisConnectionOptions & RedisEngineOptions): ObservedEngine {
    return new ObservedEngine(new RedisConnection(options), options);
  }

  readonly connectionErrors: string[] = [];
  appendFailures = 0;
  gapSignals = 0;
  headsDone = 0;
  readonly reads: Array<[number, number]> = [];
  readonly #waiters = new Waiters();

  override async append(...args: Parameters<TestRedisEngine['append']>): Promise<LogEntry[]> {
    try {
      return await super.append(...args);
    } catch (error) {
      this.appendFailures++;
      this.#waiters.notify();
      throw error;
    }
  }

  override subscribe(userId: string, listener: LiveListener, onPossibleGap?: GapListener): Promise<Subscription> {
    const onGap =
      onPossibleGap &&
      (() => {
        this.gapSignals++;
        onPossibleGap();
        this.#waiters.notify();
      });
    return super.subscribe(userId, listener, onGap);
  }

  override read(userId: string, fromSeq: number, toSeq: number): Promise<LogEntry[]> {
    this.reads.push([fromSeq, toSeq]);
    return super.read(userId, fromSeq, toSeq);
  }

  override async head(userId: string): Promise<LogHead> {
    const head = await super.head(userId);
    this.headsDone++;
    this.#waiters.notify();
    return head;
  }

  async until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    await this.#waiters.until(check, timeoutMs, what);
  }

  /** Passed as the engine's `onError`. */
  recordError(error: unknown): void {
    this.connectionErrors.push(String((error as { code?: string }).code ?? error));
    this.#waiters.notify();
  }
}

/** The Redis run store with counters a test can wait on: finished sweeps and lease renewals. */
class ObservedRunStore extends RedisRunStore {
  sweeps = 0;
  renewals = 0;
  readonly #waiters = new Waiters();

  override async claimLostRuns(...args: Parameters<RedisRunStore['claimLostRuns']>): ReturnType<RedisRunStore['claimLostRuns']> {
    try {
      return await super.claimLostRuns(...args);
    } finally {
      this.sweeps++;
      this.#waiters.notify();
    }
  }

  override async renewLeases(runs: readonly RunRecord[]): Promise<void> {
    try {
      await super.renewLeases(runs);
    } finally {
      if (runs.length > 0) this.renewals++;
      this.#waiters.notify();
    }
  }

  async until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    await this.#waiters.until(check, timeoutMs, what);
  }
}

interface Node {
  readonly env: TestGateway;
  readonly engine: ObservedEngine;
  readonly httpUrl: string;
  /** A node on a manual clock: its drain timer only fires when the clock is advanced. */
  readonly clock?: ManualClock;
}

/** Stops a node; on a manual clock, advances it (bounded) so that its drain can end. */
async function stopNode(node: Node): Promise<void> {
  await stopAdvancing(node.env, node.clock, 200, 50);
  await node.engine.close();
}

let redis: RedisServer | null = null;
let redisDown = false;
const nodes: Node[] = [];
const engines: TestRedisEngine[] = [];
const admins: Redis[] = [];
const clusters: TestCluster[] = [];
const proxies: RedisProxy[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);

afterEach(async () => {
  try {
    // Shutdown drains runs against the engine, so redis must be up for it.
    if (redis && redisDown) await startRedis();
    for (const node of nodes.splice(0)) await stopNode(node);
    for (const engine of engines.splice(0)) await engine.close();
    // After the nodes: a node's last commands may still be on their way through a proxy.
    for (const proxy of proxies.splice(0)) await proxy.close();
    for (const admin of admins.splice(0)) admin.disconnect();
    for (const cluster of clusters.splice(0)) await cluster.stop();
    await redis?.stop();
    redis = null;
    expect(
      unhandled.map((r) => (r instanceof Error ? r.stack : String(r))),
      'unhandled promise rejections',
    ).toEqual([]);
  } finally {
    unhandled.length = 0;
  }
});

async function useRedis(): Promise<RedisServer> {
  redis = await RedisServer.start();
  redisDown = false;
  return redis;
}

/** SIGTERM, so that redis-server finishes its append-only file; resolves once it exited. */
async function stopRedis(): Promise<void> {
  redisDown = true;
  await redis!.stopProcess('SIGTERM');
}

async function startRedis(): Promise<void> {
  await redis!.startProcess();
  redisDown = false;
}

function admin(): Redis {
  const client = redis!.client();
  client.on('error', noop);
  admins.push(client);
  return client;
}

function engineOptions(keyPrefix: string, extra: Partial<RedisConnectionOptions & RedisEngineOptions> = {}): RedisConnectionOptions & RedisEngineOptions {
  return { url: redis!.url, keyPrefix, onError: noop, ...extra };
}

/** A plain engine on the test's redis: another node that appends, or a reader. */
async function otherEngine(keyPrefix: string): Promise<TestRedisEngine> {
  const engine = TestRedisEngine.on(engineOptions(keyPrefix));
  engines.push(engine);
  await engine.ready();
  return engine;
}

/**
 * An in-process gateway wired as `agentwire serve` wires it when AGENTWIRE_REDIS_URL is set;
 * `engineUrl` lets its engine reach Redis through a RedisProxy.
 */
async function startNode(keyPrefix: string, engineUrl?: string): Promise<Node> {
  let observed: ObservedEngine | null = null;
  const onError = (error: unknown) => observed?.recordError(error);
  const engine = ObservedEngine.on(engineOptions(keyPrefix, { onError, ...(engineUrl ? { url: engineUrl } : {}) }));
  observed = engine;
  const runStore = new RedisRunStore(engine.connection, { leaseMs: 10_000, onError: noop });
  const presence = new RedisPresence(engine.connection);
  const env = await startGateway({ engine, runStore, presence, drainTimeoutMs: 1000 });
  const node = { env, engine, httpUrl: `http://127.0.0.1:${env.port}` };
  nodes.push(node);
  return node;
}

function thinking(text: string, run = 'r-direct'): EventBody {
  return { type: 'agent_thinking', text, run_id: run, thread_id: 't-direct', ts: new Date(0).toISOString() };
}

/** Seq problems of one client's whole event list: must be exactly 1..n. */
function streamProblem(events: Frame[]): string | null {
  const seqs = events.map((e) => e.seq as number);
  if (new Set(seqs).size !== seqs.length) return `duplicate seqs in ${seqs.join(',')}`;
  return seqProblem(events, 0);
}

/** Each run's events, in order, must be exactly the demo agent's steps: one terminal, last. */
function expectDemoRuns(events: Frame[], runIds: readonly string[]): void {
  for (const runId of runIds) {
    const run = events.filter((e) => e.run_id === runId);
    expect(
      run.map((e) => e.type),
      `events of ${runId}`,
    ).toEqual(demoRunTypes(run[0]!.text));
    expect(run.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
  }
  const terminals = events.filter((e) => e.type === 'agent_completed' || e.type === 'agent_error');
  expect(terminals).toHaveLength(runIds.length);
}

async function logOf(engine: TestRedisEngine, userId: string): Promise<Frame[]> {
  const head = await engine.head(userId);
  return (await engine.read(userId, 1, head.lastSeq)).map((entry) => JSON.parse(entry.json) as Frame);
}

async function runToEnd(client: TestClient, id: string, thread: string, text: string): Promise<Frame[]> {
  const ack = await client.message(id, thread, text);
  expect(ack).toMatchObject({ type: 'ack', status: 'started' });
  return client.runEvents(ack.run_id, 15_000);
}

async function startProxy(): Promise<RedisProxy> {
  const proxy = await RedisProxy.start(redis!.port);
  proxies.push(proxy);
  return proxy;
}

describe('redis-server restarts in mid-stream', () => {
  it('delivers every event once and in order, ends each run with one terminal event, and resumes in the same epoch', async () => {
    await useRedis();
    const node = await startNode('restart');
    const a = await node.env.ready('alice');
    const epoch = a.frames[0]!.epoch as string;
    expect(a.frames[0]).toMatchObject({ type: 'connection_ready', last_seq: 0, resumed: false });
    const texts = ['/slow 120 one two three', '/slow 120 what is 2+3*4?', '/slow 120 four five six seven'];
    const runIds: string[] = [];
    for (const [i, text] of texts.entries()) {
      const ack = await a.message(`m${i}`, `t${i}`, text);
      expect(ack).toMatchObject({ type: 'ack', status: 'started' });
      runIds.push(ack.run_id as string);
    }
    await a.waitForCount(isEvent, 4, 5000, 'events before the outage');

    await stopRedis();
    const seenAtOutage = a.events().at(-1)!.seq as number;
    // A run's next step is appended while redis is down: it fails and is retried.
    await node.engine.until(() => node.engine.appendFailures > 0, 5000, 'an append to fail while redis is down');
    expect(a.closeCode).toBeNull();
    await startRedis();

    for (const runId of runIds) await a.runEvents(runId, 20_000);
    const events = a.events();
    expect(streamProblem(events)).toBeNull();
    expect(events).toHaveLength(texts.map((text) => demoRunTypes(text).length).reduce((a, b) => a + b));
    expectDemoRuns(events, runIds);
    // What the client saw is exactly the durable log, which kept its epoch (AOF).
    expect(await logOf(node.engine, 'alice')).toEqual(events);
    expect(await node.engine.head('alice')).toEqual({ epoch, lastSeq: events.length });
    expect(a.closeCode).toBeNull();

    // A client that reconnects from its position before the outage resumes seamlessly.
    const b = await node.env.ready('alice', { lastSeq: seenAtOutage, epoch });
    expect(b.frames[0]).toMatchObject({
      epoch,
      last_seq: events.length,
      resumed: true,
      replayed: events.length - seenAtOutage,
    });
    const replayed = await b.waitForCount(isEvent, events.length - seenAtOutage, 5000, 'replayed events');
    expect(replayed).toEqual(events.slice(seenAtOutage));
  });
});

describe('while redis is down', () => {
  it('answers /readyz and upgrades with 503, keeps open sockets usable, and recovers without a restart', async () => {
    await useRedis();
    const node = await startNode('outage');
    const a = await node.env.ready('bob');
    const w = await node.env.ready('bob');
    const epoch = a.frames[0]!.epoch as string;
    const first = await runToEnd(a, 'm1', 't1', 'hello there');
    const head = first.length;
    expect(first.map((e) => e.type)).toEqual(demoRunTypes('hello there'));
    await w.waitForCount(isEvent, head, 5000, 'the first run on the second client');
    expect((await httpGet(`${node.httpUrl}/readyz`)).status).toBe(200);

    await stopRedis();
    await waitStatus(`${node.httpUrl}/readyz`, 503, 5000);
    const readyz = await httpGet(`${node.httpUrl}/readyz`);
    expect(readyz.status).toBe(503);
    expect(JSON.parse(readyz.text)).toEqual({ status: 'not_ready' });
    expect(readyz.headers['retry-after']).toBe('1');
    expect((await httpGet(`${node.httpUrl}/healthz`)).status).toBe(200);
    expect(node.env.gateway.isReady).toBe(false);

    const upgrade = await tryUpgrade(node.env.url, { protocols: ['agentwire.v1', `jwt.${await node.env.token('bob')}`] });
    expect(upgrade.status).toBe(503);
    expect(upgrade.headers['retry-after']).toBe('1');

    // Open connections stay open: WebSocket ping and protocol ping are both answered.
    const pong = once(a.ws, 'pong');
    a.ws.ping(Buffer.from('outage'));
    const [payload] = (await Promise.race([pong, new Promise((_, reject) => setTimeout(() => reject(new Error('no pong while redis is down')), 5000))])) as [
      Buffer,
    ];
    expect(payload.toString()).toBe('outage');
    a.send({ type: 'ping', id: 'p-outage' });
    expect(await a.waitFor((f) => f.type === 'pong', 5000, 'pong frame')).toMatchObject({ type: 'pong', id: 'p-outage' });

    // A message that needs the engine gets "try again later" on that connection only.
    w.send({ type: 'user_message', id: 'm-down', thread_id: 't1', text: 'sent while redis is down' });
    expect(await w.waitClosed(5000)).toEqual({ code: 1013, reason: 'engine_unavailable' });
    expect(a.closeCode).toBeNull();

    await startRedis();
    await waitStatus(`${node.httpUrl}/readyz`, 200, 15_000);
    expect(node.env.gateway.isReady).toBe(true);

    // The closed client reconnects from its position and resumes; its message was never claimed.
    const w2 = await node.env.ready('bob', { lastSeq: head, epoch });
    expect(w2.frames[0]).toMatchObject({ epoch, last_seq: head, resumed: true, replayed: 0 });
    const second = await runToEnd(w2, 'm-down', 't1', 'what is 6*7?');
    expect(second.map((e) => e.type)).toEqual(demoRunTypes('what is 6*7?'));
    expect(second.map((e) => e.seq)).toEqual(second.map((_, i) => head + 1 + i));
    expect(second.at(-1)!.text).toContain('42');

    // The connection that stayed open through the outage gets the new run live, contiguously.
    await a.waitForCount(isEvent, head + second.length, 10_000, 'the second run on the client that stayed open');
    expect(streamProblem(a.events())).toBeNull();
    expect(a.events().slice(head)).toEqual(second);
    expect(a.closeCode).toBeNull();
  });

  it('a gateway process outlives the outage: alive, no unhandled rejection, /readyz follows redis, its run ends once', async () => {
    const cluster = await TestCluster.start(1);
    clusters.push(cluster);
    const node = cluster.nodes[0]!;
    const a = await cluster.ready(node, 'carol');
    const epoch = a.frames[0]!.epoch as string;
    const ack = await a.message('m1', 't1', '/slow 150 what is 2+2?');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    await a.waitForCount(isEvent, 2, 5000, 'the run to be under way');

    await cluster.redis.stopProcess('SIGTERM');
    try {
      await waitStatus(`${node.httpUrl}/readyz`, 503, 5000);
      const upgrade = await tryUpgrade(node.url, { protocols: ['agentwire.v1', `jwt.${await cluster.token('carol')}`] });
      expect(upgrade).toMatchObject({ status: 503, headers: { 'retry-after': '1' } });
      const pong = once(a.ws, 'pong');
      a.ws.ping();
      await Promise.race([pong, new Promise((_, reject) => setTimeout(() => reject(new Error('no pong')), 5000))]);
    } finally {
      await cluster.redis.startProcess();
    }
    await waitStatus(`${node.httpUrl}/readyz`, 200, 15_000);

    const events = await a.runEvents(ack.run_id, 20_000);
    expect(events.map((e) => e.type)).toEqual(demoRunTypes(events[0]!.text));
    expect(streamProblem(a.events())).toBeNull();
    expect(a.closeCode).toBeNull();
    const b = await cluster.ready(node, 'carol', { lastSeq: 0, epoch });
    expect(b.frames[0]).toMatchObject({ epoch, resumed: true, replayed: events.length, last_seq: events.length });
    expect(node.child.running).toBe(true);
    expect(node.child.stderr + node.child.stdout).not.toMatch(/unhandled/i);
  });
});

describe('run leases across an outage longer than the lease', () => {
  it('a run that outlived its lease while redis was down keeps a lease as long as it runs', async () => {
    await useRedis();
    const clock = new ManualClock(Date.now());
    const engine = ObservedEngine.on(engineOptions('lease'));
    const store = new ObservedRunStore(engine.connection, { leaseMs: 1000, now: () => clock.now(), onError: noop });
    // Renewals every 333 ms, sweeps for lost runs every 100 ms, all on the manual clock.
    const env = await startGateway({
      engine,
      runStore: store,
      presence: new RedisPresence(engine.connection),
      clock,
      lostRunSweepMs: 100,
      drainTimeoutMs: 1000,
    });
    const node = { env, engine, httpUrl: `http://127.0.0.1:${env.port}`, clock };
    nodes.push(node);
    const a = await env.ready('lou');
    const ack = await a.message('m1', 't1', '/hang until cancelled');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    await a.waitFor((f) => f.type === 'agent_started', 5000, 'agent_started');
    const redisAdmin = admin();
    const leases = engine.keys('lou').leases;
    const lease = leaseMember('lou', ack.run_id as string);
    expect(Number(await redisAdmin.zscore(leases, lease))).toBe(clock.now() + 1000);

    await stopRedis();
    await clock.advance(2000);
    await startRedis();
    await waitStatus(`${node.httpUrl}/readyz`, 200);
    // The lease lapsed during the outage. A renewal (at +2331) must find the lease to renew.
    const renewals = store.renewals;
    const sweeps = store.sweeps;
    await clock.advance(400);
    await store.until(() => store.renewals > renewals, 5000, 'a renewal after the outage');
    const score = await redisAdmin.zscore(leases, lease);
    expect(score, 'the running run has a lease').not.toBeNull();
    expect(Number(score)).toBeGreaterThan(clock.now());
    // Sweeps judge leases again only after a lease (1000 ms) of unbroken contact since the
    // outage, when every live node has renewed; the first one claims nothing of this live run.
    expect(store.sweeps, 'no sweep right after the outage').toBe(sweeps);
    for (let i = 0; i < 20 && store.sweeps === sweeps; i++) await clock.advance(100);
    await store.until(() => store.sweeps > sweeps, 5000, 'a sweep after the outage');
    expect(Number(await redisAdmin.zscore(leases, lease))).toBeGreaterThan(clock.now());

    // The run was never presumed lost: it is still going, and cancel ends it once.
    a.send({ type: 'cancel', id: 'c1', run_id: ack.run_id });
    expect(await a.waitFor((f) => f.type === 'ack' && f.id === 'c1', 5000, 'cancel ack')).toMatchObject({ status: 'cancelling' });
    for (let i = 0; i < 10 && !a.frames.some((f) => f.type === 'agent_completed'); i++) await clock.advance(1000);
    const events = await a.runEvents(ack.run_id, 5000);
    expect(events.filter((e) => e.type === 'agent_completed' || e.type === 'agent_error')).toEqual([
      expect.objectContaining({ type: 'agent_completed', status: 'cancelled' }),
    ]);
    expect(streamProblem(a.events())).toBeNull();
  });
});

describe('lost pub/sub notifications', () => {
  it('every client on two nodes still gets every event once and in order when pub/sub connections are killed mid-stream', async () => {
    await useRedis();
    const n1 = await startNode('pubsub');
    const n2 = await startNode('pubsub');
    const clients = [await n1.env.ready('dana'), await n1.env.ready('dana'), await n2.env.ready('dana')];
    const sends: Array<[TestClient, string]> = [
      [clients[0]!, '/slow 80 one two'],
      [clients[2]!, '/slow 80 what is 2*21?'],
      [clients[1]!, '/slow 80 three four five'],
    ];
    const runIds: string[] = [];
    for (const [i, [client, text]] of sends.entries()) {
      const ack = await client.message(`m${i}`, `t${i}`, text);
      expect(ack).toMatchObject({ type: 'ack', status: 'started' });
      runIds.push(ack.run_id as string);
    }
    const redisAdmin = admin();
    for (const threshold of [3, 8, 13]) {
      await clients[0]!.waitForCount(isEvent, threshold, 10_000, `${threshold} events`);
      const [g1, g2] = [n1.engine.gapSignals, n2.engine.gapSignals];
      const killed = Number(await redisAdmin.client('KILL', 'TYPE', 'pubsub'));
      expect(killed).toBeGreaterThanOrEqual(2);
      await n1.engine.until(() => n1.engine.gapSignals > g1, 5000, 'node 1 to resubscribe');
      await n2.engine.until(() => n2.engine.gapSignals > g2, 5000, 'node 2 to resubscribe');
    }
    for (const client of clients) {
      for (const runId of runIds) await client.runEvents(runId, 15_000);
    }
    const log = await logOf(n1.engine, 'dana');
    expect(log).toHaveLength(sends.map(([, text]) => demoRunTypes(text).length).reduce((a, b) => a + b));
    for (const client of clients) {
      expect(streamProblem(client.events())).toBeNull();
      expect(client.events()).toEqual(log);
      expect(client.closeCode).toBeNull();
    }
    expectDemoRuns(log, runIds);
  });

  it('repairs a notification lost between two appends when nothing follows it (the gap signal after resubscribing)', async () => {
    await useRedis();
    const node = await startNode('quiet');
    const other = await otherEngine('quiet');
    const a = await node.env.ready('erik');
    await other.append('erik', [thinking('one')]);
    await other.append('erik', [thinking('two')]);
    await a.waitForCount(isEvent, 2, 5000, 'two live events');
    const signals = node.engine.gapSignals;

    expect(Number(await admin().client('KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(1);
    await other.append('erik', [thinking('three, while nobody listens')]);
    // The append happened before the node's pub/sub connection came back (it waits >= 100 ms).
    expect(node.engine.gapSignals).toBe(signals);

    await a.waitForCount(isEvent, 3, 5000, 'the third event, repaired from the log');
    expect(a.events().map((e) => [e.seq, e.text])).toEqual([
      [1, 'one'],
      [2, 'two'],
      [3, 'three, while nobody listens'],
    ]);
    expect(node.engine.gapSignals).toBeGreaterThan(signals);
    expect(node.engine.reads).toContainEqual([3, 3]);
    expect(a.closeCode).toBeNull();
  });
});

describe('lost replies and reconnect order', () => {
  it('an append whose reply was lost with its connection is not applied twice', async () => {
    await useRedis();
    const proxy = await startProxy();
    const node = await startNode('lost-reply', proxy.url);
    const a = await node.env.ready('gus');
    // A first run loads the scripts, so the armed request below is the append itself.
    await runToEnd(a, 'm1', 't1', 'one two');
    proxy.loseReplyTo(/agent_thinking/, /\*3\r\n\$36\r\n[0-9a-f-]{36}\r\n:\d+\r\n:\d+\r\n/);
    const ack = await a.message('m2', 't1', 'three four');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    await a.runEvents(ack.run_id, 15_000);
    expect(proxy.cuts).toBe(1);
    const events = a.events();
    expect(streamProblem(events)).toBeNull();
    expectDemoRuns(events, [events[0]!.run_id, ack.run_id]);
    expect(await logOf(node.engine, 'gus')).toEqual(events);
  });

  it('signals a possible gap only once the subscription is active again, so the catch-up sees what it missed', async () => {
    await useRedis();
    const proxy = await startProxy();
    const node = await startNode('resubscribe', proxy.url);
    const other = await otherEngine('resubscribe');
    const a = await node.env.ready('hal');
    await other.append('hal', [thinking('one')]);
    await a.waitForCount(isEvent, 1, 5000, 'a live event');
    const signals = node.engine.gapSignals;

    proxy.holdRequestsFrom(/ssubscribe/i);
    expect(Number(await admin().client('KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(1);
    // The node reconnected (its ready check passed) and asked to resubscribe; Redis has not seen it.
    await proxy.until(() => proxy.holding() !== undefined, 5000, 'the resubscription to be held');
    expect(node.engine.gapSignals, 'a gap signal before the subscription is active').toBe(signals);
    await other.append('hal', [thinking('two, before the subscription is back')]);
    proxy.release();

    await a.waitForCount(isEvent, 2, 5000, 'the missed event, repaired after resubscribing');
    expect(a.events().map((e) => e.seq)).toEqual([1, 2]);
    expect(node.engine.gapSignals).toBeGreaterThan(signals);
    expect(a.closeCode).toBeNull();
  });

  it('repairs what the subscription missed when its connection came back before the command connection', async () => {
    await useRedis();
    const node = await startNode('order');
    const other = await otherEngine('order');
    const a = await node.env.ready('ida');
    await other.append('ida', [thinking('one')]);
    await a.waitForCount(isEvent, 1, 5000, 'a live event');

    // As in a full restart, where each connection reconnects on its own: the command connection
    // is down (here: closed by hand) while the pub/sub connection comes back.
    const commands = node.engine.redis;
    const ended = once(commands, 'end');
    commands.disconnect();
    await ended;
    expect(Number(await admin().client('KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(1);
    await other.append('ida', [thinking('two, while the node was away')]);
    await waitForSubscribers(admin(), node.engine.keys('ida').live, 1, { sharded: true });
    expect(a.events()).toHaveLength(1);

    await commands.connect();
    await a.waitForCount(isEvent, 2, 5000, 'the missed event once both connections are back');
    expect(a.events().map((e) => [e.seq, e.text])).toEqual([
      [1, 'one'],
      [2, 'two, while the node was away'],
    ]);
    expect(a.closeCode).toBeNull();
  });
});

describe('a connection lost again while resubscribing', () => {
  it('keeps the subscription (and raises nothing unhandled) when the link drops before Redis confirmed it', async () => {
    await useRedis();
    const proxy = await startProxy();
    const node = await startNode('flap', proxy.url);
    const other = await otherEngine('flap');
    const a = await node.env.ready('jo');
    await other.append('jo', [thinking('one')]);
    await a.waitForCount(isEvent, 1, 5000, 'a live event');

    proxy.holdRequestsFrom(/ssubscribe/i);
    expect(Number(await admin().client('KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(1);
    await proxy.until(() => proxy.holding() !== undefined, 5000, 'the resubscription to be sent');
    // Before Redis answers it, the link drops and Redis is unreachable for two attempts.
    await proxy.refuse();
    const refusedBefore = node.engine.connectionErrors.filter((e) => e === 'ECONNREFUSED').length;
    proxy.cut(proxy.holding()!);
    await node.engine.until(
      () => node.engine.connectionErrors.filter((e) => e === 'ECONNREFUSED').length >= refusedBefore + 2,
      10_000,
      'two refused reconnection attempts',
    );
    await proxy.acceptAgain();
    const signals = node.engine.gapSignals;
    await node.engine.until(() => node.engine.gapSignals > signals, 10_000, 'the node to be back and check for gaps');

    // Live delivery works again: these arrive without any further reconnect or gap signal.
    await other.append('jo', [thinking('two')]);
    await other.append('jo', [thinking('three')]);
    await a.waitForCount(isEvent, 3, 5000, 'live events after the node came back');
    expect(a.events().map((e) => [e.seq, e.text])).toEqual([
      [1, 'one'],
      [2, 'two'],
      [3, 'three'],
    ]);
    expect(unhandled.map(String)).toEqual([]);
    expect(a.closeCode).toBeNull();
  });
});

describe('data loss', () => {
  it('FLUSHALL starts a new epoch: the connected client is made to resync, the old position does not resume, seqs restart at 1', async () => {
    await useRedis();
    const node = await startNode('flush');
    const a = await node.env.ready('fay');
    const oldEpoch = a.frames[0]!.epoch as string;
    const firstRun = await runToEnd(a, 'm1', 't1', 'one two three');
    const oldHead = firstRun.length;
    expect(firstRun.map((e) => e.seq)).toEqual(firstRun.map((_, i) => i + 1));

    expect(await admin().flushall()).toBe('OK');
    const ack = await a.message('m2', 't1', 'four five');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    // Its next live event carries the new epoch: the client must resume.
    expect(await a.waitClosed(5000)).toEqual({ code: 1013, reason: 'resync' });
    expect(a.events()).toEqual(firstRun);

    const b = await node.env.ready('fay', { lastSeq: oldHead, epoch: oldEpoch });
    const newEpoch = b.frames[0]!.epoch as string;
    expect(newEpoch).not.toBe(oldEpoch);
    expect(b.frames[0]).toMatchObject({ resumed: false, replayed: 0 });
    // Under load the run may already have ended before b connected; then c's replay shows it all.
    const newRun = demoRunTypes('four five');
    if ((b.frames[0]!.last_seq as number) < newRun.length) await b.runEvents(ack.run_id, 10_000);

    const c = await node.env.ready('fay', { lastSeq: 0, epoch: newEpoch });
    expect(c.frames[0]).toMatchObject({ epoch: newEpoch, resumed: true, replayed: newRun.length, last_seq: newRun.length });
    const fresh = await c.waitForCount(isEvent, newRun.length, 5000, 'the new epoch replayed');
    expect(fresh.map((e) => e.seq)).toEqual(newRun.map((_, i) => i + 1));
    expect(fresh.map((e) => e.type)).toEqual(newRun);
    expect(fresh[0]).toMatchObject({ run_id: ack.run_id, message_id: 'm2' });
    expect(b.events()).toEqual(fresh.slice(fresh.length - b.events().length));
  });

  it('after FLUSHALL only the connection holding a position in the lost epoch resyncs; a connection set up in the new epoch runs its messages to the end (3 of 3)', async () => {
    await useRedis();
    const node = await startNode('flush-fresh');
    let old = await node.env.ready('gil');
    let oldEpoch = old.frames[0]!.epoch as string;
    await runToEnd(old, 'm0', 't1', 'before the loss');
    for (let attempt = 1; attempt <= 3; attempt++) {
      const oldLastSeq = old.events().at(-1)!.seq as number;
      expect(await admin().flushall()).toBe('OK');

      const fresh = await node.env.ready('gil');
      const ready = fresh.frames[0]!;
      expect(ready).toMatchObject({ resumed: false, replayed: 0, last_seq: 0 });
      expect(ready.epoch).not.toBe(oldEpoch);

      // The new connection gets its run through agent_completed and stays open ...
      const events = await runToEnd(fresh, `m${attempt}`, 't1', 'after the loss');
      const seqs = demoRunTypes('after the loss').map((_, i) => i + 1);
      expect(events.map((e) => e.seq)).toEqual(seqs);
      expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
      expect(fresh.events().map((e) => e.seq)).toEqual(seqs);
      expect(fresh.closeCode).toBeNull();
      // ... while the old connection, whose history is gone, is made to resume.
      expect(await old.waitClosed(5000)).toEqual({ code: 1013, reason: 'resync' });

      // The old client reconnects with its position in the lost epoch: not resumed.
      const back = await node.env.ready('gil', { lastSeq: oldLastSeq, epoch: oldEpoch });
      expect(back.frames[0]).toMatchObject({ epoch: ready.epoch, resumed: false, replayed: 0, last_seq: seqs.length });
      expect(back.closeCode).toBeNull();
      back.close();
      old = fresh;
      oldEpoch = ready.epoch as string;
    }
  });
});

/** A coordinator member that records what a connection would send: replay, then live entries. */
class Member implements CoordinatorMember {
  readonly delivered: LogEntry[] = [];
  result: Extract<SetupResult, { ok: true }> | null = null;
  failure: string | null = null;
  resyncs = 0;

  readonly #wake: () => void;

  constructor(
    readonly connectionId: string,
    readonly node: number,
    readonly resume: ResumePosition,
    wake: () => void,
  ) {
    this.#wake = wake;
  }

  isOpen(): boolean {
    return this.resyncs === 0;
  }

  deliver(entry: LogEntry): void {
    this.delivered.push(entry);
    this.#wake();
  }

  resync(): void {
    this.resyncs++;
    this.#wake();
  }

  setUp(result: SetupResult): void {
    if (result.ok) this.result = result;
    else this.failure = `denied: ${result.reason}`;
    this.#wake();
  }

  /** Newest seq this member's client has (after its replay and the live entries). */
  get position(): number {
    if (!this.result) return -1;
    return Math.max(this.result.head.lastSeq, this.delivered.at(-1)?.seq ?? 0);
  }

  describe(): string {
    const setup = this.result
      ? `head ${this.result.head.lastSeq} resumed ${this.result.resumed} replay [${this.result.replay.map((e) => e.seq).join(',')}]`
      : `failure ${this.failure}`;
    return `${this.connectionId}@node${this.node} resume ${JSON.stringify(this.resume)}: ${setup}; live [${this.delivered.map((e) => e.seq).join(',')}]; resyncs ${this.resyncs}`;
  }
}

type ResumeChoice = { kind: 'none' } | { kind: 'at'; back: number } | { kind: 'stale' } | { kind: 'ahead' };

function resumeFor(choice: ResumeChoice, start: LogHead): ResumePosition {
  switch (choice.kind) {
    case 'none':
      return {};
    case 'at':
      return { lastSeq: Math.max(0, start.lastSeq - choice.back), epoch: start.epoch };
    case 'stale':
      return { lastSeq: start.lastSeq, epoch: 'an-epoch-that-was-lost' };
    case 'ahead':
      return { lastSeq: start.lastSeq + 100, epoch: start.epoch };
  }
}

const resumeArb: fc.Arbitrary<ResumeChoice> = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.record({ kind: fc.constant('at' as const), back: fc.nat(4) }),
  fc.constant({ kind: 'stale' as const }),
  fc.constant({ kind: 'ahead' as const }),
);

const scenarioArb = fc.record({
  before: fc.nat(3),
  members: fc.array(fc.record({ node: fc.nat(1), resume: resumeArb }), { minLength: 1, maxLength: 4 }),
  appends: fc.array(fc.record({ node: fc.nat(1), size: fc.integer({ min: 1, max: 2 }) }), { minLength: 1, maxLength: 6 }),
  kill: fc.boolean(),
});

describe('a gap signal while a repair is under way', () => {
  it('is not dropped: what the pub/sub outage lost after the repaired range still arrives', async () => {
    await useRedis();
    const observed = ObservedEngine.on(engineOptions('repairing'));
    engines.push(observed);
    await observed.ready();
    const held = deferred();
    const repairStarted = deferred();
    let holdRepair = false;
    const engine = new InstrumentedEngine(observed, {
      // The notification of seq 2 is lost, so seq 3 reveals a gap; the repair's read is held.
      deliverLive: (_user, entry) => entry.seq !== 2,
      before: (op) => {
        if (op !== 'read' || !holdRepair) return undefined;
        repairStarted.resolve();
        return held.promise;
      },
    });
    const other = await otherEngine('repairing');
    const faults: string[] = [];
    const coordinator = new UserCoordinator('kim', engine, { maxConnections: 4, onFault: (e, c) => faults.push(`${c}: ${String(e)}`) }, noop);
    const waiters = new Waiters(() => `${member.describe()}; faults ${faults.join('; ')}`);
    const member = new Member('c1', 0, {}, () => waiters.notify());
    const reach = (seq: number) => waiters.until(() => member.position >= seq, 5000, `the member to reach seq ${seq}`);
    member.setUp(await coordinator.setup(member, coordinator.admit(member), {}));
    await other.append('kim', [thinking('one')]);
    await reach(1);

    holdRepair = true;
    await other.append('kim', [thinking('two (notification lost)')]);
    await other.append('kim', [thinking('three (reveals the gap)')]);
    await repairStarted.promise;
    // While the repair waits, pub/sub drops; seq 4 is published while nobody listens.
    const signals = observed.gapSignals;
    expect(Number(await admin().client('KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(1);
    await other.append('kim', [thinking('four (published during the outage)')]);
    await observed.until(() => observed.gapSignals > signals, 5000, 'the gap signal after resubscribing');
    holdRepair = false;
    held.resolve();

    await reach(4);
    expect(member.delivered.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(member.resyncs).toBe(0);
    expect(faults).toEqual([]);
    expect(await coordinator.teardown('c1', 1)).toEqual({ ok: true });
  });
});

describe('interleavings over a real Redis (fast-check scheduler)', () => {
  it('setups with resume positions racing appends from two nodes (and lost pub/sub) leave every member contiguous', async () => {
    await useRedis();
    const redisAdmin = admin();
    const user = 'ursula';
    let runNo = 0;
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), scenarioArb, async (s, scenario) => {
        // One redis-server for all runs; each run has key prefix of its own.
        const prefix = `fc${++runNo}`;
        // Reconnect at once after a kill, so a run does not wait for the default backoff.
        const nodesOfRun = [0, 1].map(() => TestRedisEngine.on(engineOptions(prefix, { redisOptions: { retryStrategy: () => 5 } })));
        try {
          await Promise.all(nodesOfRun.map((engine) => engine.ready()));
          for (let i = 0; i < scenario.before; i++) await nodesOfRun[0]!.append(user, [thinking(`before ${i}`)]);
          const start = await nodesOfRun[0]!.head(user);
          const scheduled = nodesOfRun.map((engine) => {
            const wrapped = new ScheduledEngine(engine);
            wrapped.use(s);
            return wrapped;
          });
          const faults: string[] = [];
          const coordinators = scheduled.map(
            (engine) =>
              new UserCoordinator(user, engine, { maxConnections: 10, onFault: (error, context) => faults.push(`${context}: ${String(error)}`) }, noop),
          );
          const waiters = new Waiters();
          const members = scenario.members.map((m, i) => new Member(`c${i}`, m.node, resumeFor(m.resume, start), () => waiters.notify()));
          const tasks: Promise<unknown>[] = members.map((member) => {
            const coordinator = coordinators[member.node]!;
            return coordinator.setup(member, coordinator.admit(member), member.resume).then(
              (result) => member.setUp(result),
              (error: unknown) => {
                member.failure = String(error);
              },
            );
          });
          for (const [i, append] of scenario.appends.entries()) {
            const events = Array.from({ length: append.size }, (_, k) => thinking(`append ${i}.${k} from node ${append.node}`));
            tasks.push(scheduled[append.node]!.append(user, events));
          }
          if (scenario.kill) tasks.push(s.schedule(Promise.resolve(), 'kill pub/sub connections').then(() => redisAdmin.client('KILL', 'TYPE', 'pubsub')));
          await s.waitFor(Promise.all(tasks));

          const end = await nodesOfRun[0]!.head(user);
          const report = () =>
            `\n${members.map((m) => m.describe()).join('\n')}\nend ${end.lastSeq}; faults ${faults.join('; ')}\n${s
              .report()
              .map((t) => t.label)
              .join(' | ')}`;
          await s.waitFor(
            waiters.until(
              () => members.every((m) => m.failure !== null || m.resyncs > 0 || m.position >= end.lastSeq),
              5000,
              `every member to reach seq ${end.lastSeq}`,
              report,
            ),
          );

          const log = new Map((await nodesOfRun[0]!.read(user, 1, end.lastSeq)).map((e) => [e.seq, e.json]));
          expect(end.epoch).toBe(start.epoch);
          for (const member of members) {
            const where = report();
            expect(member.failure, where).toBeNull();
            expect(member.resyncs, where).toBe(0);
            const { head, resumed, replay } = member.result!;
            expect(head.epoch, where).toBe(start.epoch);
            const from = member.resume.lastSeq;
            const canResume = from !== undefined && member.resume.epoch === head.epoch && from <= head.lastSeq;
            expect(resumed, where).toBe(canResume);
            const replayFrom = resumed ? from! : head.lastSeq;
            expect(
              replay.map((e) => e.seq),
              where,
            ).toEqual(Array.from({ length: head.lastSeq - replayFrom }, (_, i) => replayFrom + 1 + i));
            // Live entries: contiguous, none missing after the head, and the same as the log.
            const live = member.delivered.map((e) => e.seq);
            for (let i = 1; i < live.length; i++) expect(live[i], where).toBe(live[i - 1]! + 1);
            if (live.length > 0) expect(live[0]!, where).toBeLessThanOrEqual(head.lastSeq + 1);
            expect(member.position, where).toBe(end.lastSeq);
            for (const entry of [...replay, ...member.delivered]) expect(entry.json, where).toBe(log.get(entry.seq));
            // Notifications name their epoch (entries repaired from the log need not).
            for (const entry of member.delivered) if (entry.epoch !== undefined) expect(entry.epoch, where).toBe(start.epoch);
          }
        } finally {
          await Promise.all(nodesOfRun.map((engine) => engine.close()));
        }
      }),
      // RECOVERY_FC_RUNS=3000 for a longer search (about 1 minute).
      { numRuns: Number(process.env.RECOVERY_FC_RUNS ?? 100) },
    );
  });
});
