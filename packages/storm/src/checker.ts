import { PROTOCOL_NAME } from '@agentwire/protocol';
import { GUARANTEE_IDS, type GuaranteeId, type Violation } from './guarantees.js';

/**
 * The storm probe's checker: pure (no sockets, no timers, no clock of its own). Feed it what
 * happened on each connection — open, every received frame as text, every sent user_message,
 * the close — with the time it happened, and it reports every break of the contract's
 * client-visible guarantees. One StormChecker holds a set of users; all connections of a user
 * must be fed to the same checker so that cross-connection comparisons are possible.
 */

export const EVENT_TYPES: ReadonlySet<string> = new Set([
  'agent_started',
  'agent_thinking',
  'agent_thinking_delta',
  'agent_text_delta',
  'tool_executing',
  'tool_completed',
  'agent_completed',
  'agent_error',
]);
const MAX_DETAIL = 400;

export interface CheckerOptions {
  /** Violations kept as examples per guarantee (all are counted). Default 5. */
  readonly maxExamples?: number;
}

export type JsonObject = Record<string, unknown>;

interface SentMessage {
  readonly threadId: string;
  readonly connection: ConnectionChecker;
  answer: 'ack' | 'error' | null;
}

interface UserRun {
  messageId: string | null;
  acked: boolean;
  startSeq: number | null;
  terminalSeen: boolean;
}

interface ConnRun {
  threadId: string | null;
  started: boolean;
  terminal: boolean;
  readonly executing: Set<string>;
  /** The run's agent_text_delta texts so far, when this connection saw the run from its start. */
  streamed: string | null;
  /** The connection's gap count when the run started: a gap since means deltas may be missing. */
  gapsAtStart: number;
}

class UserState {
  readonly connections: ConnectionChecker[] = [];
  readonly sent = new Map<string, SentMessage>();
  readonly runs = new Map<string, UserRun>();
  /** Canonical text of each seq, as the first connection that received it saw it. */
  readonly bySeq = new Map<number, { canon: string; connection: string }>();
  /** Runs seen on this user's connections whose ownership was not (yet) established. */
  readonly unverified = new Map<string, { connection: string; seq: number | null; why: string }>();
  maxSeq = 0;
  constructor(readonly id: string) {}
}

/** A field of a server frame in a report: strings as they are, anything else as JSON. */
function fieldText(value: unknown): string {
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? 'undefined');
}

export class StormChecker {
  readonly counts: Record<GuaranteeId, number>;
  readonly examples: Record<GuaranteeId, Violation[]>;
  /** Acked runs that reached a terminal event on at least one connection of their user. */
  runsDone = 0;
  runsAcked = 0;
  eventsReceived = 0;
  readonly #maxExamples: number;
  readonly #users = new Map<string, UserState>();
  readonly #runOwner = new Map<string, string>();
  readonly #messageOwner = new Map<string, string>();
  #finished = false;

  constructor(options: CheckerOptions = {}) {
    this.#maxExamples = options.maxExamples ?? 5;
    this.counts = Object.fromEntries(GUARANTEE_IDS.map((id) => [id, 0])) as Record<GuaranteeId, number>;
    this.examples = Object.fromEntries(GUARANTEE_IDS.map((id) => [id, []])) as unknown as Record<GuaranteeId, Violation[]>;
  }

  get violationCount(): number {
    let total = 0;
    for (const id of GUARANTEE_IDS) total += this.counts[id];
    return total;
  }

  /** Registers a connection of `user` under the probe's own label (e.g. `c17`). */
  connection(label: string, user: string): ConnectionChecker {
    let state = this.#users.get(user);
    if (!state) {
      state = new UserState(user);
      this.#users.set(user, state);
    }
    const conn = new ConnectionChecker(this, state, label);
    state.connections.push(conn);
    return conn;
  }

  /** The user that owns a run, as far as this checker learned it (acks, agent_started). */
  runOwner(runId: string): string | undefined {
    return this.#runOwner.get(runId);
  }

  /** Runs this checker saw acked, with their users (for cross-worker attribution). */
  ownedRuns(): Map<string, string> {
    return new Map(this.#runOwner);
  }

  /**
   * Every acked run has a terminal event on every connection of its user that is still open,
   * and every such connection got its user's newest seq, whoever's run that seq is of (until
   * then, what finish() would report as a missing tail may still be on its way).
   */
  settled(): boolean {
    for (const user of this.#users.values()) {
      for (const conn of user.connections) if (conn.isOpenAndReady && conn.lastSeq < user.maxSeq) return false;
      for (const [runId, run] of user.runs) {
        if (!run.acked) continue;
        for (const conn of user.connections) {
          if (!conn.isOpenAndReady) continue;
          if (run.startSeq !== null && run.startSeq <= conn.readyLastSeq) continue;
          if (conn.runTerminal(runId) !== true) return false;
        }
      }
      for (const sent of user.sent.values()) if (sent.answer === null && sent.connection.isOpenAndReady) return false;
    }
    return true;
  }

  /**
   * Final checks, once traffic is over and before the probe closes its connections: unanswered
   * messages, runs without a terminal event, connections that missed the tail of their user's
   * events, and runs that never proved to belong to the user whose connection received them.
   * `foreignOwner` may name the owner of a run that another checker (worker) saw acked.
   */
  finish(atMs: number, foreignOwner: (runId: string) => string | undefined = () => undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    for (const user of this.#users.values()) {
      for (const conn of user.connections) conn.finishConnection(atMs);
      for (const [messageId, sent] of user.sent) {
        if (sent.answer === null) {
          this.report('messages_acked', user.id, sent.connection.label, `user_message ${messageId} got neither ack nor error`, atMs);
        }
      }
      for (const [runId, run] of user.runs) {
        if (!run.acked) continue;
        if (run.startSeq === null && !user.connections.some((c) => c.sawRun(runId))) {
          this.report(
            'runs_complete',
            user.id,
            null,
            `run ${runId} (message ${run.messageId}) was acked but none of its events arrived on any connection`,
            atMs,
          );
          continue;
        }
        for (const conn of user.connections) {
          if (!conn.isOpenAndReady) continue;
          if (run.startSeq !== null && run.startSeq <= conn.readyLastSeq) continue;
          if (conn.runTerminal(runId) !== true) {
            this.report('runs_complete', user.id, conn.label, `run ${runId} has no terminal event on this connection (${conn.describeRun(runId)})`, atMs);
          }
        }
      }
      for (const conn of user.connections) {
        if (conn.isOpenAndReady && conn.lastSeq < user.maxSeq) {
          this.report(
            'seq_contiguous',
            user.id,
            conn.label,
            `missing tail: last seq received ${conn.lastSeq}, but the user's newest seq is ${user.maxSeq}`,
            atMs,
          );
        }
      }
      for (const [runId, seen] of user.unverified) {
        if (this.#runOwner.get(runId) === user.id) continue;
        const owner = this.#runOwner.get(runId) ?? foreignOwner(runId);
        this.report(
          'no_cross_user',
          user.id,
          seen.connection,
          `run ${runId} ${owner ? `belongs to ${owner}` : 'was never started by this user'} (${seen.why}${seen.seq === null ? '' : `, seq ${seen.seq}`})`,
          atMs,
        );
      }
    }
  }

  /** @internal */
  report(guarantee: GuaranteeId, user: string, connection: string | null, detail: string, atMs: number | null): void {
    this.counts[guarantee] += 1;
    const examples = this.examples[guarantee];
    if (examples.length < this.#maxExamples) {
      examples.push({ guarantee, user, connection, detail: truncate(detail), atMs });
    }
  }

  /** @internal Records that `user` sent `messageId`; false if another user already sent that id. */
  claimMessage(user: string, messageId: string): string | undefined {
    const owner = this.#messageOwner.get(messageId);
    if (owner === undefined) this.#messageOwner.set(messageId, user);
    return owner;
  }

  /** @internal */
  messageOwner(messageId: string): string | undefined {
    return this.#messageOwner.get(messageId);
  }

  /** @internal */
  setRunOwner(runId: string, user: string): string | undefined {
    const owner = this.#runOwner.get(runId);
    if (owner === undefined) this.#runOwner.set(runId, user);
    return owner;
  }
}

/** What the checker knows about one connection; created by StormChecker.connection(). */
export class ConnectionChecker {
  openAt: number | null = null;
  readyAt: number | null = null;
  closedAt: number | null = null;
  closeCode: number | null = null;
  failed = false;
  /** connection_ready.last_seq (the baseline of this connection's seq range). */
  readyLastSeq = 0;
  /** Highest seq received in order. */
  lastSeq = 0;
  frames = 0;
  #ready = false;
  #nextSeq = 1;
  #firstFrameBad = false;
  #noReadyReported = false;
  readonly #runs = new Map<string, ConnRun>();
  /** Gaps found in this connection's seqs (each is reported as seq_contiguous). */
  #gaps = 0;
  readonly #threadActive = new Map<string, string>();
  readonly #crossReported = new Set<string>();

  /** @internal */
  readonly #checker: StormChecker;
  readonly #user: UserState;

  constructor(
    checker: StormChecker,
    user: UserState,
    readonly label: string,
  ) {
    this.#checker = checker;
    this.#user = user;
  }

  get userId(): string {
    return this.#user.id;
  }

  get isReady(): boolean {
    return this.#ready;
  }

  get isOpenAndReady(): boolean {
    return this.#ready && this.closedAt === null && !this.failed;
  }

  /** The socket opened; `protocol` is the subprotocol the server selected ('' for none). */
  opened(atMs: number, protocol: string): void {
    this.openAt = atMs;
    if (protocol !== PROTOCOL_NAME) {
      this.#report(
        'subprotocol',
        `server selected ${protocol === '' ? 'no subprotocol' : JSON.stringify(protocol.slice(0, 60))}, expected ${PROTOCOL_NAME}`,
        atMs,
      );
    }
  }

  /** The connection could not be opened at all (refused, HTTP status instead of an upgrade...). */
  connectFailed(atMs: number, reason: string): void {
    if (this.openAt !== null || this.failed) return;
    this.failed = true;
    this.#noReadyReported = true;
    this.#report('ready_first', `connection failed before it opened: ${reason}`, atMs);
  }

  /** The probe gave up waiting for connection_ready. */
  readyTimedOut(atMs: number, timeoutMs: number): void {
    if (this.#ready || this.#noReadyReported) return;
    this.#noReadyReported = true;
    this.#report('ready_first', `no connection_ready within ${timeoutMs} ms of opening (${this.frames} other frames received)`, atMs);
  }

  /** Call just before sending a user_message on this connection. */
  sent(messageId: string, threadId: string, atMs: number): void {
    const owner = this.#checker.claimMessage(this.#user.id, messageId);
    if (owner !== undefined && owner !== this.#user.id) {
      throw new Error(`storm checker: message id ${messageId} is already used by user ${owner}`);
    }
    if (this.#user.sent.has(messageId)) throw new Error(`storm checker: message id ${messageId} sent twice`);
    this.#user.sent.set(messageId, { threadId, connection: this, answer: null });
    void atMs;
  }

  /**
   * The socket closed. `byProbe` is true when the probe initiated the close (then only 1011 is
   * a violation); a close the probe did not ask for is a violation whatever its code.
   */
  closed(code: number, reason: string, atMs: number, byProbe: boolean): void {
    if (this.closedAt !== null) return;
    this.closedAt = atMs;
    this.closeCode = code;
    if (this.failed && this.openAt === null) return;
    const text = `${code}${reason ? ` (${reason.slice(0, 80)})` : ''}`;
    if (code === 1011) this.#report('no_1011', `closed with 1011 ${reason ? `(${reason.slice(0, 80)})` : ''}`.trim(), atMs);
    else if (!byProbe) this.#report('no_unexpected_close', `closed by the server with ${text} before the probe closed it`, atMs);
  }

  /**
   * One received text frame. Returns the parsed object (so the caller need not parse it again)
   * or null when it was not a JSON object with a string type.
   */
  frame(text: string, atMs: number): JsonObject | null {
    this.frames += 1;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.#report('frame_format', `frame is not JSON: ${text.slice(0, 80)}`, atMs);
      return null;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as JsonObject).type !== 'string') {
      this.#report('frame_format', `frame is not an object with a string type: ${text.slice(0, 80)}`, atMs);
      return null;
    }
    const frame = value as JsonObject;
    const type = frame.type as string;
    if (!this.#ready) {
      if (type === 'connection_ready') {
        this.#onReady(frame, atMs);
        return frame;
      }
      if (!this.#firstFrameBad) {
        this.#firstFrameBad = true;
        this.#report('ready_first', `frame ${this.frames} is ${describe(frame)} but no connection_ready came before it`, atMs);
      }
    } else if (type === 'connection_ready') {
      this.#report('ready_first', `a second connection_ready arrived (frame ${this.frames})`, atMs);
      return frame;
    }
    if (typeof frame.user_id === 'string' && frame.user_id !== this.#user.id) {
      this.#report('no_cross_user', `${type} frame carries user_id ${frame.user_id}`, atMs);
    }
    if (type === 'ack') this.#onAck(frame, atMs);
    else if (type === 'error') this.#onError(frame, atMs);
    else if (EVENT_TYPES.has(type)) this.#onEvent(frame, atMs);
    else if (frame.seq !== undefined) this.#report('frame_format', `frame with seq ${fieldText(frame.seq)} has unknown event type ${type}`, atMs);
    return frame;
  }

  /** @internal */
  runTerminal(runId: string): boolean | undefined {
    return this.#runs.get(runId)?.terminal;
  }

  /** @internal */
  sawRun(runId: string): boolean {
    return this.#runs.has(runId);
  }

  /** @internal */
  describeRun(runId: string): string {
    const run = this.#runs.get(runId);
    if (!run) return 'no event of it arrived here';
    return run.started ? 'started, never ended' : 'events arrived, but neither agent_started nor a terminal event';
  }

  /** @internal */
  finishConnection(atMs: number): void {
    if (!this.#ready && !this.#noReadyReported && !this.failed) {
      this.#noReadyReported = true;
      this.#report('ready_first', `no connection_ready by the end of the storm (${this.frames} frames received)`, atMs);
    }
  }

  #onReady(frame: JsonObject, atMs: number): void {
    this.#ready = true;
    this.readyAt = atMs;
    if (frame.user_id !== this.#user.id) {
      this.#report('no_cross_user', `connection_ready names user_id ${JSON.stringify(frame.user_id)}, the token was for ${this.#user.id}`, atMs);
    }
    const lastSeq = frame.last_seq;
    if (typeof lastSeq !== 'number' || !Number.isInteger(lastSeq) || lastSeq < 0) {
      this.#report('frame_format', `connection_ready.last_seq is ${JSON.stringify(lastSeq)}, not an integer >= 0`, atMs);
      return;
    }
    const replayed = frame.resumed === true && typeof frame.replayed === 'number' ? frame.replayed : 0;
    this.readyLastSeq = lastSeq - replayed;
    this.lastSeq = this.readyLastSeq;
    this.#nextSeq = this.readyLastSeq + 1;
    if (lastSeq > this.#user.maxSeq) this.#user.maxSeq = lastSeq;
  }

  #onAck(frame: JsonObject, atMs: number): void {
    const id = frame.id;
    const sent = typeof id === 'string' ? this.#user.sent.get(id) : undefined;
    if (typeof id !== 'string' || !sent) {
      const owner = typeof id === 'string' ? this.#checker.messageOwner(id) : undefined;
      if (owner !== undefined && owner !== this.#user.id) this.#report('no_cross_user', `ack for message ${fieldText(id)} of user ${owner}`, atMs);
      else this.#report('messages_acked', `ack for an id this user never sent: ${JSON.stringify(id)}`, atMs);
      return;
    }
    if (sent.connection !== this) this.#report('messages_acked', `ack for ${id} arrived on ${this.label}, it was sent on ${sent.connection.label}`, atMs);
    if (sent.answer !== null) {
      this.#report('messages_acked', `second answer (ack ${String(frame.status)}) for ${id}`, atMs);
      return;
    }
    sent.answer = 'ack';
    if (frame.status !== 'started' && frame.status !== 'queued') {
      this.#report('messages_acked', `ack for fresh id ${id} has status ${JSON.stringify(frame.status)}, expected started or queued`, atMs);
    }
    if (frame.thread_id !== sent.threadId) {
      this.#report('messages_acked', `ack for ${id} names thread ${JSON.stringify(frame.thread_id)}, the message was sent on ${sent.threadId}`, atMs);
    }
    const runId = frame.run_id;
    if (typeof runId !== 'string' || runId.length === 0) {
      this.#report('messages_acked', `ack for ${id} has no run_id`, atMs);
      return;
    }
    const owner = this.#checker.setRunOwner(runId, this.#user.id);
    if (owner !== undefined && owner !== this.#user.id) {
      this.#report('no_cross_user', `ack for ${id} names run ${runId} of user ${owner}`, atMs);
      return;
    }
    const run = this.#user.runs.get(runId);
    if (run?.acked) {
      this.#report('messages_acked', `ack for ${id} names run ${runId}, already the run of message ${run.messageId}`, atMs);
      return;
    }
    if (run) {
      if (run.messageId !== null && run.messageId !== id) {
        this.#report('messages_acked', `ack for ${id} names run ${runId}, whose agent_started was for message ${run.messageId}`, atMs);
      }
      run.acked = true;
      run.messageId = id;
      if (run.terminalSeen) this.#checker.runsDone += 1;
    } else {
      this.#user.runs.set(runId, { messageId: id, acked: true, startSeq: null, terminalSeen: false });
    }
    this.#checker.runsAcked += 1;
    this.#user.unverified.delete(runId);
  }

  #onError(frame: JsonObject, atMs: number): void {
    const ref = frame.ref;
    this.#report(
      'no_error_frames',
      `error ${fieldText(frame.code)}: ${fieldText(frame.message ?? '').slice(0, 120)} (ref ${JSON.stringify(ref ?? null)})`,
      atMs,
    );
    const sent = typeof ref === 'string' ? this.#user.sent.get(ref) : undefined;
    if (sent && sent.answer === null) sent.answer = 'error';
  }

  #onEvent(frame: JsonObject, atMs: number): void {
    this.#checker.eventsReceived += 1;
    const type = frame.type as string;
    const seq = frame.seq;
    const runId = frame.run_id;
    const threadId = frame.thread_id;
    const seqOk = typeof seq === 'number' && Number.isInteger(seq) && seq >= 1;
    const missing: string[] = [];
    if (!seqOk) missing.push(`seq ${JSON.stringify(seq)}`);
    if (typeof runId !== 'string' || runId.length === 0) missing.push('run_id');
    if (typeof threadId !== 'string' || threadId.length === 0) missing.push('thread_id');
    if (typeof frame.ts !== 'string' || !ISO_8601.test(frame.ts) || Number.isNaN(Date.parse(frame.ts))) {
      missing.push(`ts ${JSON.stringify(frame.ts)}`);
    }
    if (missing.length > 0) this.#report('frame_format', `${type} event with bad or missing ${missing.join(', ')}`, atMs);

    // An event the seq check refused (duplicate, out of order) counts once, there: it is not
    // compared with other connections nor checked again within its run.
    const accepted = seqOk ? this.#checkSeq(seq, type, atMs) : true;
    if (accepted && seqOk) this.#checkSame(frame, seq, atMs);
    if (typeof runId !== 'string' || runId.length === 0) return;
    const seqOrNull = seqOk ? seq : null;
    this.#checkOwner(frame, runId, seqOrNull, atMs);
    if (accepted) this.#checkRun(frame, runId, typeof threadId === 'string' ? threadId : null, seqOrNull, atMs);
  }

  /** True when the event is accepted in the connection's sequence (in order, or after a gap). */
  #checkSeq(seq: number, type: string, atMs: number): boolean {
    if (seq > this.#user.maxSeq) this.#user.maxSeq = seq;
    if (!this.#ready) return true;
    if (seq === this.#nextSeq) {
      this.#nextSeq = seq + 1;
      this.lastSeq = seq;
      return true;
    }
    if (seq > this.#nextSeq) {
      this.#gaps += 1;
      const gap = seq - this.#nextSeq;
      this.#report('seq_contiguous', `gap: expected seq ${this.#nextSeq}, got ${seq} (${type}); ${gap} event${gap === 1 ? '' : 's'} missing`, atMs);
      this.#nextSeq = seq + 1;
      this.lastSeq = seq;
      return true;
    }
    this.#report(
      'seq_contiguous',
      `${seq <= this.readyLastSeq ? 'event at or before connection_ready.last_seq' : 'duplicate or out of order'}: seq ${seq} (${type}) after seq ${this.#nextSeq - 1}`,
      atMs,
    );
    return false;
  }

  #checkSame(frame: JsonObject, seq: number, atMs: number): void {
    const canon = canonical(frame);
    const first = this.#user.bySeq.get(seq);
    if (!first) {
      this.#user.bySeq.set(seq, { canon, connection: this.label });
    } else if (first.canon !== canon) {
      this.#report('same_events', `seq ${seq} differs from ${first.connection}: ${first.canon.slice(0, 150)} vs ${canon.slice(0, 150)}`, atMs);
    }
  }

  #checkOwner(frame: JsonObject, runId: string, seq: number | null, atMs: number): void {
    const owner = this.#checker.runOwner(runId);
    if (owner === this.#user.id || this.#crossReported.has(runId)) return;
    if (owner !== undefined) {
      this.#crossReported.add(runId);
      this.#report('no_cross_user', `${String(frame.type)} of run ${runId} of user ${owner} (seq ${seq})`, atMs);
      return;
    }
    if (frame.type === 'agent_started' && typeof frame.message_id === 'string') {
      const messageOwner = this.#checker.messageOwner(frame.message_id);
      if (messageOwner === this.#user.id) {
        this.#checker.setRunOwner(runId, this.#user.id);
        this.#user.unverified.delete(runId);
        return;
      }
      if (messageOwner !== undefined) {
        this.#crossReported.add(runId);
        this.#report('no_cross_user', `agent_started of run ${runId} for message ${frame.message_id} of user ${messageOwner} (seq ${seq})`, atMs);
        return;
      }
    }
    if (!this.#user.unverified.has(runId)) {
      this.#user.unverified.set(runId, { connection: this.label, seq, why: `first seen as ${String(frame.type)} on ${this.label}` });
    }
  }

  #checkRun(frame: JsonObject, runId: string, threadId: string | null, seq: number | null, atMs: number): void {
    const type = frame.type as string;
    const at = `run ${runId}, seq ${seq}`;
    let run = this.#runs.get(runId);
    if (!run) {
      run = { threadId, started: false, terminal: false, executing: new Set(), streamed: null, gapsAtStart: this.#gaps };
      this.#runs.set(runId, run);
      if (type !== 'agent_started') this.#report('run_order', `first event of the run on this connection is ${type}, not agent_started (${at})`, atMs);
    } else if (threadId !== null && run.threadId !== null && threadId !== run.threadId) {
      this.#report('frame_format', `${type} names thread ${threadId}, the run's earlier events named ${run.threadId} (${at})`, atMs);
    }
    if (run.threadId === null) run.threadId = threadId;
    if (run.terminal) {
      this.#report('run_order', `${type} after the run's terminal event (${at})`, atMs);
      return;
    }
    const userRun = this.#userRun(runId);
    switch (type) {
      case 'agent_started': {
        if (run.started) {
          this.#report('run_order', `second agent_started (${at})`, atMs);
          break;
        }
        run.started = true;
        if (seq !== null && userRun.startSeq === null) userRun.startSeq = seq;
        if (threadId !== null) {
          const active = this.#threadActive.get(threadId);
          if (active !== undefined && active !== runId) {
            this.#report('thread_serial', `run ${runId} started on thread ${threadId} while run ${active} had not ended (seq ${seq})`, atMs);
          }
          this.#threadActive.set(threadId, runId);
        }
        if (userRun.messageId === null && typeof frame.message_id === 'string') userRun.messageId = frame.message_id;
        break;
      }
      case 'tool_executing': {
        if (typeof frame.call_id === 'string') run.executing.add(frame.call_id);
        else this.#report('frame_format', `tool_executing without a string call_id (${at})`, atMs);
        break;
      }
      case 'tool_completed': {
        if (typeof frame.call_id !== 'string') this.#report('frame_format', `tool_completed without a string call_id (${at})`, atMs);
        else if (!run.executing.has(frame.call_id)) {
          this.#report('run_order', `tool_completed for call ${frame.call_id} without its tool_executing before it (${at})`, atMs);
        }
        break;
      }
      case 'agent_text_delta':
      case 'agent_thinking_delta': {
        if (typeof frame.text !== 'string' || frame.text.length === 0) {
          this.#report('frame_format', `${type} without a non-empty text (${at})`, atMs);
        } else if (type === 'agent_text_delta' && run.started) {
          run.streamed = (run.streamed ?? '') + frame.text;
        }
        break;
      }
      case 'agent_completed':
      case 'agent_error': {
        // Seen whole on this connection (from agent_started, no gap): the answer is what streamed.
        if (type === 'agent_completed' && run.started && run.streamed !== null && run.gapsAtStart === this.#gaps && frame.text !== run.streamed) {
          this.#report(
            'stream_whole',
            `agent_completed.text ${JSON.stringify(truncate(String(frame.text)))} is not its deltas ${JSON.stringify(truncate(run.streamed))} (${at})`,
            atMs,
          );
        }
        run.streamed = null;
        run.terminal = true;
        if (run.threadId !== null && this.#threadActive.get(run.threadId) === runId) this.#threadActive.delete(run.threadId);
        if (!userRun.terminalSeen) {
          userRun.terminalSeen = true;
          if (userRun.acked) this.#checker.runsDone += 1;
        }
        break;
      }
      default:
        break;
    }
  }

  #userRun(runId: string): UserRun {
    let run = this.#user.runs.get(runId);
    if (!run) {
      run = { messageId: null, acked: false, startSeq: null, terminalSeen: false };
      this.#user.runs.set(runId, run);
    }
    return run;
  }

  #report(guarantee: GuaranteeId, detail: string, atMs: number): void {
    this.#checker.report(guarantee, this.#user.id, this.label, detail, atMs);
  }
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

/** JSON with object keys sorted, so that two encodings of one event compare equal. */
export function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonical((value as JsonObject)[key])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function describe(frame: JsonObject): string {
  return typeof frame.seq === 'number' ? `${String(frame.type)} (seq ${frame.seq})` : String(frame.type);
}

function truncate(text: string): string {
  return text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL - 1)}…` : text;
}
