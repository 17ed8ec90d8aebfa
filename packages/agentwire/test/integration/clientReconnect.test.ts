import { afterEach, describe, expect, it, vi } from 'vitest';
import { signToken } from '../../src/auth/index.js';
import { createClient, type AgentEvent, type AgentwireClient, type ClientEventMap, type ClientOptions, type ClientState } from '@agentwire/client/node';
import { MemoryEngine } from '../../src/engine/index.js';
import type { Agent, AgentStep } from '../../src/runs/agent.js';
import { createGateway, type Gateway } from '../../src/transport/index.js';
import { TEST_SECRET, startGateway, type TestGateway } from '../helpers/gateway.js';
import { ManualClock } from '../helpers/manualClock.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { TcpProxy } from '../helpers/tcpProxy.js';
import { within } from '../helpers/waitFor.js';
import { TestClient, seqProblem } from '../helpers/wsClient.js';

/**
 * The client SDK against real gateways over real sockets: server restarts on the same port
 * (with the same engine: resume; with a new one: history reset), connection resets and stalls
 * injected by a TCP proxy (resume, watchdog), a message re-sent after a drop (exactly one run),
 * and the close codes that make the client wait long (4429), re-auth (4401) or stop (4403).
 * The client's timers run on a ManualClock, so a test decides when a reconnect happens.
 */

// ---- bookkeeping ----

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

function track<T>(value: T, cleanup: (value: T) => Promise<void> | void): T {
  cleanups.push(() => cleanup(value));
  return value;
}

async function gatewayOn(port: number, options: Partial<Parameters<typeof createGateway>[0]> = {}): Promise<{ gateway: Gateway; port: number }> {
  // No merging of deltas (as startGateway): the tests count a demo run's events word by word
  // (demoRunTypes), which a flush window would make depend on timing (CI-sim saw 10 for 11).
  const gateway = createGateway({ auth: { secret: TEST_SECRET }, demoStepMs: 1, streamFlushMs: 0, ...options });
  track(gateway, (g) => g.shutdown());
  const listening = await gateway.listen(port, '127.0.0.1');
  return { gateway, port: listening.port };
}

function token(userId: string, secret = TEST_SECRET): Promise<string> {
  return signToken(secret, { sub: userId, ttlSec: 600 }).then((signed) => signed.token);
}

function sdkClient(url: string, options: Partial<ClientOptions>): AgentwireClient {
  const client = createClient({
    url,
    random: () => 0.5,
    minDelayMs: 10,
    maxDelayMs: 40,
    pingIntervalMs: 0,
    connectTimeoutMs: 10_000,
    ...options,
  });
  return track(client, (c) => c.close());
}

function observer(url: string, userToken: string): TestClient {
  const client = new TestClient(url, { token: userToken });
  return track(client, (c) => c.close());
}

/** Resolves with the next payload of `event` that matches; registered before the trigger. */
function next<K extends keyof ClientEventMap>(
  client: AgentwireClient,
  event: K,
  predicate: (payload: ClientEventMap[K]) => boolean = () => true,
  timeoutMs = 5000,
): Promise<ClientEventMap[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for client event ${event} (state ${client.state})`));
    }, timeoutMs);
    const off = client.on(event, (payload) => {
      if (!predicate(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

function record(client: AgentwireClient) {
  const states: ClientState[] = [client.state];
  const seqs: number[] = [];
  const disconnects: Array<ClientEventMap['disconnect']> = [];
  client.on('state', ({ state }) => states.push(state));
  client.on('event', (event) => seqs.push(event.seq));
  client.on('disconnect', (info) => disconnects.push(info));
  return { states, seqs, disconnects };
}

/** All events of a run (bounded: a run that does not end fails the test in 5 s). */
async function collect(events: AsyncIterable<AgentEvent>): Promise<AgentEvent[]> {
  const list: AgentEvent[] = [];
  const reading = (async () => {
    for await (const event of events) list.push(event);
    return list;
  })();
  return within(reading, () => `the end of a run (got ${list.map((e) => e.type).join(', ')})`);
}

/** An agent whose second step waits until the test releases it (or the run is aborted). */
function gatedAgent() {
  const gates: Array<() => void> = [];
  const agent: Agent = {
    async *run({ text, signal }): AsyncGenerator<AgentStep> {
      yield { type: 'thinking', text: `first: ${text}` };
      await new Promise<void>((resolve, reject) => {
        gates.push(resolve);
        signal.addEventListener(
          'abort',
          () => {
            gates.splice(gates.indexOf(resolve), 1);
            reject(signal.reason);
          },
          { once: true },
        );
      });
      yield { type: 'thinking', text: 'second' };
      yield { type: 'answer', text: `done: ${text}` };
    },
  };
  return {
    agent,
    /** Releases the oldest waiting run. */
    release: () => gates.shift()?.(),
  };
}

// ---- scenarios ----

describe('client SDK: gateway restarts', () => {
  it('restart mid-run on the same port with the same engine: 1012, redial at once, back off, resume with replay', async () => {
    const engine = track(new MemoryEngine(), (e) => e.close());
    const gated = gatedAgent();
    const a = await gatewayOn(0, { engine, agent: gated.agent, drainTimeoutMs: 0 });
    const url = `ws://127.0.0.1:${a.port}/ws`;
    const clock = new ManualClock();
    const client = sdkClient(url, { token: await token('alice'), clock });
    const seen = record(client);
    await within(client.connect(), 'connect');

    const run = client.ask('t1', 'mid-run');
    const events = collect(run.events);
    await next(client, 'agent_thinking');
    const waiting = next(client, 'disconnect', (d) => d.delayMs > 0);
    await a.gateway.shutdown();
    await waiting;
    // 1012 made the client redial at once; that dial found no gateway, so it now backs off.
    expect(seen.disconnects[0]).toEqual({ code: 1012, reason: 'service_restart', wasReady: true, attempt: 1, delayMs: 0 });
    expect(seen.disconnects[1]).toMatchObject({ code: 1006, wasReady: false, attempt: 2, delayMs: 25 });
    expect(seen.disconnects).toHaveLength(2);
    expect(client.state).toBe('reconnecting');

    // While the client waits, the new gateway appends events it has not seen.
    const b = await gatewayOn(a.port, { engine, agent: gated.agent });
    const other = observer(url, await token('alice'));
    await other.ready();
    const otherAck = await other.message('m-b', 't2', 'while away');
    gated.release();
    const missed = await other.runEvents(otherAck.run_id);
    expect(missed).toHaveLength(4);

    const ready = next(client, 'ready');
    const seventh = next(client, 'event', (e) => e.seq === 7);
    await clock.advance(25);
    const frame = await ready;
    expect(frame).toMatchObject({ resumed: true, replayed: 4, epoch: (await engine.head('alice')).epoch });
    expect(await seventh).toMatchObject({ type: 'agent_completed', run_id: otherAck.run_id });
    // The run in flight was ended by the drain (agent_error shutdown); the log survived.
    const runEvents = await events;
    expect(runEvents.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(runEvents.at(-1)).toMatchObject({ type: 'agent_error', code: 'shutdown', run_id: (await within(run.ack, 'ack')).run_id });
    expect(seen.seqs).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(client.duplicatesDropped).toBe(0);
    expect(seen.states).toEqual(['idle', 'connecting', 'ready', 'reconnecting', 'ready']);
    expect(b.gateway.connectionCount).toBe(2);
  });

  it('restart with a new engine: resumed:false is surfaced as history_reset and a message queued meanwhile runs once', async () => {
    const a = await gatewayOn(0);
    const url = `ws://127.0.0.1:${a.port}/ws`;
    const clock = new ManualClock();
    const client = sdkClient(url, { token: await token('bob'), clock });
    const seen = record(client);
    await within(client.connect(), 'connect');
    const firstRun = await collect(client.ask('t1', 'what is 2+3*4?').events);
    expect(firstRun.at(-1)).toMatchObject({ type: 'agent_completed', text: '2+3*4 = 14' });
    const oldEpoch = client.position!.epoch;
    const oldHead = demoRunTypes('what is 2+3*4?').length;
    expect(client.position).toEqual({ epoch: oldEpoch, lastSeq: oldHead });

    const waiting = next(client, 'disconnect', (d) => d.delayMs > 0);
    await a.gateway.shutdown();
    await waiting;
    const queued = client.send('t1', 'sent while disconnected');
    expect(client.pendingCount).toBe(1);

    const b = await gatewayOn(a.port);
    const reset = next(client, 'history_reset');
    await clock.advance(25);
    const info = await reset;
    const newEpoch = (await b.gateway.engine.head('bob')).epoch;
    expect(newEpoch).not.toBe(oldEpoch);
    expect({ ...info, ready: undefined }).toEqual({
      previousEpoch: oldEpoch,
      previousLastSeq: oldHead,
      epoch: newEpoch,
      lastSeq: 0,
      ready: undefined,
    });
    expect(info.ready).toMatchObject({ resumed: false, replayed: 0, last_seq: 0 });
    const ack = await within(queued, 'ack');
    expect(ack).toMatchObject({ type: 'ack', status: 'started', thread_id: 't1' });
    const events = await collect(client.run(ack.run_id));
    const seqsFrom1 = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
    const newHead = demoRunTypes('sent while disconnected').length;
    expect(events.map((e) => e.seq)).toEqual(seqsFrom1(newHead));
    expect(events[0]).toMatchObject({ type: 'agent_started', text: 'sent while disconnected' });
    expect(seen.seqs).toEqual([...seqsFrom1(oldHead), ...seqsFrom1(newHead)]);
    expect(client.position).toEqual({ epoch: newEpoch, lastSeq: newHead });
  });
});

describe('client SDK: network faults through a TCP proxy', () => {
  let env: TestGateway;
  let proxy: TcpProxy;

  async function setup(gatewayOptions: Parameters<typeof startGateway>[0] = {}) {
    env = track(await startGateway(gatewayOptions), (e) => e.stop());
    proxy = track(await TcpProxy.start(env.port), (p) => p.close());
    return `ws://127.0.0.1:${proxy.port}/ws`;
  }

  it('a connection reset mid-run: the client resumes and gets every event of the run once, in order', async () => {
    const gated = gatedAgent();
    const url = await setup({ agent: gated.agent });
    const clock = new ManualClock();
    const client = sdkClient(url, { token: await token('carol'), clock });
    const seen = record(client);
    await within(client.connect(), 'connect');
    const other = observer(env.url, await env.token('carol'));
    await other.ready();

    const run = client.ask('t1', 'hello');
    const events = collect(run.events);
    await next(client, 'agent_thinking');
    const lost = next(client, 'disconnect');
    proxy.reset();
    expect(await lost).toMatchObject({ code: 1006, wasReady: true, attempt: 1, delayMs: 15 });
    // The run goes on without the client.
    gated.release();
    const runId = (await within(run.ack, 'ack')).run_id;
    await other.runEvents(runId);

    const ready = next(client, 'ready');
    await clock.advance(15);
    expect(await ready).toMatchObject({ resumed: true, replayed: 2 });
    const list = await events;
    expect(list.map((e) => [e.seq, e.type])).toEqual([
      [1, 'agent_started'],
      [2, 'agent_thinking'],
      [3, 'agent_thinking'],
      [4, 'agent_completed'],
    ]);
    expect(list.map((e) => e.seq)).toEqual(other.events().map((e) => e.seq));
    expect(seen.seqs).toEqual([1, 2, 3, 4]);
    expect(proxy.accepted).toBe(2);
    expect(seen.states).toEqual(['idle', 'connecting', 'ready', 'reconnecting', 'ready']);
  });

  it('watchdog: a stalled socket (open but dead) is found by the ping timeout, dropped and replaced', async () => {
    const url = await setup();
    const clock = new ManualClock();
    const client = sdkClient(url, { token: await token('dave'), clock, pingIntervalMs: 5000, pongTimeoutMs: 2000 });
    const seen = record(client);
    await within(client.connect(), 'connect');
    const first = await proxy.waitForAccepted(1);

    // A healthy idle socket: the ping is answered and the socket stays.
    const pong = next(client, 'pong');
    await clock.advance(5000);
    expect(await pong).toMatchObject({ type: 'pong', id: 'watchdog-1' });
    await clock.advance(2000);
    expect(client.state).toBe('ready');
    expect(proxy.accepted).toBe(1);

    // Stall it: the next ping goes nowhere and nothing comes back.
    // (The pong came at t=5000, so the next ping is due at t=10000.)
    proxy.stall();
    await clock.advance(2999);
    expect(first.heldBytesToServer).toBe(0);
    await clock.advance(1);
    await proxy.waitFor(() => first.heldBytesToServer > 0, 5000, 'the ping to be held by the stalled proxy');
    const watchdog = next(client, 'watchdog');
    const ready = next(client, 'ready');
    await clock.advance(1999);
    expect(client.state).toBe('ready');
    await clock.advance(1);
    expect(await watchdog).toEqual({ pingSentAt: 10_000, lastFrameAt: 5000 });
    // Dropped at once and redialed at once (first retry), resuming on a new TCP connection.
    expect(await ready).toMatchObject({ resumed: true, replayed: 0 });
    await proxy.waitFor(() => first.closed, 5000, 'the stalled connection to be closed by the client');
    expect(proxy.accepted).toBe(2);
    expect(seen.disconnects).toEqual([{ code: 1006, reason: 'watchdog_timeout', wasReady: true, attempt: 1, delayMs: 0 }]);
    // The new connection works.
    const events = await collect(client.ask('t1', 'what is 6*7?').events);
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', text: '6*7 = 42' });
  });

  it('message reached the server but the ack was lost: the re-send is acked duplicate, exactly one run', async () => {
    const url = await setup();
    const clock = new ManualClock();
    const client = sdkClient(url, { token: await token('erin'), clock });
    await within(client.connect(), 'connect');
    const other = observer(env.url, await env.token('erin'));
    await other.ready();

    proxy.stall('toClient');
    const run = client.ask('t1', 'what is 1+2?');
    const started = await other.waitFor((f) => f.type === 'agent_started' && f.message_id === run.id, 5000, 'agent_started');
    await other.runEvents(started.run_id);
    expect(client.pendingCount).toBe(1);

    const lost = next(client, 'disconnect');
    proxy.reset();
    const { delayMs } = await lost;
    await clock.advance(delayMs);
    const ack = await within(run.ack, 'ack');
    expect(ack).toEqual({ type: 'ack', id: run.id, run_id: started.run_id, thread_id: 't1', status: 'duplicate' });
    const events = await collect(run.events);
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('what is 1+2?'));
    expect(seqProblem(events, 0)).toBeNull();
    // One more message proves the log holds only one run for the re-sent id.
    const after = await within(client.send('t1', 'and then'), 'ack');
    await collect(client.run(after.run_id));
    await other.runEvents(after.run_id);
    expect(
      other
        .events()
        .filter((f) => f.type === 'agent_started')
        .map((f) => f.message_id),
    ).toEqual([run.id, after.id]);
  });

  it('message lost on the way to the server: the re-send starts it, exactly one run', async () => {
    const url = await setup();
    const clock = new ManualClock();
    const client = sdkClient(url, { token: await token('frank'), clock });
    await within(client.connect(), 'connect');
    const first = await proxy.waitForAccepted(1);
    const other = observer(env.url, await env.token('frank'));
    await other.ready();

    proxy.stall('toServer');
    const run = client.ask('t1', 'what is 3*3?');
    await proxy.waitFor(() => first.heldBytesToServer > 0, 5000, 'the message to be held');
    const lost = next(client, 'disconnect');
    proxy.reset();
    const { delayMs } = await lost;
    await clock.advance(delayMs);
    const ack = await within(run.ack, 'ack');
    expect(ack).toMatchObject({ id: run.id, status: 'started' });
    const events = await collect(run.events);
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', text: '3*3 = 9' });
    await other.runEvents(ack.run_id);
    expect(
      other
        .events()
        .filter((f) => f.type === 'agent_started')
        .map((f) => f.message_id),
    ).toEqual([run.id]);
  });
});

describe('client SDK: close codes from a real gateway', () => {
  it('4429 (too many connections): waits the long backoff, then connects once a slot is free', async () => {
    const env = track(await startGateway({ maxConnectionsPerUser: 1 }), (e) => e.stop());
    const holder = await env.ready('gina');
    const clock = new ManualClock();
    const client = sdkClient(env.url, { token: await env.token('gina'), clock, longDelayMs: 1000 });
    const seen = record(client);
    void client.connect().catch(() => {});
    const refused = await next(client, 'disconnect');
    expect(refused).toEqual({ code: 4429, reason: 'too_many_connections', wasReady: false, attempt: 1, delayMs: 750 });
    holder.close();
    await holder.closed;
    // The server finishes its teardown of the holder asynchronously.
    await vi.waitFor(() => expect(env.gateway.connectionCount).toBe(0), { timeout: 5000, interval: 5 });
    const ready = next(client, 'ready');
    await clock.advance(749);
    expect(client.state).toBe('reconnecting');
    await clock.advance(1);
    await ready;
    expect(seen.states).toEqual(['idle', 'connecting', 'reconnecting', 'ready']);
  });

  it('4401: the token provider is asked again once; a good token connects, two bad ones close the client', async () => {
    const env = track(await startGateway(), (e) => e.stop());
    const bad = await token('hank', 'a-different-secret-that-is-long-enough-0123456789');
    const good = await env.token('hank');

    const provided: string[] = [];
    const recovering = sdkClient(env.url, {
      token: async () => {
        const value = provided.length === 0 ? bad : good;
        provided.push(value);
        return value;
      },
    });
    const recovered = record(recovering);
    await within(recovering.connect(), 'connect');
    expect(provided).toEqual([bad, good]);
    expect(recovered.disconnects).toEqual([{ code: 4401, reason: 'token_invalid', wasReady: false, attempt: 1, delayMs: 0 }]);

    let calls = 0;
    const failing = sdkClient(env.url, {
      token: () => {
        calls++;
        return bad;
      },
    });
    const outcome = await failing.connect().catch((error: unknown) => error);
    expect((outcome as Error).name).toBe('ClientClosedError');
    expect(failing.state).toBe('closed');
    expect(failing.closeInfo).toEqual({ code: 4401, reason: 'token_invalid' });
    expect(calls).toBe(2);
  });

  it('4403 (origin not allowed): stops at once with the reason surfaced', async () => {
    const env = track(await startGateway({ allowedOrigins: ['https://app.example'] }), (e) => e.stop());
    const clock = new ManualClock();
    const client = sdkClient(env.url, { token: await env.token('ivy'), clock });
    const seen = record(client);
    const outcome = await client.connect().catch((error: unknown) => error);
    expect((outcome as Error).name).toBe('ClientClosedError');
    expect(client.closeInfo).toEqual({ code: 4403, reason: 'origin_not_allowed' });
    expect(seen.states).toEqual(['idle', 'connecting', 'closed']);
    expect(seen.disconnects).toEqual([]);
    await clock.advance(60_000);
    expect(client.state).toBe('closed');
  });
});
