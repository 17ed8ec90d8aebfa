/**
 * Interleaving exploration with fast-check's scheduler (PROTOCOL.md sections 4 and 7).
 *
 * Every engine here is a ScheduledEngine: each engine request, each reply and each live
 * notification is a task that fast-check's scheduler releases in an order it picks (live
 * notifications may arrive out of seq order), so connect, auth, frame arrival, close, appends
 * and subscription resolution of 1-3 users interleave differently in every run. After each run
 * the test waits for quiescence (every run ended, every answer and event arrived) and checks:
 *  - no invalid lifecycle transition, no fault, no warning logged, the server closed nothing;
 *  - connection_ready is a connection's first frame and no answer precedes it (no frame is
 *    processed before PROCESSING_READY); every frame of a connection that stays open is
 *    answered, in the order sent (none lost or reordered); a closed one got a prefix of them;
 *  - each connection gets its user's events in seq order right after connection_ready's
 *    position, without gap or duplicate, each identical to its user's log entry (so no event
 *    crosses users), up to the log's head when it stays open;
 *  - every run of every log answers a message its user sent, starts with agent_started and
 *    ends with exactly one terminal event; runs on one thread never overlap; one run per id.
 *
 * Replaying a failure: fast-check prints the failing case's `seed` and `path`, e.g.
 *   { seed: 123, path: "45:2:1", endOnFailure: true }
 * Run it again with
 *   AGENTWIRE_FC_SEED=123 AGENTWIRE_FC_PATH=45:2:1 npx vitest run test/interleavings.test.ts -t '<test name>'
 * The fake-socket properties replay exactly. The real-socket property replays the same steps and
 * scheduler choices, but socket I/O is not under the scheduler, so its timing may differ.
 */
import { EventEmitter } from 'node:events';
import { isDeepStrictEqual } from 'node:util';
import fc, { type AsyncCommand, type Command, type Scheduler } from 'fast-check';
import { pino, type Logger } from 'pino';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import type { TokenVerifier } from '../../src/auth/index.js';
import { CoordinatorRegistry } from '../../src/coordination/index.js';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { ConnectionLifecycle, ConnectionState, StateTransitionError, type LifecycleObserver } from '../../src/lifecycle/index.js';
import { GatewayMetrics } from '../../src/observability/index.js';
import type { LogEntry } from '@agentwire/protocol';
import { createDemoAgent, RunManager } from '../../src/runs/index.js';
import { ByteBudget } from '../../src/transport/byteBudget.js';
import { corkForTick } from '../../src/cork.js';
import { Connection, type ConnectionContext } from '../../src/transport/connection.js';
import { fcParams } from '../helpers/fastCheck.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { ManualClock } from '../helpers/manualClock.js';
import { runProblem, TERMINAL_TYPES } from '../helpers/runInvariants.js';
import { ScheduledEngine } from '../helpers/scheduledEngine.js';
import { TestClient, type Frame } from '../helpers/wsClient.js';

const NUM_RUNS = 200;
/** Replaying one reported case: the checks that the whole exploration was wide are skipped. */
const REPLAYING = process.env.AGENTWIRE_FC_PATH !== undefined;
/** Run timeout on the tests' manual clocks: it passes only when everything else is quiet. */
const RUN_TIMEOUT_MS = 1000;

/** One turn of the event loop: lets socket I/O and everything queued behind it run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

function capturingLogger(lines: string[]): Logger {
  return pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
}

async function counterTotal(counter: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}

// ---------------------------------------------------------------------------------------------
// What a client does and what it saw, and the invariants over it (shared by both levels)

type Resume = { lastSeq?: number; epoch?: string };
type ResumeChoice = 'none' | 'reconnect' | 'behind' | 'stale';

const THREADS = ['t0', 't1'];
/** The demo agent completes, fails (`/fail`), or hangs until cancelled or timed out (`/hang`). */
const TEXTS = ['2+3', 'hello there', '/fail now', '/hang now'];
const EVENT_TYPES = new Set([
  'agent_started',
  'agent_thinking',
  'agent_thinking_delta',
  'agent_text_delta',
  'tool_executing',
  'tool_completed',
  'agent_completed',
  'agent_error',
]);

type FrameChoice =
  | { kind: 'message'; thread: number; text: number }
  | { kind: 'duplicate'; pick: number }
  | { kind: 'ping' }
  | { kind: 'cancel'; target: 'own' | 'other' | 'unknown'; pick: number };

const frameChoiceArb: fc.Arbitrary<FrameChoice> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('message' as const), thread: fc.nat(1), text: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), pick: fc.nat(7) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('ping' as const) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('cancel' as const),
      target: fc.oneof(
        { weight: 4, arbitrary: fc.constant('own' as const) },
        { weight: 1, arbitrary: fc.constant('other' as const) },
        { weight: 1, arbitrary: fc.constant('unknown' as const) },
      ),
      pick: fc.nat(7),
    }),
  },
);
const resumeChoiceArb = fc.constantFrom<ResumeChoice>('none', 'reconnect', 'behind', 'stale');

/** One client connection as the invariants see it. */
interface PeerView {
  readonly label: string;
  readonly userId: string;
  /** Frames other than `auth` that the client put on the wire, in order. */
  readonly sent: readonly Frame[];
  readonly received: readonly Frame[];
  /** The resume position the client presented (URL or auth frame). */
  readonly resume: Resume;
  readonly closedByClient: boolean;
  /** The close code the client saw; null while open. */
  readonly closeCode: number | null;
  /** Codes a client that closed itself may see (1000 echoed; 1006 when it gave up connecting). */
  readonly allowedCloseCodes: readonly number[];
}

const isEvent = (frame: Frame) => typeof frame.seq === 'number';
const isAnswer = (frame: Frame) => frame.type === 'ack' || frame.type === 'pong' || frame.type === 'error';

/** The position a client would resume from: its newest seq and the epoch, if it got ready. */
function positionOf(peer: PeerView): Resume {
  const ready = peer.received[0];
  if (ready?.type !== 'connection_ready') return {};
  const events = peer.received.filter(isEvent);
  const start: number = ready.resumed ? peer.resume.lastSeq! : ready.last_seq;
  return { lastSeq: events.length > 0 ? events.at(-1)!.seq : start, epoch: ready.epoch };
}

/**
 * The position a new connection presents: none; `reconnect`: where the user's most recently
 * closed connection (else its newest one) stopped; `behind`: two events before the newest
 * connection's position; `stale`: an epoch that never existed (must not resume).
 */
function resumeFor(choice: ResumeChoice, userId: string, peers: readonly PeerView[]): Resume {
  if (choice === 'stale') return { lastSeq: 0, epoch: 'stale-epoch' };
  if (choice === 'none') return {};
  const mine = peers.filter((p) => p.userId === userId && positionOf(p).epoch !== undefined);
  const source = (choice === 'reconnect' ? mine.filter((p) => p.closedByClient).at(-1) : undefined) ?? mine.at(-1);
  if (!source) return {};
  const position = positionOf(source);
  return choice === 'behind' ? { lastSeq: Math.max(0, position.lastSeq! - 2), epoch: position.epoch! } : position;
}

/** Builds a client frame from a choice and what the clients know at that moment. */
function buildFrame(choice: FrameChoice, peer: PeerView, peers: readonly PeerView[], messages: ReadonlyMap<string, Frame[]>, nextId: () => number): Frame {
  const id = `${peer.userId}.f${nextId()}`;
  switch (choice.kind) {
    case 'message':
      return { type: 'user_message', id, thread_id: THREADS[choice.thread]!, text: TEXTS[choice.text]! };
    case 'ping':
      return { type: 'ping', id };
    case 'duplicate': {
      const mine = messages.get(peer.userId) ?? [];
      return mine.length > 0 ? { ...mine[choice.pick % mine.length]! } : { type: 'ping', id };
    }
    case 'cancel': {
      const known =
        choice.target === 'unknown'
          ? []
          : peers
              .filter((p) => (p.userId === peer.userId) === (choice.target === 'own'))
              .flatMap((p) => p.received.filter((f) => f.type === 'ack' && f.status !== 'cancelling').map((f) => f.run_id as string));
      const runId = known.length > 0 ? known[choice.pick % known.length]! : `run_unknown_${id}`;
      return { type: 'cancel', id, run_id: runId };
    }
  }
}

/** True once a client has everything it should get while it stays open. */
function caughtUp(peer: PeerView, head: number): boolean {
  if (peer.closedByClient || peer.closeCode !== null) return peer.closeCode !== null;
  if (peer.received[0]?.type !== 'connection_ready') return false;
  const answers = peer.received.filter(isAnswer).length;
  return answers >= peer.sent.length && (positionOf(peer).lastSeq ?? 0) >= head;
}

/** How often the interleavings that matter happened, so that a run exploring nothing fails. */
class Coverage {
  /** Frames on the wire before the client had connection_ready (Level 1: before PROCESSING_READY). */
  earlyFrames = 0;
  /** Connections the client closed before it had connection_ready. */
  earlyCloses = 0;
  resumedWithReplay = 0;
  queuedAcks = 0;
  duplicateAcks = 0;
  cancelledRuns = 0;
  reorderedNotifications = 0;

  tally(peers: readonly PeerView[]): void {
    for (const peer of peers) {
      const ready = peer.received[0];
      if (peer.closedByClient && ready?.type !== 'connection_ready') this.earlyCloses++;
      if (ready?.type === 'connection_ready' && ready.replayed > 0) this.resumedWithReplay++;
      for (const f of peer.received) {
        if (f.type === 'ack' && f.status === 'queued') this.queuedAcks++;
        if (f.type === 'ack' && f.status === 'duplicate') this.duplicateAcks++;
        if (f.type === 'agent_completed' && f.status === 'cancelled') this.cancelledRuns++;
      }
    }
  }

  /** `timingDependent`: kinds that a run may or may not reach, depending on socket timing. */
  expectExplored(timingDependent: ReadonlyArray<keyof Coverage> = []): void {
    for (const [name, count] of Object.entries(this)) {
      if (timingDependent.includes(name as keyof Coverage)) continue;
      expect(count, `${name} never happened: the exploration is too narrow`).toBeGreaterThan(0);
    }
  }
}

interface UserLog {
  readonly userId: string;
  readonly epoch: string;
  readonly entries: readonly LogEntry[];
}

async function readLog(engine: MemoryEngine, userId: string): Promise<UserLog> {
  const head = await engine.head(userId);
  const entries = head.lastSeq > 0 ? await engine.read(userId, 1, head.lastSeq) : [];
  return { userId, epoch: head.epoch, entries };
}

function describeFrame(f: Frame): string {
  if (isEvent(f)) return `${f.type}#${f.seq}`;
  const detail = [f.id ?? f.ref, f.status, f.code].filter((x) => x !== undefined && x !== null).join(':');
  return `${f.type}(${detail})`;
}

function describePeers(peers: readonly PeerView[]): string {
  return peers
    .map(
      (p) =>
        `  ${p.label} resume=${JSON.stringify(p.resume)} closedByClient=${p.closedByClient} close=${p.closeCode}\n` +
        `    sent: ${p.sent.map((f) => `${f.type}(${f.id})`).join(' ')}\n` +
        `    got:  ${p.received.map(describeFrame).join(' ')}`,
    )
    .join('\n');
}

/** Checks one user's log and every connection of that user; throws on the first violation. */
function checkUser(log: UserLog, peers: readonly PeerView[], runOwner: ReadonlyMap<string, string>): void {
  const { userId, epoch } = log;
  const fail = (what: string, peer?: PeerView): never => {
    const events = log.entries.map((e) => `${e.type}#${e.seq}`).join(' ');
    throw new Error(`${peer ? peer.label : userId}: ${what}\n  log: ${events}\n${describePeers(peers)}`);
  };

  const events = log.entries.map((entry, i) => {
    if (entry.seq !== i + 1) fail(`log entry ${i} has seq ${entry.seq}`);
    return JSON.parse(entry.json) as Frame;
  });
  const sentMessages = new Map<string, Frame>();
  const cancelTargets = new Set<string>();
  for (const peer of peers) {
    for (const frame of peer.sent) {
      if (frame.type === 'user_message') sentMessages.set(frame.id, frame);
      if (frame.type === 'cancel') cancelTargets.add(frame.run_id);
    }
  }

  // The log: runs are well formed, answer the user's own messages, and never overlap per thread.
  const runs = new Map<string, Frame[]>();
  for (const event of events) {
    const list = runs.get(event.run_id) ?? [];
    list.push(event);
    runs.set(event.run_id, list);
  }
  const runOfMessage = new Map<string, string>();
  const threadOfRun = new Map<string, string>();
  for (const [runId, runEvents] of runs) {
    const problem = runProblem(runEvents);
    if (problem) fail(`run ${runId}: ${problem}`);
    const started = runEvents[0]!;
    const message = sentMessages.get(started.message_id);
    if (!message) fail(`run ${runId} answers message ${started.message_id}, which ${userId} never sent`);
    if (started.thread_id !== message!.thread_id || started.text !== message!.text) {
      fail(`run ${runId} does not match message ${started.message_id}`);
    }
    if (runOfMessage.has(started.message_id)) fail(`message ${started.message_id} started two runs`);
    runOfMessage.set(started.message_id, runId);
    threadOfRun.set(runId, started.thread_id);
    const terminal = runEvents.at(-1)!;
    if (terminal.type === 'agent_completed' && terminal.status === 'cancelled') {
      if (!cancelTargets.has(runId)) fail(`run ${runId} was cancelled, but ${userId} never asked for it`);
    } else {
      const text = String(started.text);
      const expected = text.startsWith('/fail') ? 'agent_error/agent_failed' : text.startsWith('/hang') ? 'agent_error/timeout' : 'agent_completed/completed';
      const actual = `${terminal.type}/${terminal.type === 'agent_error' ? terminal.code : terminal.status}`;
      if (actual !== expected) fail(`run ${runId} ended with ${actual}, expected ${expected}`);
    }
  }
  const running = new Map<string, string>();
  for (const event of events) {
    const current = running.get(event.thread_id);
    if (event.type === 'agent_started') {
      if (current !== undefined) fail(`run ${event.run_id} started at seq ${event.seq} while ${current} runs on ${event.thread_id}`);
      running.set(event.thread_id, event.run_id);
    } else if (current !== event.run_id) {
      fail(`seq ${event.seq} belongs to ${event.run_id}, which is not running on ${event.thread_id}`);
    }
    if (TERMINAL_TYPES.has(event.type)) running.delete(event.thread_id);
  }

  // Every connection of the user.
  const newAcks = new Map<string, number>();
  for (const peer of peers) {
    if (peer.closedByClient) {
      if (peer.closeCode === null || !peer.allowedCloseCodes.includes(peer.closeCode)) {
        fail(`closed by the client, then saw close code ${peer.closeCode}`, peer);
      }
    } else if (peer.closeCode !== null) {
      fail(`the server closed the connection with ${peer.closeCode}`, peer);
    }
    const received = peer.received;
    if (received.length === 0) {
      if (!peer.closedByClient) fail('never received connection_ready', peer);
      continue;
    }
    const ready = received[0]!;
    if (ready.type !== 'connection_ready') fail(`first frame is ${describeFrame(ready)}, not connection_ready`, peer);
    if (ready.user_id !== userId || ready.epoch !== epoch || ready.protocol !== 'agentwire.v1') {
      fail(`connection_ready names ${ready.user_id}/${ready.epoch}/${ready.protocol}`, peer);
    }
    const head: number = ready.last_seq;
    if (!Number.isInteger(head) || head < 0 || head > events.length) fail(`last_seq ${head} outside the log`, peer);
    const from = peer.resume.lastSeq;
    const canResume = from !== undefined && peer.resume.epoch === epoch && from <= head;
    if (ready.resumed !== canResume || ready.replayed !== (canResume ? head - from! : 0)) {
      fail(`resumed=${ready.resumed} replayed=${ready.replayed} for position ${JSON.stringify(peer.resume)} at head ${head}`, peer);
    }

    let last = canResume ? from! : head;
    const answers: Array<{ index: number; frame: Frame }> = [];
    const agentStartedAt = new Map<string, number>();
    for (let i = 1; i < received.length; i++) {
      const frame = received[i]!;
      if (isEvent(frame)) {
        if (frame.seq !== last + 1) fail(`expected seq ${last + 1}, got ${frame.seq}`, peer);
        if (!isDeepStrictEqual(frame, events[frame.seq - 1])) fail(`event ${frame.seq} differs from the log's`, peer);
        if (frame.type === 'agent_started') agentStartedAt.set(frame.run_id, i);
        last = frame.seq;
      } else if (isAnswer(frame)) {
        answers.push({ index: i, frame });
      } else {
        fail(`unexpected frame ${describeFrame(frame)} at ${i}`, peer);
      }
    }
    if (!peer.closedByClient && last !== events.length) fail(`stopped at seq ${last}; the log's head is ${events.length}`, peer);
    if (answers.length > peer.sent.length || (!peer.closedByClient && answers.length !== peer.sent.length)) {
      fail(`${peer.sent.length} frames sent, ${answers.length} answered`, peer);
    }

    answers.forEach(({ index, frame }, k) => {
      const sent = peer.sent[k]!;
      const wrong = () => fail(`frame ${k} ${sent.type}(${sent.id}) answered with ${JSON.stringify(frame)}`, peer);
      const isError = (code: string) => frame.type === 'error' && frame.code === code && frame.ref === sent.id;
      switch (sent.type) {
        case 'ping':
          if (frame.type !== 'pong' || frame.id !== sent.id) wrong();
          break;
        case 'user_message': {
          const runId = runOfMessage.get(sent.id);
          if (
            frame.type !== 'ack' ||
            frame.id !== sent.id ||
            frame.thread_id !== sent.thread_id ||
            frame.run_id !== runId ||
            !['started', 'queued', 'duplicate'].includes(frame.status)
          ) {
            wrong();
          }
          if (frame.status !== 'duplicate') {
            newAcks.set(sent.id, (newAcks.get(sent.id) ?? 0) + 1);
            const startedAt = agentStartedAt.get(runId!);
            if (startedAt !== undefined && startedAt < index) fail(`agent_started of ${runId} arrived before its ack`, peer);
          }
          break;
        }
        case 'cancel': {
          const owner = runOwner.get(sent.run_id);
          const cancelling =
            frame.type === 'ack' &&
            frame.status === 'cancelling' &&
            frame.id === sent.id &&
            frame.run_id === sent.run_id &&
            frame.thread_id === threadOfRun.get(sent.run_id);
          const ok =
            owner === userId
              ? cancelling || isError('run_not_found')
              : owner !== undefined
                ? isError('forbidden') || isError('run_not_found')
                : isError('run_not_found');
          if (!ok) wrong();
          break;
        }
        default:
          fail(`sent an unexpected frame ${sent.type}`, peer);
      }
    });
  }
  for (const [id, count] of newAcks) {
    if (count > 1) fail(`message ${id} was acked as new ${count} times`);
  }
}

/** Reads every user's log and checks each user with its connections. */
async function checkAll(engine: MemoryEngine, userIds: readonly string[], peers: readonly PeerView[]): Promise<void> {
  const logs = await Promise.all(userIds.map((userId) => readLog(engine, userId)));
  const runOwner = new Map<string, string>();
  for (const log of logs) {
    for (const entry of log.entries) runOwner.set((JSON.parse(entry.json) as Frame).run_id, log.userId);
  }
  for (const log of logs)
    checkUser(
      log,
      peers.filter((p) => p.userId === log.userId),
      runOwner,
    );
  const strangers = peers.filter((p) => !userIds.includes(p.userId));
  if (strangers.length > 0) throw new Error(`peers of unknown users: ${strangers.map((p) => p.label).join(', ')}`);
}

/**
 * Releases scheduled tasks one at a time (fast-check picks which), with an event-loop turn after
 * each so that socket I/O interleaves, until `done()` holds. When nothing is scheduled,
 * `whenIdle` may move things on (and says whether it did). Returns false if `done` never held.
 */
async function settle(s: Scheduler, done: () => Promise<boolean>, timeoutMs: number, whenIdle: () => Promise<boolean> = async () => false): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (s.count() > 0) {
      await s.waitNext(1);
      await turn();
      continue;
    }
    await turn();
    if (s.count() > 0) continue;
    if (await done()) return true;
    if (await whenIdle()) continue;
    if (Date.now() > deadline) return false;
  }
}

/**
 * Waits until every client caught up and nothing is scheduled. The runs still live then are
 * `/hang` ones (and runs queued behind them); with `endRuns`, the manual clock moves past the
 * run timeout until none is left, so they end with `agent_error` code `timeout`.
 */
async function quiesceRuns(
  s: Scheduler,
  clock: ManualClock,
  liveRuns: () => number,
  clientsCaughtUp: () => Promise<boolean>,
  endRuns: boolean,
  timeoutMs: number,
): Promise<boolean> {
  return settle(
    s,
    async () => (!endRuns || liveRuns() === 0) && (await clientsCaughtUp()),
    timeoutMs,
    async () => {
      if (!endRuns || liveRuns() === 0 || !(await clientsCaughtUp())) return false;
      await clock.advance(RUN_TIMEOUT_MS);
      return true;
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Level 1: the production Connection, UserCoordinator, RunManager and demo agent over a fake
// socket and a fake verifier; every asynchronous step (engine, verification, socket close, the
// client's actions) is ordered by the scheduler, so a seed replays exactly.

class FakePeer implements PeerView {
  readonly sent: Frame[] = [];
  readonly received: Frame[] = [];
  closedByClient = false;
  closeCode: number | null = null;
  readonly allowedCloseCodes = [1000];
  constructor(
    readonly label: string,
    readonly userId: string,
    readonly resume: Resume,
  ) {}
}

/** The server's side of a WebSocket, as Connection uses it; the client acts through it too. */
class FakeSocket extends EventEmitter {
  bufferedAmount = 0;
  closing = false;
  connection: Connection | null = null;
  /** Client frames that reached the connection before it was PROCESSING_READY. */
  early = 0;
  /** Every frame the server sent, with the connection's state at that moment. */
  readonly sends: Array<{ type: string; state: string }> = [];

  readonly #s: Scheduler;

  constructor(
    s: Scheduler,
    readonly peer: FakePeer,
  ) {
    super();
    this.#s = s;
  }

  send(data: string): void {
    const frame = JSON.parse(data) as Frame;
    this.sends.push({ type: frame.type, state: this.connection!.lifecycle.state });
    if (!this.closing) this.peer.received.push(frame);
  }

  close(code: number, reason: string): void {
    this.#closeSoon(code, reason, 'server close');
  }

  terminate(): void {
    this.#closeSoon(1006, '', 'server terminate');
  }

  ping(): void {}

  fromClient(frame: Frame): boolean {
    if (this.closing) return false;
    if (frame.type !== 'auth' && this.connection!.lifecycle.state !== ConnectionState.PROCESSING_READY) this.early++;
    this.emit('message', Buffer.from(JSON.stringify(frame)), false);
    return true;
  }

  closeFromClient(): void {
    this.peer.closedByClient = true;
    this.#closeSoon(1000, '', 'client close');
  }

  /** The closing handshake: no frame passes either way from now on; 'close' comes later. */
  #closeSoon(code: number, reason: string, why: string): void {
    if (this.closing) return;
    this.closing = true;
    void this.#s.schedule(Promise.resolve(), `${why} ${this.peer.label} ${code}`).then(() => {
      this.peer.closeCode = code;
      this.emit('close', code, Buffer.from(reason));
    });
  }
}

/** Fake identities never expire (the last time a Date can hold; tokens have a required `exp` now). */
const NEVER_EXPIRES = 8.64e15;

class FakeWorld {
  readonly clock = new ManualClock(1_700_000_000_000);
  readonly inner = new MemoryEngine({ clock: this.clock });
  readonly engine = new ScheduledEngine(this.inner);
  readonly metrics = new GatewayMetrics();
  readonly logs: string[] = [];
  readonly faults: string[] = [];
  readonly ctx: ConnectionContext;
  readonly peers: Array<{ peer: FakePeer; socket: FakeSocket; connection: Connection }> = [];
  readonly messages = new Map<string, Frame[]>();
  readonly userIds: string[];
  #ids = 0;

  constructor(
    readonly s: Scheduler,
    userCount: number,
  ) {
    this.engine.use(s);
    this.userIds = Array.from({ length: userCount }, (_, i) => `u${i}`);
    const onFault = (error: unknown, context: string) => void this.faults.push(`${context}: ${String(error)}`);
    const verifier: TokenVerifier = {
      verify: async (token) => {
        await s.schedule(Promise.resolve(), `verify ${token}`);
        return { ok: true, userId: String(token), expiresAt: NEVER_EXPIRES };
      },
    };
    this.ctx = {
      clock: this.clock,
      logger: capturingLogger(this.logs),
      metrics: this.metrics,
      verifier,
      registry: new CoordinatorRegistry(this.engine, { maxConnections: 32, onFault }),
      runs: new RunManager({
        engine: this.engine,
        agent: createDemoAgent({ clock: this.clock, stepMs: 0 }),
        clock: this.clock,
        threadPolicy: 'enqueue',
        runTimeoutMs: RUN_TIMEOUT_MS,
        onFault,
      }),
      limits: {
        authTimeoutMs: 5000,
        heartbeatMs: 25_000,
        inboxLimit: 64,
        inboxMaxBytes: 256 * 1024,
        rateLimitPerSec: 20,
        rateLimitBurst: 40,
        abuseLimit: 200,
        slowConsumerBytes: 1024 * 1024,
        maxBufferedEvents: 1000,
      },
      connections: new Set(),
      awaitingAuth: new Set(),
      heldBytes: new ByteBudget(32 * 1024 * 1024),
      corkFrames: corkForTick,
      connectionClosed: () => {},
    };
  }

  get views(): FakePeer[] {
    return this.peers.map((p) => p.peer);
  }

  openPeers() {
    return this.peers.filter((p) => !p.peer.closedByClient);
  }

  open(user: number, via: 'upgrade' | 'frame', resumeChoice: ResumeChoice): void {
    const userId = this.userIds[user % this.userIds.length]!;
    const resume = resumeFor(resumeChoice, userId, this.views);
    const peer = new FakePeer(`${userId}#${this.peers.length + 1}`, userId, resume);
    const socket = new FakeSocket(this.s, peer);
    const connection = new Connection(this.ctx, via === 'upgrade' ? resume : {});
    socket.connection = connection;
    this.peers.push({ peer, socket, connection });
    const ws = socket as unknown as WebSocket;
    if (via === 'upgrade') {
      connection.accept(ws, { upgradeAuth: { ok: true, userId, expiresAt: NEVER_EXPIRES }, method: 'header', originAllowed: true });
      return;
    }
    connection.accept(ws, { upgradeAuth: null, method: null, originAllowed: true });
    // The auth frame is one more scheduled step: other frames may reach the server before it.
    const auth: Frame = { type: 'auth', token: userId };
    if (resume.lastSeq !== undefined) auth.last_seq = resume.lastSeq;
    if (resume.epoch !== undefined) auth.epoch = resume.epoch;
    void this.s.schedule(Promise.resolve(), `auth frame ${peer.label}`).then(() => socket.fromClient(auth));
  }

  send(pick: number, choice: FrameChoice): void {
    const open = this.openPeers();
    const { peer, socket } = open[pick % open.length]!;
    const frame = buildFrame(choice, peer, this.views, this.messages, () => ++this.#ids);
    if (frame.type === 'user_message' && choice.kind === 'message') {
      this.messages.set(peer.userId, [...(this.messages.get(peer.userId) ?? []), frame]);
    }
    if (socket.fromClient(frame)) peer.sent.push(frame);
  }

  close(pick: number): void {
    const open = this.openPeers();
    open[pick % open.length]!.socket.closeFromClient();
  }

  /**
   * Lets every scheduled step run until every client caught up; with `endRuns`, also until every
   * run ended, and then checks every invariant.
   */
  async quiesce(endRuns: boolean): Promise<void> {
    const caughtUpAll = async () => {
      for (const { peer } of this.peers) {
        if (!caughtUp(peer, (await this.inner.head(peer.userId)).lastSeq)) return false;
      }
      return true;
    };
    const live = () => this.ctx.runs.liveRuns;
    const quiescent = await quiesceRuns(this.s, this.clock, live, caughtUpAll, endRuns, 2000);
    if (!endRuns && quiescent) return;
    await checkAll(this.inner, this.userIds, this.views);
    if (!quiescent) throw new Error(`no quiescence: ${live()} live runs\n${describePeers(this.views)}`);
  }

  async finish(): Promise<void> {
    await this.quiesce(true);
    for (const { socket } of this.openPeers()) socket.closeFromClient();
    const closed = async () =>
      this.peers.every((p) => p.connection.lifecycle.state === ConnectionState.CLOSED) &&
      this.ctx.connections.size === 0 &&
      this.ctx.registry.size === 0 &&
      this.engine.activeSubscriptions === 0;
    if (!(await settle(this.s, closed, 2000))) {
      const states = this.peers.map((p) => `${p.peer.label}=${p.connection.lifecycle.state}`).join(' ');
      throw new Error(`teardown did not finish: ${states}; coordinators=${this.ctx.registry.size} subscriptions=${this.engine.activeSubscriptions}`);
    }

    // No frame was processed, and no answer sent, before PROCESSING_READY.
    for (const { peer, socket } of this.peers) {
      for (const { type, state } of socket.sends) {
        const allowed =
          type === 'connection_ready'
            ? [ConnectionState.SERVICES_READY]
            : EVENT_TYPES.has(type)
              ? [ConnectionState.SERVICES_READY, ConnectionState.PROCESSING_READY]
              : [ConnectionState.PROCESSING_READY];
        if (!(allowed as string[]).includes(state)) throw new Error(`${peer.label}: sent ${type} in state ${state}`);
      }
    }
    expect(await this.metrics.invalidTransitionCount()).toBe(0);
    expect(await counterTotal(this.metrics.faults)).toBe(0);
    expect(this.faults).toEqual([]);
    expect(this.logs).toEqual([]);
  }
}

interface FakeModel {
  readonly userCount: number;
  readonly openedPerUser: number[];
  open: number;
}

class OpenCommand implements AsyncCommand<FakeModel, FakeWorld> {
  constructor(
    readonly user: number,
    readonly via: 'upgrade' | 'frame',
    readonly resume: ResumeChoice,
  ) {}
  check(m: Readonly<FakeModel>): boolean {
    return m.openedPerUser[this.user % m.userCount]! < 3;
  }
  async run(m: FakeModel, world: FakeWorld): Promise<void> {
    m.openedPerUser[this.user % m.userCount]!++;
    m.open++;
    world.open(this.user, this.via, this.resume);
  }
  toString(): string {
    return `open(user ${this.user}, ${this.via}, resume ${this.resume})`;
  }
}

class SendCommand implements AsyncCommand<FakeModel, FakeWorld> {
  constructor(
    readonly pick: number,
    readonly choice: FrameChoice,
  ) {}
  check(m: Readonly<FakeModel>): boolean {
    return m.open > 0;
  }
  async run(_m: FakeModel, world: FakeWorld): Promise<void> {
    world.send(this.pick, this.choice);
  }
  toString(): string {
    return `send(peer ${this.pick}, ${JSON.stringify(this.choice)})`;
  }
}

class CloseCommand implements AsyncCommand<FakeModel, FakeWorld> {
  constructor(readonly pick: number) {}
  check(m: Readonly<FakeModel>): boolean {
    return m.open > 0;
  }
  async run(m: FakeModel, world: FakeWorld): Promise<void> {
    m.open--;
    world.close(this.pick);
  }
  toString(): string {
    return `close(peer ${this.pick})`;
  }
}

/**
 * A plain array rather than fc.commands: a failure then replays from its seed and path alone
 * (fc.commands also needs its replayPath). Commands whose check fails are skipped.
 */
const fakeCommands: fc.Arbitrary<Array<AsyncCommand<FakeModel, FakeWorld>>> = fc.array(
  fc.oneof(
    fc
      .tuple(fc.nat(2), fc.constantFrom('upgrade' as const, 'frame' as const), resumeChoiceArb)
      .map(([user, via, resume]): AsyncCommand<FakeModel, FakeWorld> => new OpenCommand(user, via, resume)),
    {
      weight: 2,
      arbitrary: fc.tuple(fc.nat(8), frameChoiceArb).map(([pick, choice]): AsyncCommand<FakeModel, FakeWorld> => new SendCommand(pick, choice)),
    },
    fc.nat(8).map((pick): AsyncCommand<FakeModel, FakeWorld> => new CloseCommand(pick)),
  ),
  { maxLength: 12, size: 'medium' },
);

describe('interleavings over a fake socket (production Connection, coordinator, run manager)', () => {
  it('keeps every invariant for 1-3 users under any order of engine, auth, frame and close steps', async () => {
    let scenarios = 0;
    let withTraffic = 0;
    const coverage = new Coverage();
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), fc.integer({ min: 1, max: 3 }), fakeCommands, fakeCommands, async (s, userCount, firstPhase, secondPhase) => {
        scenarios++;
        const world = new FakeWorld(s, userCount);
        const model: FakeModel = { userCount, openedPerUser: [0, 0, 0], open: 0 };
        // Two phases with a quiet point between them, so that the second one starts from
        // connections that are ready, a history to resume from and clients that went away.
        await fc.scheduledModelRun(s, () => ({ model, real: world }), firstPhase);
        await world.quiesce(false);
        await fc.scheduledModelRun(s, () => ({ model, real: world }), secondPhase);
        await world.finish();
        if (world.peers.some((p) => p.peer.received.some(isEvent))) withTraffic++;
        coverage.tally(world.views);
        coverage.earlyFrames += world.peers.reduce((sum, p) => sum + p.socket.early, 0);
        coverage.reorderedNotifications += world.engine.reorderedNotifications;
      }),
      fcParams(NUM_RUNS, 20_000),
    );
    if (!REPLAYING) {
      expect(scenarios).toBeGreaterThanOrEqual(NUM_RUNS);
      // A cancel wins only if its run is still going: with batched appends a run often ends first,
      // so a won cancel is not guaranteed in 200 runs (test/runs.test.ts covers cancel directly).
      coverage.expectExplored(['cancelledRuns']);
      // The scenarios are not all empty: many of them carry events to some connection.
      expect(withTraffic).toBeGreaterThan(NUM_RUNS / 4);
    }
  }, 50_000);
});

// ---------------------------------------------------------------------------------------------
// The lifecycle state machine against a model written from PROTOCOL.md section 4.

const CHAIN = ['CONNECTING', 'ACCEPTED', 'AUTHENTICATED', 'SERVICES_READY', 'PROCESSING_READY'] as const;
type State = ConnectionState;
const ALL: State[] = [...CHAIN, 'CLOSING', 'CLOSED'];

function contractAllows(from: State, to: State): boolean {
  const i = (CHAIN as readonly string[]).indexOf(from);
  if (i >= 0) return to === CHAIN[i + 1] || to === 'CLOSING' || (from === 'CONNECTING' && to === 'CLOSED');
  return from === 'CLOSING' && to === 'CLOSED';
}

interface LifecycleModel {
  state: State;
  readonly path: Array<[State | null, State]>;
  rejected: number;
}
interface LifecycleReal {
  readonly lifecycle: ConnectionLifecycle;
  readonly seen: Array<[State | null, State]>;
  rejected: number;
}

class TransitionCommand implements Command<LifecycleModel, LifecycleReal> {
  constructor(readonly to: State) {}
  check(): boolean {
    return true;
  }
  run(m: LifecycleModel, r: LifecycleReal): void {
    const from = m.state;
    if (contractAllows(from, this.to)) {
      r.lifecycle.transition(this.to);
      m.state = this.to;
      m.path.push([from, this.to]);
    } else {
      let error: unknown = null;
      try {
        r.lifecycle.transition(this.to);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(StateTransitionError);
      const message = (error as Error).message;
      expect(message).toContain('invalid transition');
      expect(message).toContain(from);
      expect(message).toContain(this.to);
      m.rejected++;
    }
    expect(r.lifecycle.state).toBe(m.state);
    expect(r.lifecycle.isEnding).toBe(m.state === 'CLOSING' || m.state === 'CLOSED');
    expect(r.seen).toEqual(m.path);
    expect(r.rejected).toBe(m.rejected);
  }
  toString(): string {
    return `transition(${this.to})`;
  }
}

class BeginClosingCommand implements Command<LifecycleModel, LifecycleReal> {
  check(): boolean {
    return true;
  }
  run(m: LifecycleModel, r: LifecycleReal): void {
    const ending = m.state === 'CLOSING' || m.state === 'CLOSED';
    expect(r.lifecycle.beginClosing()).toBe(!ending);
    if (!ending) {
      m.path.push([m.state, 'CLOSING']);
      m.state = 'CLOSING';
    }
    expect(r.lifecycle.state).toBe(m.state);
    expect(r.seen).toEqual(m.path);
    expect(r.rejected).toBe(m.rejected);
  }
  toString(): string {
    return 'beginClosing()';
  }
}

describe('the connection lifecycle against a model of the contract', () => {
  it('follows the model under random transition attempts; invalid ones throw and change nothing', () => {
    type LifecycleCommand = Command<LifecycleModel, LifecycleReal>;
    const commands = fc.array(
      fc.oneof(
        fc.constantFrom(...ALL).map((to): LifecycleCommand => new TransitionCommand(to)),
        // Often a step along the chain, so that runs get deep into it.
        fc.constantFrom(...CHAIN.slice(1)).map((to): LifecycleCommand => new TransitionCommand(to)),
        fc.constant<LifecycleCommand>(new BeginClosingCommand()),
      ),
      { maxLength: 30 },
    );
    fc.assert(
      fc.property(commands, (cmds) => {
        fc.modelRun(() => {
          const real: LifecycleReal = { lifecycle: null as unknown as ConnectionLifecycle, seen: [], rejected: 0 };
          const observer: LifecycleObserver = {
            transitioned: (from, to) => void real.seen.push([from, to]),
            rejected: () => void real.rejected++,
          };
          (real as { lifecycle: ConnectionLifecycle }).lifecycle = new ConnectionLifecycle('conn-model', observer);
          const model: LifecycleModel = { state: 'CONNECTING', path: [[null, 'CONNECTING']], rejected: 0 };
          return { model, real };
        }, cmds);
      }),
      fcParams(NUM_RUNS, 10_000),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Level 2: a real gateway on real sockets. The engine's steps are scheduled; the test's steps
// (open, send, close, release scheduled tasks, let I/O run) come in the generated order.

type Step =
  | { k: 'open'; user: number; via: 'header' | 'subprotocol' | 'frame'; resume: ResumeChoice }
  | { k: 'send'; peer: number; frame: FrameChoice }
  | { k: 'close'; peer: number }
  | { k: 'release'; n: number }
  | { k: 'io'; turns: number }
  /** Lets everything run until every client caught up (only `/hang` runs may be left). */
  | { k: 'quiesce' };

const openStepArb = fc.record({
  k: fc.constant('open' as const),
  user: fc.nat(2),
  via: fc.constantFrom('header' as const, 'subprotocol' as const, 'frame' as const),
  resume: resumeChoiceArb,
});
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: openStepArb },
  { weight: 5, arbitrary: fc.record({ k: fc.constant('send' as const), peer: fc.nat(8), frame: frameChoiceArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('close' as const), peer: fc.nat(8) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('release' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('io' as const), turns: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('quiesce' as const) }) },
);

class SocketPeer implements PeerView {
  readonly sent: Frame[] = [];
  closedByClient = false;
  allowedCloseCodes = [1000];
  pendingSends = 0;
  /** Frames sent before the client had connection_ready. */
  early = 0;
  #chain: Promise<void> = Promise.resolve();

  constructor(
    readonly label: string,
    readonly userId: string,
    readonly resume: Resume,
    readonly client: TestClient,
  ) {}

  get received(): readonly Frame[] {
    return this.client.frames;
  }

  get closeCode(): number | null {
    return this.client.closeCode;
  }

  /** Sends once the socket is open, in call order; a frame is recorded only if it went out. */
  send(frame: Frame): void {
    this.pendingSends++;
    this.#chain = this.#chain
      .then(() => this.client.opened.catch(() => {}))
      .then(() => {
        if (this.client.ws.readyState !== WebSocket.OPEN) return;
        if (this.received[0]?.type !== 'connection_ready') this.early++;
        this.client.ws.send(JSON.stringify(frame));
        this.sent.push(frame);
      })
      .finally(() => void this.pendingSends--);
  }

  close(): void {
    if (this.closedByClient) return;
    this.closedByClient = true;
    // Giving up while still connecting aborts the handshake: the client sees 1006.
    if (this.client.ws.readyState === WebSocket.CONNECTING) this.allowedCloseCodes = [1006];
    this.client.close();
  }
}

interface SocketEnv {
  readonly env: TestGateway;
  readonly clock: ManualClock;
  readonly inner: MemoryEngine;
  readonly engine: ScheduledEngine;
  readonly logs: string[];
}

async function startSocketEnv(): Promise<SocketEnv> {
  const clock = new ManualClock(1_700_000_000_000);
  const inner = new MemoryEngine({ clock });
  const engine = new ScheduledEngine(inner);
  const logs: string[] = [];
  // Heartbeats and auth deadlines are not under test here: far enough away never to fire.
  const env = await startGateway({
    engine,
    clock,
    demoStepMs: 0,
    runTimeoutMs: RUN_TIMEOUT_MS,
    heartbeatMs: 3_600_000,
    authTimeoutMs: 3_600_000,
    logger: capturingLogger(logs),
  });
  return { env, clock, inner, engine, logs };
}

function isClean({ env, engine }: SocketEnv): boolean {
  const g = env.gateway;
  return g.connectionCount === 0 && g.coordinatorCount === 0 && g.runs.liveRuns === 0 && engine.activeSubscriptions === 0;
}

/** What the gateway's own metrics and logs say, for a failure message. */
async function describeGateway({ env, engine, logs }: SocketEnv): Promise<string> {
  const g = env.gateway;
  const nonZero = async (metric: { get(): Promise<{ values: Array<{ value: number; labels: object }> }> }) =>
    (await metric.get()).values
      .filter((v) => v.value !== 0)
      .map((v) => `${Object.values(v.labels).join('/')}=${v.value}`)
      .join(' ');
  return (
    `connections=${g.connectionCount} coordinators=${g.coordinatorCount} liveRuns=${g.runs.liveRuns} ` +
    `subscriptions=${engine.activeSubscriptions}; by state: ${await nonZero(g.metrics.connections)}; ` +
    `faults: ${await nonZero(g.metrics.faults)}; closes: ${await nonZero(g.metrics.closes)}; ` +
    `last logs: ${logs.slice(-3).join(' ')}`
  );
}

async function becomesClean(env: SocketEnv, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!isClean(env)) {
    if (Date.now() > deadline) return false;
    await turn();
  }
  return true;
}

class SocketWorld {
  readonly peers: SocketPeer[] = [];
  readonly messages = new Map<string, Frame[]>();
  readonly userIds: string[];
  readonly tokens = new Map<string, string>();
  #ids = 0;

  constructor(
    readonly env: SocketEnv,
    readonly s: Scheduler,
    prefix: string,
    userCount: number,
  ) {
    this.userIds = Array.from({ length: userCount }, (_, i) => `${prefix}u${i}`);
  }

  async prepare(): Promise<void> {
    for (const userId of this.userIds) this.tokens.set(userId, await this.env.env.token(userId));
  }

  openPeers(): SocketPeer[] {
    return this.peers.filter((p) => !p.closedByClient);
  }

  async step(step: Step): Promise<void> {
    switch (step.k) {
      case 'open': {
        const userId = this.userIds[step.user % this.userIds.length]!;
        if (this.peers.filter((p) => p.userId === userId).length >= 3) return;
        const resume = resumeFor(step.resume, userId, this.peers);
        const client = new TestClient(this.env.env.url, {
          token: this.tokens.get(userId)!,
          via: step.via,
          ...(resume.lastSeq !== undefined ? { lastSeq: resume.lastSeq } : {}),
          ...(resume.epoch !== undefined ? { epoch: resume.epoch } : {}),
        });
        this.env.env.clients.push(client); // closed in afterEach if a failed case left it open
        this.peers.push(new SocketPeer(`${userId}#${this.peers.length + 1}(${step.via})`, userId, resume, client));
        return;
      }
      case 'send': {
        const open = this.openPeers();
        if (open.length === 0) return;
        const peer = open[step.peer % open.length]!;
        const frame = buildFrame(step.frame, peer, this.peers, this.messages, () => ++this.#ids);
        if (frame.type === 'user_message' && step.frame.kind === 'message') {
          this.messages.set(peer.userId, [...(this.messages.get(peer.userId) ?? []), frame]);
        }
        peer.send(frame);
        return;
      }
      case 'close': {
        const open = this.openPeers();
        if (open.length > 0) open[step.peer % open.length]!.close();
        return;
      }
      case 'release':
        for (let i = 0; i < step.n && this.s.count() > 0; i++) await this.s.waitNext(1);
        return;
      case 'io':
        for (let i = 0; i < step.turns; i++) await turn();
        return;
      case 'quiesce':
        await this.quiesce(false);
        return;
    }
  }

  /**
   * Lets every scheduled step and I/O run until every client caught up; with `endRuns`, also
   * until every run ended, and then checks every invariant.
   */
  async quiesce(endRuns: boolean): Promise<void> {
    const { env, inner, clock } = this.env;
    const caughtUpAll = async () => {
      for (const peer of this.peers) {
        if (peer.pendingSends > 0) return false;
        if (!caughtUp(peer, (await inner.head(peer.userId)).lastSeq)) return false;
      }
      return true;
    };
    const live = () => env.gateway.runs.liveRuns;
    const quiescent = await quiesceRuns(this.s, clock, live, caughtUpAll, endRuns, 5000);
    if (!endRuns && quiescent) return;
    await checkAll(inner, this.userIds, this.peers);
    if (!quiescent) throw new Error(`no quiescence: ${live()} live runs\n${describePeers(this.peers)}`);
  }

  async finish(): Promise<void> {
    await this.quiesce(true);
    for (const peer of this.openPeers()) peer.close();
    const closed = async () => this.peers.every((p) => p.closeCode !== null) && isClean(this.env);
    if (!(await settle(this.s, closed, 5000))) {
      throw new Error(
        `teardown did not finish: ${await describeGateway(this.env)}; ` +
          `client closes=${this.peers.map((p) => p.closeCode).join(',')}; scheduled=${this.s.count()}`,
      );
    }
  }

  /** Best effort after a failure: close everything and let the scheduled steps run out. */
  async dispose(): Promise<void> {
    for (const peer of this.peers) peer.close();
    await settle(this.s, async () => this.peers.every((p) => p.closeCode !== null) && isClean(this.env), 2000);
  }
}

describe('interleavings over real sockets (gateway, ws, jose, scheduled engine)', () => {
  const envs: SocketEnv[] = [];
  afterEach(async () => {
    for (const { env, engine, inner, clock } of envs.splice(0)) {
      engine.use(null);
      for (const client of env.clients) client.close();
      const stopped = env.stop().then(() => inner.close());
      // After a failed case, runs may still be live: the drain timeout passes on the manual clock.
      if (env.gateway.runs.liveRuns > 0) await clock.advance(10_000);
      // And some may wait for a step that the failed case's scheduler never released: bounded.
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([stopped, new Promise((resolve) => (bound = setTimeout(resolve, 5000)))]);
      clearTimeout(bound);
    }
  });

  it('keeps every invariant for 1-3 users with 1-3 connections each, in random step orders', async () => {
    let current = await startSocketEnv();
    envs.push(current);
    let scenarios = 0;
    let withTraffic = 0;
    const coverage = new Coverage();
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.integer({ min: 1, max: 3 }),
        openStepArb,
        fc.array(stepArb, { maxLength: 16, size: 'medium' }),
        fc.array(stepArb, { maxLength: 16, size: 'medium' }),
        async (s, userCount, first, firstPhase, secondPhase) => {
          scenarios++;
          // A connection of an earlier run that the server accepted late settles by itself.
          if (!(await becomesClean(current, 2000))) {
            // An earlier failing case left work behind that its scheduler will never release.
            current.engine.use(null);
            current = await startSocketEnv();
            envs.push(current);
          }
          const { env, engine, logs } = current;
          const invalidBefore = await env.gateway.metrics.invalidTransitionCount();
          const faultsBefore = await counterTotal(env.gateway.metrics.faults);
          const logsBefore = logs.length;
          const reorderedBefore = engine.reorderedNotifications;
          const prefix = `r${scenarios}.`;
          const world = new SocketWorld(current, s, prefix, userCount);
          await world.prepare();
          // Scoped to this run's users: a connection of an earlier run that the server accepts
          // late (after its client gave up connecting) is not left waiting on a dead scheduler.
          engine.use(s, (userId) => userId.startsWith(prefix));
          let ok = false;
          try {
            // Two phases with a quiet point between them, as over the fake socket.
            for (const step of [first, ...firstPhase, { k: 'quiesce' } as const, ...secondPhase]) await world.step(step);
            await world.finish();
            ok = true;
          } finally {
            if (!ok) await world.dispose();
            // From now on this run's users pass straight through: a connection that the server
            // accepts after the run ended (its client gave up connecting) settles by itself.
            engine.use(null);
          }
          expect(await env.gateway.metrics.invalidTransitionCount()).toBe(invalidBefore);
          expect(await counterTotal(env.gateway.metrics.faults)).toBe(faultsBefore);
          expect(logs.slice(logsBefore)).toEqual([]);
          if (world.peers.some((p) => p.received.some(isEvent))) withTraffic++;
          coverage.tally(world.peers);
          coverage.earlyFrames += world.peers.reduce((sum, p) => sum + p.early, 0);
          coverage.reorderedNotifications += engine.reorderedNotifications - reorderedBefore;
        },
      ),
      fcParams(NUM_RUNS, 30_000),
    );
    if (!REPLAYING) {
      expect(scenarios).toBeGreaterThanOrEqual(NUM_RUNS);
      // Over real sockets a cancel races its run's end (a loaded CI machine once saw no cancel win
      // in 200 runs); the fake-socket exploration above covers cancelled runs deterministically.
      coverage.expectExplored(['cancelledRuns']);
      // The scenarios are not all empty: many of them carry events to some connection.
      expect(withTraffic).toBeGreaterThan(NUM_RUNS / 4);
    }
  }, 50_000);
});
