import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { backoffDelay, decideAfterClose, longBackoffDelay } from '../../../client/src/backoff.js';
import {
  AgentwireClient,
  ClientClosedError,
  HistoryResetError,
  RequestError,
  type AgentEvent,
  type ClientOptions,
  type ClientState,
  type HistoryReload,
  type WebSocketLike,
} from '@agentwire/client';
import { ALL_CLIENT_STATES, CLIENT_TRANSITIONS, ClientStateError, ClientStateMachine } from '../../../client/src/state.js';
import { ManualClock } from '../helpers/manualClock.js';

/**
 * Unit tests of the client SDK: the state machine table, the backoff math and close-code
 * table, and the client's behaviour against a scripted in-memory WebSocket (no sockets, time
 * driven by a ManualClock). Reconnects against a real gateway are in clientReconnect.test.ts.
 */

// ---- a scripted WebSocket ----

class FakeSocket implements WebSocketLike {
  static instances: FakeSocket[] = [];
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { readonly data: unknown }) => void) | null = null;
  onclose: ((event: { readonly code: number; readonly reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: Array<Record<string, any>> = [];
  closedWith: { code?: number; reason?: string } | null = null;
  terminated = false;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.instances.push(this);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 2;
  }

  terminate(): void {
    this.terminated = true;
    this.readyState = 3;
  }

  // -- the server side --
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  ready(overrides: Partial<Record<string, unknown>> = {}): void {
    if (this.readyState === 0) this.open();
    this.receive({
      type: 'connection_ready',
      protocol: 'agentwire.v1',
      connection_id: `c${FakeSocket.instances.indexOf(this)}`,
      user_id: 'alice',
      epoch: 'e1',
      last_seq: 0,
      resumed: false,
      replayed: 0,
      heartbeat_ms: 25000,
      server_time: new Date(0).toISOString(),
      ...overrides,
    });
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  fail(message: string): void {
    this.onerror?.({ message });
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: '' });
  }

  /** Outbound frames of one type. */
  framesOf(type: string): Array<Record<string, any>> {
    return this.sent.filter((frame) => frame.type === type);
  }
}

/** Lets the client's async dial (awaiting the token) and promise chains run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

function sockets(): FakeSocket[] {
  return FakeSocket.instances;
}

function last(): FakeSocket {
  const socket = FakeSocket.instances.at(-1);
  if (!socket) throw new Error('no socket dialed');
  return socket;
}

function event(seq: number, type: AgentEvent['type'], runId = 'r1', extra: Record<string, unknown> = {}) {
  return { type, seq, run_id: runId, thread_id: 't1', ts: new Date(0).toISOString(), ...extra };
}

/** A fake history route: records the paths asked for; the test answers each request (oldest first per path) when it wants. */
function pageServer() {
  const waiting = new Map<string, Array<(answer: { status: number; body: unknown }) => void>>();
  const asked: string[] = [];
  const fetch = (url: string) =>
    new Promise<{ status: number; text: () => Promise<string> }>((resolve) => {
      const path = new URL(url).pathname;
      asked.push(path);
      const respond = ({ status, body }: { status: number; body: unknown }) => resolve({ status, text: async () => JSON.stringify(body) });
      waiting.set(path, [...(waiting.get(path) ?? []), respond]);
    });
  // The request leaves after the client's token provider answered: a few turns after the reset.
  const requested = async (path: string) => {
    for (let i = 0; i < 50 && !waiting.get(path)?.length; i++) await turn();
  };
  const answerFor = async (path: string, status: number, body: unknown) => {
    await requested(path);
    const respond = waiting.get(path)?.shift();
    if (!respond) throw new Error(`no request for ${path} is waiting`);
    respond({ status, body });
  };
  return {
    fetch,
    asked,
    answerFor,
    /** Answers the request for thread t1's messages. */
    answer: (status: number, body: unknown) => answerFor('/v1/threads/t1/messages', status, body),
  };
}

/** A client on a manual clock whose history route is a pageServer, connected at epoch E1, seq 0. */
async function connectedWithPages(): Promise<{ pages: ReturnType<typeof pageServer>; client: AgentwireClient; socket: FakeSocket }> {
  clock = new ManualClock();
  const pages = pageServer();
  const client = makeClient({ fetch: pages.fetch });
  const socket = await connected(client, { epoch: 'E1', last_seq: 0 });
  return { pages, client, socket };
}

/** The server restarts the connection (1012); the client redials at once and is answered `ready` (resumed:false unless said). */
async function reconnectedWith(ready: Record<string, unknown>): Promise<FakeSocket> {
  last().serverClose(1012, 'service_restart');
  await turn();
  last().ready({ resumed: false, ...ready });
  return last();
}

/** A page of `threadId` whose newest message is `answer`. */
function page(threadId: string, epoch: string, lastSeq: number, answer: Record<string, unknown>) {
  const user = { id: `u-${answer.run_id as string}`, role: 'user', run_id: answer.run_id, text: 'hi', created_at: new Date(0).toISOString() };
  return { thread_id: threadId, epoch, last_seq: lastSeq, messages: [user, answer], next_cursor: null };
}

function answerOf(runId: string, status: string, text: string, thinking: string[]) {
  const at = new Date(0).toISOString();
  return {
    id: runId,
    role: 'assistant',
    run_id: runId,
    status,
    text,
    thinking,
    tool_calls: [],
    error: null,
    created_at: at,
    completed_at: status === 'running' ? null : at,
  };
}

let clients: AgentwireClient[] = [];
let clock: ManualClock;

function makeClient(options: Partial<ClientOptions> = {}): AgentwireClient {
  const client = new AgentwireClient({
    url: 'ws://gateway.test/ws',
    token: 'T1',
    WebSocket: FakeSocket,
    clock,
    random: () => 0.5,
    minDelayMs: 100,
    maxDelayMs: 1000,
    longDelayMs: 10_000,
    pingIntervalMs: 0,
    idFactory: (() => {
      let n = 0;
      return () => `id${++n}`;
    })(),
    ...options,
  });
  clients.push(client);
  return client;
}

function recordStates(client: AgentwireClient): ClientState[] {
  const states: ClientState[] = [client.state];
  client.on('state', (change) => states.push(change.state));
  return states;
}

async function connected(client: AgentwireClient, ready: Partial<Record<string, unknown>> = {}): Promise<FakeSocket> {
  const promise = client.connect();
  await turn();
  last().ready(ready);
  await promise;
  return last();
}

/**
 * The next dial comes exactly `delayMs` from now: no new socket after `delayMs - 1` ms, one
 * new socket after one more ms.
 */
async function expectDialAfter(delayMs: number): Promise<void> {
  const before = sockets().length;
  await clock.advance(delayMs - 1);
  await turn();
  expect(sockets()).toHaveLength(before);
  await clock.advance(1);
  await turn();
  expect(sockets()).toHaveLength(before + 1);
}

afterEach(() => {
  for (const client of clients) client.close();
  clients = [];
  FakeSocket.instances = [];
});

// ---- pure parts ----

describe('client state machine', () => {
  const expected: Record<ClientState, ClientState[]> = {
    idle: ['connecting', 'closed'],
    connecting: ['ready', 'reconnecting', 'closed'],
    ready: ['reconnecting', 'closed'],
    reconnecting: ['ready', 'closed'],
    closed: [],
  };

  it('has exactly the documented transition table', () => {
    expect(ALL_CLIENT_STATES).toEqual(['idle', 'connecting', 'ready', 'reconnecting', 'closed']);
    for (const from of ALL_CLIENT_STATES) {
      expect([...CLIENT_TRANSITIONS[from]].sort()).toEqual([...expected[from]].sort());
    }
  });

  it('accepts every allowed pair and rejects every other with a typed error naming both states', () => {
    for (const from of ALL_CLIENT_STATES) {
      for (const to of ALL_CLIENT_STATES) {
        const changes: Array<[ClientState, ClientState]> = [];
        const machine = new ClientStateMachine((a, b) => changes.push([a, b]));
        // Walk the machine to `from` along allowed edges.
        const path: Record<ClientState, ClientState[]> = {
          idle: [],
          connecting: ['connecting'],
          ready: ['connecting', 'ready'],
          reconnecting: ['connecting', 'reconnecting'],
          closed: ['closed'],
        };
        for (const step of path[from]) machine.transition(step);
        expect(machine.state).toBe(from);
        changes.length = 0;
        if (expected[from].includes(to)) {
          machine.transition(to);
          expect(machine.state).toBe(to);
          expect(changes).toEqual([[from, to]]);
        } else {
          let error: unknown;
          try {
            machine.transition(to);
          } catch (caught) {
            error = caught;
          }
          expect(error).toBeInstanceOf(ClientStateError);
          expect((error as Error).message).toBe(`invalid transition ${from} -> ${to}`);
          expect(machine.state).toBe(from);
          expect(changes).toEqual([]);
        }
      }
    }
  });
});

describe('backoff', () => {
  const options = { minDelayMs: 500, maxDelayMs: 20_000, longDelayMs: 60_000 };

  it('doubles the jitter ceiling per attempt from 2 x min up to max, floor at min', () => {
    const top = () => 1 - Number.EPSILON;
    expect([0, 1, 2, 3, 4, 5, 6, 10, 1000].map((a) => backoffDelay(a, options, () => 0))).toEqual([500, 500, 500, 500, 500, 500, 500, 500, 500]);
    expect([0, 1, 2, 3, 4, 5, 6, 10, 1000].map((a) => backoffDelay(a, options, top))).toEqual([999, 1999, 3999, 7999, 15999, 19999, 19999, 19999, 19999]);
    expect(backoffDelay(0, options, () => 0.5)).toBe(750);
    expect(backoffDelay(3, options, () => 0.25)).toBe(500 + 0.25 * 7500);
  });

  it('is uniform over [min, min(max, min*2^(attempt+1))] and monotone in the random draw', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 60 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 0, max: 100_000 }),
        (attempt, r1, r2, min, extra) => {
          const opts = { minDelayMs: min, maxDelayMs: min + extra, longDelayMs: 1 };
          const ceiling = Math.min(min + extra, min * 2 ** (attempt + 1));
          const d1 = backoffDelay(attempt, opts, () => r1);
          const d2 = backoffDelay(attempt, opts, () => r2);
          expect(d1).toBeGreaterThanOrEqual(min);
          expect(d1).toBeLessThanOrEqual(ceiling);
          expect(Number.isInteger(d1)).toBe(true);
          if (r1 <= r2) expect(d1).toBeLessThanOrEqual(d2);
        },
      ),
    );
  });

  it('long backoff (4429) lies in [long/2, long]', () => {
    expect(longBackoffDelay(options, () => 0)).toBe(30_000);
    expect(longBackoffDelay(options, () => 0.5)).toBe(45_000);
    expect(longBackoffDelay(options, () => 1 - Number.EPSILON)).toBe(59_999);
  });

  it('maps every close code of the contract to its reaction', () => {
    const fresh = { attempt: 0, authRetried: false };
    const table: Array<[number, string]> = [
      [1000, 'stop'],
      [1006, 'backoff'],
      [1008, 'stop'],
      [1009, 'stop'],
      [1011, 'backoff'],
      [1012, 'now'],
      [1013, 'backoff'],
      [4008, 'backoff'],
      [4401, 'now'],
      [4403, 'stop'],
      [4408, 'backoff'],
      [4429, 'long'],
    ];
    expect(table.map(([code]) => [code, decideAfterClose(code, fresh).action])).toEqual(table);
    expect(decideAfterClose(4401, { attempt: 1, authRetried: true }).action).toBe('stop');
    expect(decideAfterClose(1012, { attempt: 2, authRetried: false }).action).toBe('backoff');
  });
});

// ---- the client against a scripted socket ----

describe('client: connecting and auth', () => {
  it('offers agentwire.v1 + jwt.<token>, goes idle -> connecting -> ready and resolves connect()', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const states = recordStates(client);
    const ready = client.connect();
    expect(client.state).toBe('connecting');
    await turn();
    expect(sockets()).toHaveLength(1);
    expect(last().url).toBe('ws://gateway.test/ws');
    expect(last().protocols).toEqual(['agentwire.v1', 'jwt.T1']);
    last().ready({ last_seq: 7, epoch: 'ep' });
    const frame = await ready;
    expect(frame).toMatchObject({ type: 'connection_ready', last_seq: 7, epoch: 'ep' });
    expect(states).toEqual(['idle', 'connecting', 'ready']);
    expect(client.position).toEqual({ epoch: 'ep', lastSeq: 7 });
  });

  it('calls the token provider on every dial and once more after a 4401, then gives up', async () => {
    clock = new ManualClock();
    const tokens = ['A', 'B', 'C', 'D'];
    let calls = 0;
    const client = makeClient({ token: async () => tokens[calls++]! });
    const states = recordStates(client);
    await connected(client, { epoch: 'e1', last_seq: 0 });
    expect(last().protocols).toEqual(['agentwire.v1', 'jwt.A']);

    // A lost connection: the next dial asks for a token again.
    last().serverClose(1011, 'server_fault');
    await clock.advance(1000);
    await turn();
    expect(sockets()).toHaveLength(2);
    expect(last().protocols).toEqual(['agentwire.v1', 'jwt.B']);

    // 4401: one immediate retry with a fresh token ...
    last().open();
    last().serverClose(4401, 'token_expired');
    await turn();
    expect(sockets()).toHaveLength(3);
    expect(last().protocols).toEqual(['agentwire.v1', 'jwt.C']);
    const pending = client.send('t1', 'hello').catch((error: unknown) => error);
    // ... and a second 4401 in a row closes the client with the reason surfaced.
    last().open();
    last().serverClose(4401, 'token_invalid');
    await turn();
    expect(sockets()).toHaveLength(3);
    expect(calls).toBe(3);
    expect(client.state).toBe('closed');
    expect(client.closeInfo).toEqual({ code: 4401, reason: 'token_invalid' });
    expect(await pending).toBeInstanceOf(ClientClosedError);
    expect(states).toEqual(['idle', 'connecting', 'ready', 'reconnecting', 'closed']);
  });

  it('a 4401 after a successful re-auth gets its fresh-token retry again', async () => {
    clock = new ManualClock();
    const client = makeClient();
    await connected(client);
    last().serverClose(4401, 'token_expired');
    await turn();
    last().ready({ resumed: true });
    expect(client.state).toBe('ready');
    last().serverClose(4401, 'token_expired');
    await turn();
    expect(sockets()).toHaveLength(3);
    expect(client.state).toBe('reconnecting');
  });

  it.each([
    [4403, 'origin_not_allowed'],
    [1008, 'inbox_overflow'],
    [1009, 'message too big'],
    [1000, 'normal'],
  ])('stops on %i and surfaces the reason', async (code, reason) => {
    clock = new ManualClock();
    const client = makeClient();
    const closed: unknown[] = [];
    client.on('closed', (info) => closed.push(info));
    await connected(client);
    last().serverClose(code, reason);
    await clock.advance(100_000);
    await turn();
    expect(sockets()).toHaveLength(1);
    expect(client.state).toBe('closed');
    expect(client.closeInfo).toEqual({ code, reason });
    expect(closed).toEqual([{ code, reason }]);
    await expect(client.connect()).rejects.toBeInstanceOf(ClientClosedError);
    await expect(client.send('t1', 'x')).rejects.toBeInstanceOf(ClientClosedError);
  });

  it('redials at once after 1012, resuming with last_seq and epoch on the URL', async () => {
    clock = new ManualClock();
    const client = makeClient();
    await connected(client, { epoch: 'ep-1', last_seq: 4 });
    last().receive(event(5, 'agent_thinking', 'r9', { text: 'x' }));
    last().serverClose(1012, 'service_restart');
    await turn();
    expect(sockets()).toHaveLength(2);
    expect(last().url).toBe('ws://gateway.test/ws?last_seq=5&epoch=ep-1');
    // The immediate redial fails: from now on, backoff.
    last().fail('connect ECONNREFUSED');
    await turn();
    expect(sockets()).toHaveLength(2);
    await expectDialAfter(250);
    expect(sockets()).toHaveLength(3);
  });

  it('backs off with jitter (injected random), grows per failure and resets after ready', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const disconnects: Array<{ code: number; attempt: number; delayMs: number; wasReady: boolean; error?: string }> = [];
    client.on('disconnect', (info) => disconnects.push(info));
    await connected(client);
    last().serverClose(1011, 'server_fault');
    // attempt 0: 100 + 0.5 * (200 - 100) = 150
    await expectDialAfter(150);
    expect(sockets()).toHaveLength(2);
    last().fail('connect ECONNREFUSED 127.0.0.1:1');
    // attempt 1: 100 + 0.5 * (400 - 100) = 250
    await expectDialAfter(250);
    expect(sockets()).toHaveLength(3);
    last().ready({ resumed: true });
    last().serverClose(1013, 'try_again_later');
    expect(disconnects).toEqual([
      { code: 1011, reason: 'server_fault', wasReady: true, attempt: 1, delayMs: 150 },
      { code: 1006, reason: '', error: 'connect ECONNREFUSED 127.0.0.1:1', wasReady: false, attempt: 2, delayMs: 250 },
      { code: 1013, reason: 'try_again_later', wasReady: true, attempt: 1, delayMs: 150 },
    ]);
  });

  it('uses the long backoff after 4429', async () => {
    clock = new ManualClock();
    const client = makeClient();
    await connected(client);
    last().serverClose(4429, 'too_many_connections');
    await expectDialAfter(7500);
    expect(sockets()).toHaveLength(2);
  });

  it('gives up after maxRetries consecutive failures', async () => {
    clock = new ManualClock();
    const client = makeClient({ maxRetries: 2 });
    const ready = client.connect().catch((error: unknown) => error);
    await turn();
    last().fail('refused');
    await clock.advance(1000);
    await turn();
    last().fail('refused');
    await clock.advance(1000);
    await turn();
    last().fail('refused again');
    await clock.advance(10_000);
    await turn();
    expect(sockets()).toHaveLength(3);
    expect(client.state).toBe('closed');
    expect(client.closeInfo).toEqual({ code: 1006, reason: '', error: 'refused again', retriesExhausted: true });
    expect(await ready).toBeInstanceOf(ClientClosedError);
  });

  it('drops a dial that does not reach connection_ready within connectTimeoutMs', async () => {
    clock = new ManualClock();
    const client = makeClient({ connectTimeoutMs: 300 });
    void client.connect().catch(() => {});
    await turn();
    last().open();
    await clock.advance(299);
    expect(last().terminated).toBe(false);
    await clock.advance(1);
    expect(sockets()[0]!.terminated).toBe(true);
    expect(client.state).toBe('reconnecting');
    await clock.advance(150);
    await turn();
    expect(sockets()).toHaveLength(2);
  });

  it('retries with backoff when the token provider fails', async () => {
    clock = new ManualClock();
    let calls = 0;
    const client = makeClient({
      token: async () => {
        if (++calls === 1) throw new Error('auth server down');
        return 'OK';
      },
    });
    const errors: unknown[] = [];
    client.on('token_error', ({ error }) => errors.push((error as Error).message));
    void client.connect().catch(() => {});
    await turn();
    expect(sockets()).toHaveLength(0);
    expect(errors).toEqual(['auth server down']);
    expect(client.state).toBe('reconnecting');
    await clock.advance(150);
    await turn();
    expect(last().protocols).toEqual(['agentwire.v1', 'jwt.OK']);
  });
});

describe('client: events, dedupe, gaps and resume', () => {
  it('delivers each seq once in order, dropping duplicates', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const seen: number[] = [];
    const typed: number[] = [];
    client.on('event', (e) => seen.push(e.seq));
    client.on('agent_thinking', (e) => typed.push(e.seq));
    const socket = await connected(client, { last_seq: 0 });
    for (const seq of [1, 2, 2, 1, 3]) socket.receive(event(seq, 'agent_thinking', 'r1', { text: `s${seq}` }));
    expect(seen).toEqual([1, 2, 3]);
    expect(typed).toEqual([1, 2, 3]);
    expect(client.duplicatesDropped).toBe(2);
    expect(client.position).toEqual({ epoch: 'e1', lastSeq: 3 });
  });

  it('a seq gap while connected drops the socket and resumes from the last seq seen', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const seen: number[] = [];
    const gaps: unknown[] = [];
    client.on('event', (e) => seen.push(e.seq));
    client.on('gap', (gap) => gaps.push(gap));
    const socket = await connected(client, { epoch: 'E', last_seq: 10 });
    socket.receive(event(11, 'agent_thinking', 'r1', { text: 'a' }));
    socket.receive(event(13, 'agent_thinking', 'r1', { text: 'c' }));
    expect(gaps).toEqual([{ expected: 12, received: 13 }]);
    expect(socket.terminated).toBe(true);
    expect(client.state).toBe('reconnecting');
    // A late frame of the dropped socket is ignored.
    socket.receive(event(12, 'agent_thinking', 'r1', { text: 'late' }));
    await turn();
    expect(sockets()).toHaveLength(2);
    expect(last().url).toBe('ws://gateway.test/ws?last_seq=11&epoch=E');
    last().ready({ epoch: 'E', last_seq: 13, resumed: true, replayed: 2 });
    last().receive(event(12, 'agent_thinking', 'r1', { text: 'b' }));
    last().receive(event(13, 'agent_thinking', 'r1', { text: 'c' }));
    expect(seen).toEqual([11, 12, 13]);
  });

  it('surfaces resumed:false after having a position as history_reset, and fails the runs in flight it cannot reload', async () => {
    clock = new ManualClock();
    const pages = pageServer();
    const client = makeClient({ fetch: pages.fetch });
    const resets: unknown[] = [];
    client.on('history_reset', ({ ready: _ready, ...reset }) => resets.push(reset));
    // The first connection is not a reset.
    const socket = await connected(client, { epoch: 'E1', last_seq: 0 });
    const ack = client.send('t1', 'hi');
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'started' });
    await ack;
    const iterator = client.run('r1');
    // A run this client never saw an ack or event of: its thread is unknown.
    const unknown = client.run('r9');
    socket.receive(event(1, 'agent_started', 'r1', { message_id: 'id1', text: 'hi' }));
    expect((await iterator.next()).value).toMatchObject({ seq: 1, type: 'agent_started' });
    await reconnectedWith({ epoch: 'E2', last_seq: 0 });
    expect(resets).toEqual([{ previousEpoch: 'E1', previousLastSeq: 1, epoch: 'E2', lastSeq: 0 }]);
    await expect(unknown.next()).rejects.toMatchObject({ name: 'HistoryResetError', runId: 'r9', reason: expect.stringMatching(/thread is not known/) });
    await pages.answer(404, { error: 'not_found' });
    expect(pages.asked).toEqual(['/v1/threads/t1/messages']);
    const failure = await iterator.next().catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(HistoryResetError);
    expect(failure).toMatchObject({ runId: 'r1', reason: expect.stringMatching(/GET thread t1's messages: .*404/) });
    expect(client.position).toEqual({ epoch: 'E2', lastSeq: 0 });
    const seen: number[] = [];
    client.on('event', (e) => seen.push(e.seq));
    last().receive(event(1, 'agent_started', 'r2', { message_id: 'x', text: 'x' }));
    expect(seen).toEqual([1]);
  });

  it('after resumed:false a run iterator reloads its answer through the seam and goes on after the page, no fragment twice', async () => {
    const { pages, client, socket } = await connectedWithPages();
    const run = client.ask('t1', 'hi');
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'started' });
    socket.receive(event(1, 'agent_started', 'r1', { message_id: 'id1', text: 'hi' }));
    socket.receive(event(2, 'agent_text_delta', 'r1', { text: 'Hel' }));
    const yielded: number[] = [];
    const texts: string[] = [];
    const take = async () => {
      const result = await run.events.next();
      if (!result.done) {
        yielded.push(result.value.seq);
        texts.push(run.events.text);
      }
      return result;
    };
    await take();
    await take();
    expect(run.events.text).toBe('Hel');
    // The connection drops; meanwhile the log went past what the server still holds.
    await reconnectedWith({ epoch: 'E1', last_seq: 5 });
    const nextOne = take();
    // Arrive while the page loads: the page includes the first (not yielded again), not the second.
    last().receive(event(6, 'agent_text_delta', 'r1', { text: 'lo, ' }));
    last().receive(event(7, 'agent_text_delta', 'r1', { text: 'wor' }));
    await pages.answer(200, page('t1', 'E1', 6, answerOf('r1', 'running', 'Hello, ', ['mulling'])));
    expect(pages.asked).toEqual(['/v1/threads/t1/messages']);
    // After the page: yielded.
    last().receive(event(8, 'agent_text_delta', 'r1', { text: 'ld' }));
    await nextOne;
    expect(run.events.text).toBe('Hello, wor');
    expect(run.events.reloaded).toMatchObject({ run_id: 'r1', status: 'running', text: 'Hello, ' });
    expect(run.events.thinking).toBe('mulling');
    last().receive(event(9, 'agent_completed', 'r1', { status: 'completed', text: 'Hello, world' }));
    expect((await take()).done).toBe(false);
    expect((await take()).done).toBe(false);
    expect((await take()).done).toBe(true);
    expect(yielded).toEqual([1, 2, 7, 8, 9]);
    expect(texts).toEqual(['', 'Hel', 'Hello, wor', 'Hello, world', 'Hello, world']);
  });

  it('a page short of the position the connection resumed at is fetched again on the clock until it reaches it, then given up', async () => {
    const { pages, client, socket } = await connectedWithPages();
    const lagging = client.ask('t1', 'one');
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'started' });
    await lagging.ack;
    await reconnectedWith({ epoch: 'E1', last_seq: 9 });
    // An archive one batch behind the log: seq 7 of 9.
    await pages.answer(200, page('t1', 'E1', 7, answerOf('r1', 'running', 'so far', [])));
    await clock.advance(50);
    await pages.answer(200, page('t1', 'E1', 9, answerOf('r1', 'completed', 'so far, and done', [])));
    expect(await lagging.events.next()).toEqual({ done: true, value: undefined });
    expect(lagging.events.text).toBe('so far, and done');
    expect(pages.asked).toEqual(['/v1/threads/t1/messages', '/v1/threads/t1/messages']);

    // A store that never catches up: after the last delay, the run fails.
    const stuck = client.ask('t1', 'two');
    last().receive({ type: 'ack', id: 'id2', run_id: 'r2', thread_id: 't1', status: 'started' });
    await stuck.ack;
    await reconnectedWith({ epoch: 'E1', last_seq: 20 });
    for (const delayMs of [50, 100, 200, 400, 800, 1600, 0]) {
      await pages.answer(200, page('t1', 'E1', 12, answerOf('r2', 'running', 'behind', [])));
      await clock.advance(delayMs);
    }
    await expect(stuck.events.next()).rejects.toMatchObject({
      name: 'HistoryResetError',
      reason: expect.stringMatching(/reaches seq 12, short of the connection's 20/),
    });
    expect(pages.asked).toHaveLength(2 + 7);
  });

  it('reloadThreads: a page short of the position the connection resumed at is not taken; the one that reaches it is', async () => {
    clock = new ManualClock();
    const pages = pageServer();
    const client = makeClient({ fetch: pages.fetch, reloadThreads: () => ['t1'] });
    const reloads: HistoryReload[] = [];
    client.on('history_reloaded', (reload) => reloads.push(reload));
    await connected(client, { epoch: 'E1', last_seq: 3 });
    await reconnectedWith({ epoch: 'E1', last_seq: 9 });
    // Events 4 to 9 never arrive live: a page up to 7 would leave 8 and 9 out.
    await pages.answer(200, page('t1', 'E1', 7, answerOf('r1', 'running', 'so far', [])));
    await turn();
    expect(reloads).toEqual([]);
    await clock.advance(50);
    await pages.answer(200, page('t1', 'E1', 9, answerOf('r1', 'completed', 'so far, and done', [])));
    await turn();
    expect(reloads.map((reload) => reload.threads.map((thread) => thread.page?.last_seq))).toEqual([[9]]);
  });

  it('after resumed:false: a run that ended meanwhile ends its iterator; a queued one not in the page goes on live; a started one not in the page fails', async () => {
    const { pages, client, socket } = await connectedWithPages();
    const ended = client.ask('t1', 'one');
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'started' });
    const queued = client.ask('t2', 'two');
    socket.receive({ type: 'ack', id: 'id2', run_id: 'r2', thread_id: 't2', status: 'queued' });
    const lost = client.ask('t3', 'three');
    socket.receive({ type: 'ack', id: 'id3', run_id: 'r3', thread_id: 't3', status: 'started' });
    socket.receive(event(1, 'agent_started', 'r3', { thread_id: 't3', message_id: 'id3', text: 'three' }));
    await Promise.all([ended.ack, queued.ack, lost.ack]);
    await reconnectedWith({ epoch: 'E1', last_seq: 9 });
    await pages.answerFor('/v1/threads/t1/messages', 200, page('t1', 'E1', 9, answerOf('r1', 'completed', 'the whole answer', [])));
    await pages.answerFor('/v1/threads/t2/messages', 200, page('t2', 'E1', 9, answerOf('r0', 'completed', 'an older run', [])));
    await pages.answerFor('/v1/threads/t3/messages', 200, page('t3', 'E1', 9, answerOf('r0', 'completed', 'an older run', [])));
    // One request per thread.
    expect(pages.asked.sort()).toEqual(['/v1/threads/t1/messages', '/v1/threads/t2/messages', '/v1/threads/t3/messages']);
    expect(await ended.events.next()).toEqual({ done: true, value: undefined });
    expect(ended.events.text).toBe('the whole answer');
    expect(ended.events.reloaded).toMatchObject({ status: 'completed' });
    // Seen starting before the reset, and not in the page: its start is gone from the history.
    expect((await lost.events.next()).value).toMatchObject({ seq: 1, type: 'agent_started' });
    await expect(lost.events.next()).rejects.toMatchObject({ name: 'HistoryResetError', runId: 'r3', reason: expect.stringMatching(/does not hold it/) });
    // Not started by the page: all of it comes live.
    last().receive(event(10, 'agent_started', 'r2', { thread_id: 't2', message_id: 'id2', text: 'two' }));
    last().receive(event(11, 'agent_completed', 'r2', { thread_id: 't2', status: 'completed', text: 'done' }));
    const seqs: number[] = [];
    for await (const e of queued.events) seqs.push(e.seq);
    expect(seqs).toEqual([10, 11]);
    expect(queued.events.reloaded).toBeNull();
  });

  it('a second resumed:false during a reload supersedes it: the first page, answered late, is not applied', async () => {
    const { pages, client, socket } = await connectedWithPages();
    const run = client.ask('t1', 'hi');
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'started' });
    socket.receive(event(1, 'agent_started', 'r1', { message_id: 'id1', text: 'hi' }));
    socket.receive(event(2, 'agent_text_delta', 'r1', { text: 'a ' }));
    expect((await run.events.next()).value).toMatchObject({ seq: 1 });
    expect((await run.events.next()).value).toMatchObject({ seq: 2 });
    await reconnectedWith({ epoch: 'E1', last_seq: 5 });
    await turn();
    await reconnectedWith({ epoch: 'E1', last_seq: 8 });
    const rest = (async () => {
      const seqs: number[] = [];
      for await (const e of run.events) seqs.push(e.seq);
      return seqs;
    })();
    // The first reload's page comes last but one: superseded, it is ignored.
    await pages.answer(200, page('t1', 'E1', 5, answerOf('r1', 'running', 'a b ', [])));
    last().receive(event(9, 'agent_text_delta', 'r1', { text: 'z' }));
    await pages.answer(200, page('t1', 'E1', 8, answerOf('r1', 'running', 'a b c ', [])));
    last().receive(event(10, 'agent_completed', 'r1', { status: 'completed', text: 'a b c z' }));
    expect(await rest).toEqual([9, 10]);
    expect(run.events.reloaded).toMatchObject({ text: 'a b c ' });
    expect(pages.asked).toEqual(['/v1/threads/t1/messages', '/v1/threads/t1/messages']);
  });

  it('a message acked only after a connection that could not resume has its run reloaded too', async () => {
    const { pages, client } = await connectedWithPages();
    const run = client.ask('t1', 'hi');
    // The connection drops before the ack; the run starts and streams meanwhile.
    await reconnectedWith({ epoch: 'E1', last_seq: 9 });
    // The message is re-sent with its id, and the server answers that it has it.
    expect(
      last()
        .sent.filter((frame) => frame.type === 'user_message')
        .map((frame) => frame.id),
    ).toEqual(['id1']);
    last().receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'duplicate' });
    await run.ack;
    await pages.answer(200, page('t1', 'E1', 9, answerOf('r1', 'running', 'so far', [])));
    last().receive(event(10, 'agent_text_delta', 'r1', { text: ', and more' }));
    last().receive(event(11, 'agent_completed', 'r1', { status: 'completed', text: 'so far, and more' }));
    const seqs: number[] = [];
    for await (const e of run.events) seqs.push(e.seq);
    expect(seqs).toEqual([10, 11]);
    expect(run.events.reloaded).toMatchObject({ run_id: 'r1', text: 'so far' });
    expect(run.events.text).toBe('so far, and more');
  });

  it('resumes from a saved position given in options, and resumed:true keeps it', async () => {
    clock = new ManualClock();
    const client = makeClient({ resume: { lastSeq: 42, epoch: 'saved' } });
    const resets: unknown[] = [];
    client.on('history_reset', (reset) => resets.push(reset));
    void client.connect().catch(() => {});
    await turn();
    expect(last().url).toBe('ws://gateway.test/ws?last_seq=42&epoch=saved');
    last().ready({ epoch: 'saved', last_seq: 45, resumed: true, replayed: 3 });
    expect(client.position).toEqual({ epoch: 'saved', lastSeq: 42 });
    const seen: number[] = [];
    client.on('event', (e) => seen.push(e.seq));
    for (const seq of [43, 44, 45]) last().receive(event(seq, 'agent_thinking', 'r', { text: '' }));
    expect(seen).toEqual([43, 44, 45]);
    expect(resets).toEqual([]);
  });
});

describe('client: send, cancel and run streams', () => {
  it('queues a message until ready, re-sends it with the same id after a drop, and resolves with the ack', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const ack = client.send('t1', 'hello');
    void client.connect().catch(() => {});
    await turn();
    const first = last();
    expect(first.framesOf('user_message')).toEqual([]);
    first.ready();
    expect(first.framesOf('user_message')).toEqual([{ type: 'user_message', id: 'id1', thread_id: 't1', text: 'hello' }]);
    // Dropped before the ack.
    first.serverClose(1006, '');
    await clock.advance(150);
    await turn();
    const second = last();
    expect(second).not.toBe(first);
    second.ready({ resumed: true });
    expect(second.framesOf('user_message')).toEqual([{ type: 'user_message', id: 'id1', thread_id: 't1', text: 'hello' }]);
    expect(client.pendingCount).toBe(1);
    second.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'duplicate' });
    await expect(ack).resolves.toEqual({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'duplicate' });
    expect(client.pendingCount).toBe(0);
    // Acked: not sent again on the next connection.
    second.serverClose(1012, 'service_restart');
    await turn();
    last().ready({ resumed: true });
    expect(last().framesOf('user_message')).toEqual([]);
  });

  it('writes a message sent from a ready listener once per connection', async () => {
    clock = new ManualClock();
    const client = makeClient();
    let sentFromListener = false;
    client.on('ready', () => {
      if (sentFromListener) return;
      sentFromListener = true;
      void client.send('t1', 'from listener').catch(() => {});
    });
    const socket = await connected(client);
    expect(socket.framesOf('user_message').map((f) => f.id)).toEqual(['id1']);
  });

  it('rejects a send answered with an error frame, with the code', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const socket = await connected(client);
    const serverErrors: unknown[] = [];
    client.on('server_error', (frame) => serverErrors.push(frame.code));
    const ack = client.send('t1', 'hi');
    socket.receive({ type: 'error', code: 'thread_busy', message: 'thread t1 has a run in progress', ref: 'id1' });
    const error = await ack.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RequestError);
    expect((error as RequestError).code).toBe('thread_busy');
    socket.receive({ type: 'error', code: 'invalid_json', message: 'x', ref: null });
    expect(serverErrors).toEqual(['invalid_json']);
    expect(client.pendingCount).toBe(0);
  });

  it('cancel sends a cancel frame and resolves with the cancelling ack', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const socket = await connected(client);
    const ack = client.cancel('r7');
    expect(socket.framesOf('cancel')).toEqual([{ type: 'cancel', id: 'id1', run_id: 'r7' }]);
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r7', thread_id: 't1', status: 'cancelling' });
    await expect(ack).resolves.toMatchObject({ status: 'cancelling', run_id: 'r7' });
  });

  it("run() yields a run's events in order (buffered ones first) and ends after the terminal event", async () => {
    clock = new ManualClock();
    const client = makeClient();
    const socket = await connected(client);
    const { ack, events } = client.ask('t1', 'hi');
    // Events may arrive before the ack (a duplicate after a reconnect): matched by message_id.
    socket.receive(event(1, 'agent_started', 'r1', { message_id: 'id1', text: 'hi' }));
    socket.receive(event(2, 'agent_started', 'other', { message_id: 'zz', text: 'x' }));
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'duplicate' });
    socket.receive(event(3, 'agent_thinking', 'r1', { text: 'a' }));
    await ack;
    socket.receive(event(4, 'agent_thinking', 'other', { text: 'b' }));
    socket.receive(event(5, 'agent_completed', 'r1', { status: 'completed', text: 'done' }));
    socket.receive(event(6, 'agent_thinking', 'r1', { text: 'never' }));
    const seqs: number[] = [];
    for await (const e of events) seqs.push(e.seq);
    expect(seqs).toEqual([1, 3, 5]);
    // A second iterator over the same finished run replays it.
    const again: number[] = [];
    for await (const e of client.run('r1')) again.push(e.seq);
    expect(again).toEqual([1, 3, 5]);
  });

  it('the run iterator yields deltas as they arrive and keeps the answer (and reasoning) so far in text', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const socket = await connected(client);
    const run = client.ask('t1', 'hi');
    socket.receive({ type: 'ack', id: 'id1', run_id: 'r1', thread_id: 't1', status: 'started' });
    socket.receive(event(1, 'agent_started', 'r1', { message_id: 'id1', text: 'hi' }));
    const seen: Array<[string, string, string]> = [];
    const reading = (async () => {
      for await (const e of run.events) seen.push([e.type, run.events.text, run.events.thinking]);
    })();
    expect(run.events.text).toBe('');
    const step = async (frame: Record<string, unknown>, count: number) => {
      socket.receive(frame);
      while (seen.length < count) await turn();
    };
    await step(event(2, 'agent_thinking_delta', 'r1', { text: 'Let me ' }), 2);
    await step(event(3, 'agent_thinking_delta', 'r1', { text: 'see.' }), 3);
    await step(event(4, 'agent_text_delta', 'r1', { text: 'Hello' }), 4);
    // Each delta is yielded as it arrives, before the next exists.
    expect(seen.at(-1)).toEqual(['agent_text_delta', 'Hello', 'Let me see.']);
    await step(event(5, 'agent_text_delta', 'r1', { text: ', world' }), 5);
    await step(event(6, 'agent_completed', 'r1', { status: 'completed', text: 'Hello, world' }), 6);
    await reading;
    expect(seen).toEqual([
      ['agent_started', '', ''],
      ['agent_thinking_delta', '', 'Let me '],
      ['agent_thinking_delta', '', 'Let me see.'],
      ['agent_text_delta', 'Hello', 'Let me see.'],
      ['agent_text_delta', 'Hello, world', 'Let me see.'],
      ['agent_completed', 'Hello, world', 'Let me see.'],
    ]);
    // A second iterator over the finished run keeps its own text from the start.
    const again = client.run('r1');
    expect(again.text).toBe('');
    for await (const e of again) void e;
    expect(again.text).toBe('Hello, world');
  });

  it('close() closes with 1000, rejects pending requests and ends run iterators with ClientClosedError', async () => {
    clock = new ManualClock();
    const client = makeClient();
    const socket = await connected(client);
    const states = recordStates(client);
    const ack = client.send('t1', 'hi');
    const iterator = client.run('r1');
    const next = iterator.next();
    client.close();
    expect(socket.closedWith).toEqual({ code: 1000, reason: 'client_closed' });
    expect(client.state).toBe('closed');
    expect(states).toEqual(['ready', 'closed']);
    await expect(ack).rejects.toBeInstanceOf(ClientClosedError);
    await expect(next).rejects.toBeInstanceOf(ClientClosedError);
    // No dial happens later.
    socket.serverClose(1000, 'normal');
    await clock.advance(100_000);
    await turn();
    expect(sockets()).toHaveLength(1);
  });

  it('a throwing listener is reported and does not break the client', async () => {
    clock = new ManualClock();
    const reported: string[] = [];
    const client = makeClient({ onListenerError: (error, name) => reported.push(`${name}: ${(error as Error).message}`) });
    client.on('event', () => {
      throw new Error('boom');
    });
    const seen: number[] = [];
    client.on('event', (e) => seen.push(e.seq));
    const socket = await connected(client);
    socket.receive(event(1, 'agent_thinking', 'r', { text: '' }));
    socket.receive(event(2, 'agent_thinking', 'r', { text: '' }));
    expect(seen).toEqual([1, 2]);
    expect(reported).toEqual(['event: boom', 'event: boom']);
  });
});

describe('client: watchdog', () => {
  it('pings an idle socket, keeps it when a frame answers, drops it when nothing does', async () => {
    clock = new ManualClock();
    const client = makeClient({ pingIntervalMs: 1000, pongTimeoutMs: 500 });
    const watchdog: unknown[] = [];
    client.on('watchdog', (info) => watchdog.push(info));
    const socket = await connected(client);
    await clock.advance(999);
    expect(socket.framesOf('ping')).toEqual([]);
    await clock.advance(1);
    expect(socket.framesOf('ping')).toEqual([{ type: 'ping', id: 'watchdog-1' }]);
    await clock.advance(400);
    socket.receive({ type: 'pong', id: 'watchdog-1', server_time: new Date(0).toISOString() });
    await clock.advance(500);
    expect(socket.terminated).toBe(false);
    // Any frame counts as life: an event 900 ms later pushes the next ping out.
    await clock.advance(400);
    socket.receive(event(1, 'agent_thinking', 'r', { text: '' }));
    await clock.advance(999);
    expect(socket.framesOf('ping')).toHaveLength(1);
    await clock.advance(1);
    expect(socket.framesOf('ping')).toHaveLength(2);
    // Now the socket is dead: no frame within pongTimeoutMs.
    await clock.advance(499);
    expect(socket.terminated).toBe(false);
    await clock.advance(1);
    expect(socket.terminated).toBe(true);
    expect(watchdog).toEqual([{ pingSentAt: 3300, lastFrameAt: 2300 }]);
    await turn();
    expect(sockets()).toHaveLength(2);
    expect(last().url).toBe('ws://gateway.test/ws?last_seq=1&epoch=e1');
  });
});

describe('client: environments', () => {
  it('bundles for the browser without ws or any node: module', async () => {
    const esbuild = await import('esbuild');
    const result = await esbuild.build({
      entryPoints: ['packages/client/src/index.ts'],
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    const inputs = Object.keys(result.metafile.inputs).sort();
    // The client's own files, and @agentwire/protocol as built (its clock and wire constants).
    expect(inputs.filter((input) => !input.startsWith('packages/protocol/dist/'))).toEqual([
      'packages/client/src/backoff.ts',
      'packages/client/src/client.ts',
      'packages/client/src/history.ts',
      'packages/client/src/historyAnswers.ts',
      'packages/client/src/index.ts',
      'packages/client/src/state.ts',
      'packages/client/src/tokenRefresh.ts',
    ]);
    expect(inputs.filter((input) => input.startsWith('packages/protocol/dist/'))).not.toEqual([]);
    expect(result.outputFiles[0]!.text).not.toMatch(/node:|require\(|from "ws"|import\("ws"\)/);
  });

  // Which WebSocket the client picks without options.WebSocket: clientWebSocket.test.ts.
});
