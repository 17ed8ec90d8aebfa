/**
 * The scenarios of the seed test plan ("WebSocket race condition comprehensive test plan"),
 * rewritten as tests that must PASS against agentwire over real sockets: one coordinator per
 * user, racing setups that never overlap, frames sent before the connection is ready, all five
 * event kinds under connection churn, and many users at once without deadlock or 1011.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CoordinatorRegistry, UserCoordinator } from '../../src/coordination/index.js';
import { MemoryEngine } from '../../src/engine/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { InstrumentedEngine, SETUP_OPS, nextTurn } from '../helpers/instrumentedEngine.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { within } from '../helpers/waitFor.js';
import { TestClient, seqProblem, type Frame } from '../helpers/wsClient.js';

let env: TestGateway | undefined;
let memory: MemoryEngine | undefined;

afterEach(async () => {
  vi.restoreAllMocks();
  await env?.stop();
  env = undefined;
  await memory?.close();
  memory = undefined;
});

/**
 * An engine whose coordinator operations (head, read, subscribe) each take a few turns of the
 * event loop, so that two setups of one user would overlap if they were not serialized.
 */
function slowSetupEngine(turns = 3): InstrumentedEngine {
  memory = new MemoryEngine();
  return new InstrumentedEngine(memory, {
    before: async (op) => {
      if (!SETUP_OPS.has(op)) return;
      for (let i = 0; i < turns; i++) await nextTurn();
    },
  });
}

/** Polls by event-loop turns (no fixed sleep), bounded by a deadline. */
async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** Closes the clients, waits for each close, then for the gateway to finish every teardown. */
async function closeAll(clients: TestClient[]): Promise<void> {
  for (const client of clients) client.close();
  const closes = await Promise.all(clients.map((c) => c.waitClosed(10_000)));
  for (const close of closes) expect(close.code).toBe(1000);
  await until(() => env!.gateway.connectionCount === 0 && env!.gateway.coordinatorCount === 0, 'all teardowns');
}

/** Opens sockets for all the given users in the same tick (tokens are signed first). */
async function openAll(userIds: string[], via: 'subprotocol' | 'header' = 'subprotocol'): Promise<TestClient[]> {
  const tokens = await Promise.all(userIds.map((id) => env!.token(id)));
  const clients = tokens.map((token) => new TestClient(env!.url, { token, via }));
  env!.clients.push(...clients);
  return clients;
}

async function closeCodeCount(code: number): Promise<number> {
  const values = (await env!.gateway.metrics.closes.get()).values;
  return values.filter((v) => v.labels.code === String(code)).reduce((sum, v) => sum + v.value, 0);
}

async function faultCount(): Promise<number> {
  return (await env!.gateway.metrics.faults.get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function liveConnectionGauge(): Promise<number> {
  return (await env!.gateway.metrics.connections.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** The real setup, captured before any test spies on it. */
// eslint-disable-next-line @typescript-eslint/unbound-method -- called with its coordinator as `this` (apply)
const setupOriginal = UserCoordinator.prototype.setup;

const FIVE_KINDS = ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed'];

describe('seed plan: single coordination state machine per user', () => {
  it('gives both live connections of a user the same coordinator, and none is left after they close', async () => {
    const getOrCreate = vi.spyOn(CoordinatorRegistry.prototype, 'getOrCreate');
    const engine = slowSetupEngine(1);
    env = await startGateway({ engine });
    const [a1, a2, b1] = await openAll(['alice', 'alice', 'bob']);
    const readies = await Promise.all([a1!, a2!, b1!].map((c) => c.ready()));
    expect(readies.map((r) => r.user_id)).toEqual(['alice', 'alice', 'bob']);
    expect(new Set(readies.map((r) => r.connection_id)).size).toBe(3);

    expect(getOrCreate).toHaveBeenCalledTimes(3);
    const registry = getOrCreate.mock.contexts[0] as CoordinatorRegistry;
    for (const context of getOrCreate.mock.contexts) expect(context).toBe(registry);
    const handedOut = getOrCreate.mock.results.map((r) => r.value as UserCoordinator);
    const aliceCoordinator = registry.get('alice');
    expect(aliceCoordinator).toBeInstanceOf(UserCoordinator);
    expect(handedOut.filter((c) => c.userId === 'alice')).toEqual([aliceCoordinator, aliceCoordinator]);
    expect(handedOut.filter((c) => c.userId === 'alice').every((c) => c === aliceCoordinator)).toBe(true);
    expect(registry.get('bob')).not.toBe(aliceCoordinator);
    expect(aliceCoordinator!.connectionCount).toBe(2);
    expect(env.gateway.coordinatorCount).toBe(2);
    expect(registry.size).toBe(2);
    // One subscription to alice's log for both of her connections.
    expect(engine.countOf('subscribe', 'alice')).toBe(1);
    expect(readies[0]!.epoch).toBe(readies[1]!.epoch);

    // The shared coordinator fans alice's run out to both of her connections, not to bob.
    const ack = await a1!.message('m1', 't1', 'what is 6*7?');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    const events1 = await a1!.runEvents(ack.run_id);
    const events2 = await a2!.runEvents(ack.run_id);
    expect(events2).toEqual(events1);
    expect(seqProblem(events1, 0)).toBeNull();
    expect(b1!.events()).toEqual([]);

    // One of alice's connections closes: the coordinator stays for the other.
    a1!.close();
    await a1!.waitClosed();
    await until(() => env!.gateway.connectionCount === 2, 'the first teardown');
    expect(registry.get('alice')).toBe(aliceCoordinator);
    expect(aliceCoordinator!.connectionCount).toBe(1);

    await closeAll([a2!, b1!]);
    expect(env.gateway.coordinatorCount).toBe(0);
    expect(registry.get('alice')).toBeUndefined();
    expect(registry.get('bob')).toBeUndefined();
    expect(engine.activeSubscriptions.get('alice')).toBe(0);
    expect(engine.activeSubscriptions.get('bob')).toBe(0);

    // A new connection of alice gets a new coordinator.
    const again = await env.ready('alice');
    expect(registry.get('alice')).toBeInstanceOf(UserCoordinator);
    expect(registry.get('alice')).not.toBe(aliceCoordinator);
    await closeAll([again]);
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
  });

  it('five connections of one user racing through setup all reach connection_ready, and their setups never overlap', async () => {
    // Count setups requested but not finished: > 1 means they really raced for the coordinator.
    let outstanding = 0;
    let maxOutstanding = 0;
    vi.spyOn(UserCoordinator.prototype, 'setup').mockImplementation(function (this: UserCoordinator, ...args) {
      outstanding++;
      maxOutstanding = Math.max(maxOutstanding, outstanding);
      return setupOriginal.apply(this, args).finally(() => outstanding--);
    });
    const engine = slowSetupEngine(3);
    env = await startGateway({ engine });
    const clients = await openAll(['racer', 'racer', 'racer', 'racer', 'racer']);
    const readies = await Promise.all(clients.map((c) => c.ready(10_000)));

    expect(maxOutstanding).toBeGreaterThan(1);
    expect(engine.maxInFlight.get('racer')).toBe(1);
    expect(engine.countOf('subscribe', 'racer')).toBe(1);
    for (const [i, ready] of readies.entries()) {
      expect(clients[i]!.frames[0]).toBe(ready);
      expect(ready).toMatchObject({ type: 'connection_ready', protocol: 'agentwire.v1', user_id: 'racer', last_seq: 0, resumed: false, replayed: 0 });
    }
    expect(new Set(readies.map((r) => r.connection_id)).size).toBe(5);
    expect(new Set(readies.map((r) => r.epoch)).size).toBe(1);
    expect(env.gateway.coordinatorCount).toBe(1);
    expect(env.gateway.connectionCount).toBe(5);
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
    expect(await faultCount()).toBe(0);

    await closeAll(clients);
    expect(await closeCodeCount(1011)).toBe(0);
  });
});

describe('seed plan: frames sent before the connection is ready', () => {
  it('holds a user_message sent before the auth frame and one right after it, and processes both after connection_ready, in order', async () => {
    env = await startGateway({ engine: slowSetupEngine(2) });
    const token = await env.token('early');
    const client = new TestClient(env.url, { via: 'none' });
    env.clients.push(client);
    // Registered in the same tick as the socket was created, so before 'open' can fire.
    client.ws.once('open', () => {
      // All three in the same tick: the first before any identity exists.
      client.send({ type: 'user_message', id: 'before-auth', thread_id: 't1', text: 'count these three words' });
      client.send({ type: 'auth', token });
      client.send({ type: 'user_message', id: 'after-auth', thread_id: 't1', text: 'what is 1+2?' });
    });
    const ready = await client.ready();
    expect(ready).toMatchObject({ user_id: 'early', last_seq: 0 });
    const first = await client.waitFor((f) => f.type === 'ack' && f.id === 'before-auth', 5000, 'first ack');
    const second = await client.waitFor((f) => f.type === 'ack' && f.id === 'after-auth', 5000, 'second ack');
    expect(first).toMatchObject({ status: 'started', thread_id: 't1' });
    expect(second).toMatchObject({ status: 'queued', thread_id: 't1' });

    const run1 = await client.runEvents(first.run_id);
    const run2 = await client.runEvents(second.run_id, 10_000);
    expect(client.frames[0]).toBe(ready);
    const nonEvents = client.frames.filter((f) => typeof f.seq !== 'number');
    expect(nonEvents.map((f) => f.type)).toEqual(['connection_ready', 'ack', 'ack']);
    expect(nonEvents.map((f) => f.id)).toEqual([undefined, 'before-auth', 'after-auth']);
    expect(client.frames.filter((f) => f.type === 'error')).toEqual([]);
    // FIFO on the thread: the second run starts after the first ended, and the log has no gap.
    expect(run2[0]!.seq).toBe(run1.at(-1)!.seq + 1);
    expect(seqProblem(client.events(), 0)).toBeNull();
    expect(run1[0]).toMatchObject({ type: 'agent_started', message_id: 'before-auth' });
    expect(run2[0]).toMatchObject({ type: 'agent_started', message_id: 'after-auth' });
    expect(run2.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
    expect(run2.at(-1)!.text).toContain('3');
    expect(client.closeCode).toBeNull();
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
    await closeAll([client]);
  });

  it('holds frames sent the moment the handshake completes (credentials at the upgrade, setup still running)', async () => {
    const engine = slowSetupEngine(5);
    env = await startGateway({ engine });
    const token = await env.token('eager');
    const client = new TestClient(env.url, { token, via: 'header' });
    env.clients.push(client);
    let readyBeforeSend = true;
    client.ws.once('open', () => {
      readyBeforeSend = client.frames.length > 0;
      client.send({ type: 'ping', id: 1 });
      client.send({ type: 'user_message', id: 'm1', thread_id: 't1', text: 'hello there' });
      client.send({ type: 'ping', id: 2 });
    });
    await client.ready();
    const ack = await client.waitFor((f) => f.type === 'ack', 5000, 'ack');
    await client.waitFor((f) => f.type === 'pong' && f.id === 2, 5000, 'second pong');
    expect(readyBeforeSend).toBe(false);
    const control = client.frames.filter((f) => typeof f.seq !== 'number').map((f) => `${f.type}:${f.id ?? ''}`);
    expect(control).toEqual(['connection_ready:', 'pong:1', 'ack:m1', 'pong:2']);
    const events = await client.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('hello there'));
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
    await closeAll([client]);
  });
});

describe('seed plan: all five event kinds under connection churn', () => {
  it('delivers every event kind of a run while other connections of the same user connect and close in a loop', async () => {
    env = await startGateway();
    const main = await env.ready('churner');
    const ack = await main.message('m1', 't1', '/slow 20 what is 2+3*4?');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    const terminal = () => main.frames.some((f) => f.run_id === ack.run_id && f.type === 'agent_completed');

    // Connect and close other connections of the same user, one after another, until the run ends.
    const churned: Array<{ ready: Frame; client: TestClient }> = [];
    do {
      const client = await env.connect('churner');
      const ready = await client.ready();
      churned.push({ ready, client });
      client.close();
      await client.waitClosed();
    } while (!terminal());

    const events = await main.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('/slow 20 what is 2+3*4?'));
    for (const kind of FIVE_KINDS) expect(events.some((e) => e.type === kind)).toBe(true);
    expect(seqProblem(events, 0)).toBeNull();
    expect(events.at(-1)!.text).toContain('14');
    expect(main.closeCode).toBeNull();

    // The churn really overlapped the run: a connection became ready before the run's last event.
    expect(churned[0]!.ready.last_seq).toBeLessThan(events.at(-1)!.seq);
    for (const { ready, client } of churned) {
      expect(client.closeCode).toBe(1000);
      expect(ready).toMatchObject({ user_id: 'churner', epoch: main.frames[0]!.epoch, resumed: false });
      // Whatever a churned connection saw of the run is contiguous from its connection_ready.
      expect(seqProblem(client.events(), ready.last_seq)).toBeNull();
      expect(client.events().every((e) => e.run_id === ack.run_id)).toBe(true);
    }
    await closeAll([main]);
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
    expect(await closeCodeCount(1011)).toBe(0);
    expect(await faultCount()).toBe(0);
  });
});

describe('seed plan: high concurrency', () => {
  it('50 users with 2 connections each: setup, one message each, close, all at once: no deadlock, no 1011', async () => {
    env = await startGateway();
    const users = Array.from({ length: 50 }, (_, i) => `load-${i}`);
    const clients = await openAll(users.flatMap((u) => [u, u]));

    const work = Promise.all(
      clients.map(async (client, i) => {
        const userId = users[Math.floor(i / 2)]!;
        const ready = await client.ready(15_000);
        expect(ready.user_id).toBe(userId);
        const ack = await client.message(`msg-${i}`, `thread-${i % 2}`, `what is ${i}+1?`, 15_000);
        expect(ack).toMatchObject({ type: 'ack', status: 'started', id: `msg-${i}` });
        const events = await client.runEvents(ack.run_id, 15_000);
        expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
        expect(events.at(-1)!.text).toContain(String(i + 1));
        client.close();
        const closed = await client.waitClosed(15_000);
        return { ready, closed, client };
      }),
    );
    const results = await within(work, 'all 100 connections to finish (a deadlock?)', 25_000);

    for (const { closed, client, ready } of results) {
      expect(closed.code).toBe(1000);
      expect(client.frames.filter((f) => f.type === 'error')).toEqual([]);
      // Every connection saw its user's events without gap from its connection_ready on.
      expect(seqProblem(client.events(), ready.last_seq)).toBeNull();
    }
    // Each user's two runs (9 events each: "n+1 = m" streams in three words) are seqs 1..18 of
    // that user's log, all seen.
    const perUser = 2 * demoRunTypes('what is 1+1?').length;
    for (let u = 0; u < users.length; u++) {
      const seen = new Set([...results[2 * u]!.client.events(), ...results[2 * u + 1]!.client.events()].map((e) => e.seq));
      expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: perUser }, (_, i) => i + 1));
    }
    await until(() => env!.gateway.connectionCount === 0 && env!.gateway.coordinatorCount === 0, 'all teardowns', 10_000);
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
    expect(await closeCodeCount(1011)).toBe(0);
    expect(await closeCodeCount(1000)).toBe(100);
    expect(await faultCount()).toBe(0);
    expect(await liveConnectionGauge()).toBe(0);
  });
});
