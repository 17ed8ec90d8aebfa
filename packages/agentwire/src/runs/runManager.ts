import { randomUUID } from 'node:crypto';
import { sleep, type Clock, type TimerHandle } from '@agentwire/protocol';
import { RunEndedError, type EventEngine } from '../engine/types.js';
import { RunStamp, stampEvent, type AgentErrorCode, type EventBody, type EventPayload, type LogEntry } from '@agentwire/protocol';
import type { ConversationTurn, HistoryStore } from '../history/types.js';
import type { Agent, AgentStep } from './agent.js';
import { DeltaCoalescer, FlushScheduler, type MergedDelta } from './deltaCoalescer.js';
import { RunTextBudget, checkStep } from './stepBounds.js';
import { DEFAULTS } from '../config/settings.js';
import { atEndOfTick } from '../endOfTick.js';
import {
  LocalRunStore,
  type UnfinishedRun,
  type LostRun,
  type MessageClaim,
  type RunAssignment,
  type RunRecord,
  type RunStore,
  type ThreadPolicy,
} from './runStore.js';

/** How a run ended: its `agent_completed` status or its `agent_error` code. */
export type RunOutcome = 'completed' | 'cancelled' | AgentErrorCode;

export interface RunManagerOptions {
  readonly engine: EventEngine;
  readonly agent: Agent;
  readonly clock: Clock;
  readonly threadPolicy: ThreadPolicy;
  readonly runTimeoutMs: number;
  /** Longest a streamed fragment is held for merging with the next (section 7). Default: the setting's. */
  readonly streamFlushMs?: number;
  /** Runs waiting behind a busy thread; one more gets `thread_busy`. Default 32. */
  readonly maxQueuedPerThread?: number;
  /**
   * Runs of one user that may be running or queued at once, over all threads (and, with a
   * shared store, all nodes); one more gets `too_many_runs`. Default 32.
   */
  readonly maxActiveRunsPerUser?: number;
  /** Thread queues and run ownership. Default: in memory, for one node. */
  readonly store?: RunStore;
  /** How often a shared store is asked for runs whose node died. Default 2000 ms. */
  readonly lostRunSweepMs?: number;
  /** How long an append or thread step is retried while the engine is unavailable. Default 30000 ms. */
  readonly retryForMs?: number;
  /** Where a run's earlier turns come from (the history store); none: agents get no history. */
  readonly history?: Pick<HistoryStore, 'conversation'>;
  /** Earlier turns an agent receives at most. Default 20. */
  readonly historyTurns?: number;
  /** Entries this manager appended, as written (the history store's write-behind `record`). A throw is reported to `onFault` as 'on appended'. */
  readonly onAppended?: (userId: string, entries: readonly LogEntry[]) => void;
  readonly onRunEnded?: (outcome: RunOutcome) => void;
  /** `context` is a short constant (a metrics label); the error carries the details. */
  readonly onFault?: (error: unknown, context: string) => void;
}

export interface MessageRequest {
  readonly id: string;
  readonly threadId: string;
  readonly text: string;
}

export type SubmitReply =
  | { readonly kind: 'ack'; readonly status: 'started' | 'queued' | 'duplicate'; readonly runId: string; readonly threadId: string }
  | { readonly kind: 'error'; readonly code: 'thread_busy' | 'too_many_runs'; readonly message: string };

export type CancelReply =
  | { readonly kind: 'ack'; readonly status: 'cancelling'; readonly runId: string; readonly threadId: string }
  | { readonly kind: 'error'; readonly code: 'run_not_found' | 'forbidden'; readonly message: string };

/** A run executing on this node. */
interface ActiveRun {
  readonly record: RunRecord;
  readonly controller: AbortController;
  finished: boolean;
  /** Another node ended this run (its appends are refused): stop without a terminal event. */
  fencedOff: boolean;
  /** The terminal event could not be written; the lease lapses and a sweeper ends the run. */
  terminalLost: boolean;
  /** A step could not be written even after retries: the run is stopped, later steps dropped. */
  eventsLost: boolean;
  /** The run's agent_started event until an append carrying it succeeds. */
  unwrittenStart: EventBody | null;
  /** Set when the run's terminal event is decided. */
  outcome: RunOutcome | null;
  /** The last `answer` step; the completed text of a run that did not stream. */
  answer: string;
  /** The concatenation of the run's text fragments; null until it streams one. */
  streamedText: string | null;
  /** What is left of the text the run's agent may yield (stepBounds.ts). */
  readonly text: RunTextBudget;
  /** Merges the run's delta fragments; flushed before every other event of the run. */
  readonly deltas: DeltaCoalescer;
  /** Stamps the run's delta events. */
  readonly stamp: RunStamp;
  /** Events waiting for the next append of this run (one append carries them all). */
  pending: EventBody[];
  /** An append of the run is due at the end of the tick or in flight; it writes `pending` after it. */
  writing: boolean;
  /** Told when the run has nothing left to write (#written). */
  writtenWaiters: Array<() => void>;
  /** Append ids are `<appendIds>-<appends>`: unique without a random id per append. */
  readonly appendIds: string;
  appends: number;
  timeout: TimerHandle | null;
}

const TERMINAL_TYPES: ReadonlySet<string> = new Set(['agent_completed', 'agent_error']);

/** How long a run waits for its earlier turns before it starts without them. */
const HISTORY_TIMEOUT_MS = 2000;

/** "a tool_call step", "an answer step": how a fault message names the step. */
function aStep(type: string): string {
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type} step`;
}

/** The steps whose `text` counts against a run's RunTextBudget. */
const TEXT_STEPS: ReadonlySet<AgentStep['type']> = new Set(['answer', 'thinking', 'text_delta', 'thinking_delta']);

/** Events a run may have waiting for its log; the agent waits when it gets this far ahead. */
const MAX_PENDING_EVENTS = 64;

type Terminal = { type: 'agent_completed'; status: 'completed' | 'cancelled'; text: string } | { type: 'agent_error'; code: AgentErrorCode; message: string };

/**
 * Runs agents for users: idempotent message ids, per-thread serialization through the run
 * store (FIFO or reject), cancel, run timeout, and exactly one terminal event per run. Runs
 * belong to the user, not to a connection, so a disconnect does not stop them. With a shared
 * store, runs of a node that died are ended with `run_lost` by another node's sweeper.
 */
export class RunManager {
  readonly #active = new Map<string, ActiveRun>();
  readonly #store: RunStore;
  readonly #maxQueued: number;
  readonly #maxActive: number;
  readonly #retryForMs: number;
  readonly #timers: TimerHandle[] = [];
  #shuttingDown = false;
  /** Set by close(): retries of work in doubt stop. */
  #closed = false;
  #idleWaiters: Array<() => void> = [];
  /** Runs whose next append goes out at the end of this tick (#writeDue). */
  #due: ActiveRun[] = [];
  /**
   * Cancels of runs the store already handed to this node that it has not started yet (the
   * store's reply was still on its way): runId -> when requested. `#execute` consumes them.
   */
  readonly #earlyCancels = new Map<string, number>();
  /** The last `ts` stamped and its time (#now). */
  #stampedAt = Number.NaN;
  #stamped = '';
  /** Since when (on this manager's clock) contact with the store has been unbroken, and its break count then. */
  #contact = { breaks: -1, since: 0 };

  readonly #options: RunManagerOptions;
  /** The flush window of every run's delta coalescer, on one timer. */
  readonly #flushes: FlushScheduler;

  constructor(options: RunManagerOptions) {
    this.#options = options;
    this.#flushes = new FlushScheduler(options.clock, options.streamFlushMs ?? DEFAULTS.streamFlushMs);
    this.#store = options.store ?? new LocalRunStore({ now: () => options.clock.now() });
    this.#maxQueued = options.maxQueuedPerThread ?? 32;
    this.#maxActive = options.maxActiveRunsPerUser ?? 32;
    this.#retryForMs = options.retryForMs ?? 30_000;
    this.#store.onCancelRequest((runId) => {
      const run = this.#active.get(runId);
      if (run) this.#finish(run, cancelled(answerOf(run)));
      else this.#rememberCancel(runId);
    });
    const leaseMs = this.#store.leaseMs;
    if (leaseMs !== undefined) {
      this.#timers.push(
        options.clock.setInterval(() => void this.#renewLeases(), Math.max(10, Math.floor(leaseMs / 3))),
        options.clock.setInterval(() => void this.#endLostRuns(), options.lostRunSweepMs ?? 2000),
      );
    }
  }

  /** The delta holds the flush window ended, and those that outlasted it (FlushScheduler.holds). */
  get deltaHolds(): { readonly expired: number; readonly overdue: number } {
    return this.#flushes.holds;
  }

  /** Runs executing on this node, plus runs queued in a node-local store. */
  get liveRuns(): number {
    return this.#active.size + (this.#store.queuedCount ?? 0);
  }

  get nodeId(): string {
    return this.#store.nodeId;
  }

  /**
   * Handles one `user_message`. `reply` is called exactly once, before any event of a run it
   * started is appended, so the sender sees its ack before `agent_started`.
   */
  async submit(userId: string, message: MessageRequest, reply: (reply: SubmitReply) => void): Promise<void> {
    const record: RunRecord = {
      runId: `run_${randomUUID()}`,
      userId,
      threadId: message.threadId,
      messageId: message.id,
      text: message.text,
    };
    const duplicate = (claim: MessageClaim) => reply({ kind: 'ack', status: 'duplicate', runId: claim.runId, threadId: claim.threadId });
    // The store claims the message id, atomically with the enqueue.
    let outcome;
    try {
      outcome = await this.#store.enqueue(record, this.#options.threadPolicy, this.#maxQueued, { maxActive: this.#maxActive });
    } catch (error) {
      // The claim may have been made with the run: a retry of the message is then a duplicate of
      // that run rather than a second one, and the run must be started or left to its lease.
      this.#settleInDoubt(record);
      throw error;
    }
    if (typeof outcome === 'object') return duplicate(outcome.duplicate);
    if (outcome === 'absent') throw new Error('run store answered absent to an enqueue that was not replay-only');
    if (outcome === 'busy' || outcome === 'too_many_runs') {
      // Nothing was created: the id stays free, so the same message may be sent again later.
      reply(
        outcome === 'too_many_runs'
          ? { kind: 'error', code: 'too_many_runs', message: `at most ${this.#maxActive} runs may be running or queued at once` }
          : {
              kind: 'error',
              code: 'thread_busy',
              message:
                this.#options.threadPolicy === 'reject'
                  ? `thread ${message.threadId} has a run in progress`
                  : `thread ${message.threadId} already has ${this.#maxQueued} queued runs`,
            },
      );
      return;
    }
    reply({ kind: 'ack', status: outcome === 'start' ? 'started' : 'queued', runId: record.runId, threadId: record.threadId });
    if (outcome === 'start') void this.#execute({ record, cancelRequested: false });
  }

  /** Handles one `cancel`; like `submit`, `reply` comes before the run's terminal event. */
  async cancel(userId: string, runId: string, reply: (reply: CancelReply) => void): Promise<void> {
    const local = this.#active.get(runId);
    if (local && local.record.userId === userId) {
      reply({ kind: 'ack', status: 'cancelling', runId, threadId: local.record.threadId });
      this.#finish(local, cancelled(answerOf(local)));
      return;
    }
    const lookup = await this.#store.requestCancel(userId, runId);
    switch (lookup.kind) {
      case 'not_found':
        return reply({ kind: 'error', code: 'run_not_found', message: `no active run ${runId}` });
      case 'forbidden':
        return reply({ kind: 'error', code: 'forbidden', message: `run ${runId} belongs to another user` });
      default: {
        reply({ kind: 'ack', status: 'cancelling', runId, threadId: lookup.threadId });
        // Running here: the store sends no request to its own node, so end it (or, if it is
        // not started yet, when it starts).
        if (lookup.kind !== 'running' || lookup.owner !== this.nodeId) return;
        const run = this.#active.get(runId);
        if (run) this.#finish(run, cancelled(answerOf(run)));
        else this.#rememberCancel(runId);
      }
    }
  }

  /** Bounded: a request whose run never starts here is dropped after a minute. */
  #rememberCancel(runId: string): void {
    const now = this.#options.clock.now();
    for (const [id, at] of this.#earlyCancels) {
      if (now - at < 60_000 && this.#earlyCancels.size < 1000) break;
      this.#earlyCancels.delete(id);
    }
    this.#earlyCancels.set(runId, now);
  }

  /**
   * Graceful drain: live runs get up to `timeoutMs`; then every run still executing here ends
   * with `agent_error` code `shutdown`, and so does every run its thread hands this node next.
   * Resolves once every terminal event is appended.
   */
  async drain(timeoutMs: number): Promise<void> {
    if (this.liveRuns > 0) {
      let timer: TimerHandle | undefined;
      await Promise.race([this.#whenIdle(), new Promise<void>((resolve) => (timer = this.#options.clock.setTimeout(resolve, timeoutMs)))]);
      if (timer !== undefined) this.#options.clock.clearTimeout(timer);
    }
    this.#shuttingDown = true;
    for (const run of [...this.#active.values()]) this.#finish(run, shutdownError());
    await this.#whenIdle();
  }

  /** Stops lease renewal and the lost-run sweeper; call after `drain`. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#timers) this.#options.clock.clearInterval(timer);
    await this.#store.close();
  }

  #whenIdle(): Promise<void> {
    if (this.liveRuns === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * The store failed mid-enqueue (e.g. Redis dropped the link), so the run may exist with this
   * node as its owner, and nothing would execute it until its lease lapsed and a sweeper ended
   * it as lost. Once the store answers again, find out, without creating the run; if it is ours
   * to start, start it (the client, told the request failed, resends the id and gets
   * `duplicate` of this run).
   */
  #settleInDoubt(record: RunRecord): void {
    const settle = () => this.#store.enqueue(record, this.#options.threadPolicy, this.#maxQueued, { replayOnly: true, maxActive: this.#maxActive });
    this.#retry('enqueue in doubt', settle, () => this.#closed).then(
      // During a drain #execute ends it at once (agent_started, then `shutdown`) and moves its thread on.
      (outcome) => {
        if (outcome === 'start' && !this.#closed) this.#executeHere({ record, cancelRequested: false });
      },
      (error: unknown) => this.#options.onFault?.(error, 'enqueue in doubt'),
    );
  }

  /** A run the store handed to this node (after a thread advanced, or a settle); never twice. */
  #executeHere(assignment: RunAssignment): void {
    if (!this.#active.has(assignment.record.runId)) void this.#execute(assignment);
  }

  async #execute(assignment: RunAssignment): Promise<void> {
    const { record } = assignment;
    const run: ActiveRun = {
      deltas: new DeltaCoalescer({
        scheduler: this.#flushes,
        emit: (delta) => this.#queue(run, this.#deltaBody(run, delta)),
      }),
      record,
      stamp: new RunStamp(record.runId, record.threadId),
      controller: new AbortController(),
      finished: false,
      fencedOff: false,
      terminalLost: false,
      eventsLost: false,
      unwrittenStart: null,
      outcome: null,
      answer: '',
      streamedText: null,
      text: new RunTextBudget(),
      pending: [],
      writing: false,
      writtenWaiters: [],
      appendIds: randomUUID(),
      appends: 0,
      timeout: null,
    };
    this.#active.set(record.runId, run);
    this.#append(run, { type: 'agent_started', message_id: record.messageId, text: record.text });
    run.unwrittenStart = run.pending.at(-1)!;
    if (this.#shuttingDown) return this.#finish(run, shutdownError());
    const cancelledEarly = this.#earlyCancels.delete(record.runId);
    if (assignment.cancelRequested || cancelledEarly) return this.#finish(run, cancelled(''));
    run.timeout = this.#options.clock.setTimeout(
      () => this.#finish(run, { type: 'agent_error', code: 'timeout', message: `run exceeded ${this.#options.runTimeoutMs} ms` }),
      this.#options.runTimeoutMs,
    );
    try {
      const history = await this.#conversation(record);
      if (run.finished) return;
      const steps = this.#options.agent.run({
        runId: record.runId,
        userId: record.userId,
        threadId: record.threadId,
        messageId: record.messageId,
        text: record.text,
        history,
        signal: run.controller.signal,
      });
      for await (const step of steps) {
        if (run.finished) break;
        if (TEXT_STEPS.has(step.type)) {
          const fault = run.text.take((step as { text: unknown }).text);
          if (fault !== null)
            return this.#finish(run, { type: 'agent_error', code: 'agent_failed', message: `the agent yielded ${aStep(step.type)} ${fault}` });
        }
        switch (step.type) {
          case 'answer':
            run.answer = step.text;
            continue;
          case 'text_delta':
            run.deltas.add('agent_text_delta', step.text);
            // An empty fragment is dropped, and alone it does not make the run one that streamed.
            if (step.text.length > 0) run.streamedText = (run.streamedText ?? '') + step.text;
            break;
          case 'thinking_delta':
            run.deltas.add('agent_thinking_delta', step.text);
            break;
          default: {
            // Text is flat and always serialisable; the args or result of a tool step may be anything.
            const checked = step.type === 'thinking' ? { event: stepEvent(step), fault: null } : checkStep(stepEvent(step));
            // The run ends before the loop closes the agent (whose `finally` may take a while).
            if (checked.fault !== null)
              return this.#finish(run, { type: 'agent_error', code: 'agent_failed', message: `the agent yielded ${aStep(step.type)} ${checked.fault}` });
            run.deltas.flush();
            this.#append(run, checked.event);
          }
        }
        // Backpressure: an agent runs at most MAX_PENDING_EVENTS ahead of its own log.
        if (run.pending.length >= MAX_PENDING_EVENTS) await this.#written(run);
      }
      this.#finish(run, { type: 'agent_completed', status: 'completed', text: answerOf(run) }, true);
    } catch (error) {
      this.#finish(run, {
        type: 'agent_error',
        code: 'agent_failed',
        message: error instanceof Error ? error.message : String(error),
      });
    }
  }

  /**
   * The thread's earlier turns for the agent, within HISTORY_TIMEOUT_MS: a slow or failing
   * history store costs the agent its context (reported as a fault), never the run.
   */
  async #conversation(record: RunRecord): Promise<readonly ConversationTurn[]> {
    const maxTurns = Math.min(this.#options.historyTurns ?? 20, this.#options.agent.historyTurns ?? Number.POSITIVE_INFINITY);
    const history = this.#options.history;
    if (!history || maxTurns <= 0) return [];
    let timer: TimerHandle | undefined;
    try {
      return await Promise.race([
        history.conversation(record.userId, record.threadId, maxTurns, record.runId),
        new Promise<never>((_, reject) => {
          timer = this.#options.clock.setTimeout(() => reject(new Error(`history took over ${HISTORY_TIMEOUT_MS} ms`)), HISTORY_TIMEOUT_MS);
        }),
      ]);
    } catch (error) {
      this.#options.onFault?.(error, 'history');
      return [];
    } finally {
      if (timer !== undefined) this.#options.clock.clearTimeout(timer);
    }
  }

  /** The user's runs running or queued (any node), as far as the run store can say. */
  activeRuns(userId: string): Promise<UnfinishedRun[]> {
    return this.#store.activeRuns?.(userId) ?? Promise.resolve([]);
  }

  /**
   * Cancels every queued and running run of a thread (its deletion): those the run store lists,
   * and `alsoRunIds`, runs the caller knows to be running (e.g. from the log) when the store
   * cannot list them. Resolves with the ids of the runs it asked to cancel.
   */
  async cancelThreadRuns(userId: string, threadId: string, alsoRunIds: readonly string[] = []): Promise<string[]> {
    const active = (await this.activeRuns(userId)).filter((run) => run.threadId === threadId).map((run) => run.runId);
    const ignore = () => {};
    const runIds = [...new Set([...active, ...alsoRunIds])];
    await Promise.all(runIds.map((runId) => this.cancel(userId, runId, ignore)));
    return runIds;
  }

  /**
   * Queues an event of the run. Events queued while an append is in flight, or in the same tick,
   * go out together in the next append, so a fast agent costs one engine call (one Redis script,
   * one notification, one socket write per connection) per batch, not per event; the batch's
   * order is the order of the calls. A run's appends go out one after another, each at the end
   * of a tick (after the steps an agent yields without waiting on I/O), never on a timer; the runs
   * due in a tick share one end-of-tick job (endOfTick.ts), not a promise chain each.
   */
  #append(run: ActiveRun, event: EventPayload): void {
    this.#queue(run, this.#stamp(run, event));
  }

  #queue(run: ActiveRun, body: EventBody): void {
    run.pending.push(body);
    if (run.writing) return; // the append due or in flight writes it next
    run.writing = true;
    this.#writeAtEndOfTick(run);
  }

  #writeAtEndOfTick(run: ActiveRun): void {
    if (this.#due.push(run) === 1) atEndOfTick(this.#writeDue);
  }

  readonly #writeDue = (): void => {
    const runs = this.#due;
    this.#due = [];
    for (const run of runs) this.#writePending(run);
  };

  /** Resolves once the run has nothing left to write: every event queued is written or given up. */
  #written(run: ActiveRun): Promise<void> {
    if (!run.writing) return Promise.resolve();
    return new Promise((resolve) => run.writtenWaiters.push(resolve));
  }

  /**
   * Writes the run's pending events as one append; then the next batch, or tells the waiters.
   * One `then` on the engine's promise per append, not an async frame and a chain of wrappers:
   * this is the path of every event.
   */
  #writePending(run: ActiveRun): void {
    const batch = run.pending.splice(0);
    // After a lost batch only the terminal event goes out, behind agent_started if that was in
    // the lost batch: every run in the log begins with agent_started.
    const events = run.eventsLost ? lostRunEvents(run, batch) : batch;
    if (events.length === 0 || run.fencedOff) return this.#afterWrite(run);
    const ending = events.some((e) => TERMINAL_TYPES.has(e.type));
    const userId = run.record.userId;
    // One id for every attempt: an attempt whose reply was lost may have been applied.
    const fence = { runId: run.record.runId, terminal: ending, appendId: `${run.appendIds}-${++run.appends}` };
    this.#retry('append', () => this.#options.engine.append(userId, events, fence)).then(
      (entries) => {
        this.#appended(userId, entries);
        if (run.unwrittenStart && events.includes(run.unwrittenStart)) run.unwrittenStart = null;
        this.#afterWrite(run);
      },
      (error: unknown) => {
        this.#lostBatch(run, events, ending, error);
        this.#afterWrite(run);
      },
    );
  }

  /** Tells `onAppended` (archiving) what this manager wrote; a throw there is a fault, never the run's end. */
  #appended(userId: string, entries: LogEntry[]): void {
    try {
      this.#options.onAppended?.(userId, entries);
    } catch (error) {
      this.#options.onFault?.(error, 'on appended');
    }
  }

  /** An append of the run is done (written or given up): the next batch, or tell the waiters. */
  #afterWrite(run: ActiveRun): void {
    if (run.pending.length > 0) return this.#writeAtEndOfTick(run);
    run.writing = false;
    const waiters = run.writtenWaiters.splice(0);
    for (const resolve of waiters) resolve();
  }

  /** A batch could not be written: the run was fenced off, lost only its terminal event, or ends as failed. */
  #lostBatch(run: ActiveRun, events: readonly EventBody[], ending: boolean, error: unknown): void {
    if (error instanceof RunEndedError) return this.#fencedOff(run);
    this.#options.onFault?.(error, 'append');
    const terminalOnly = ending && events.every((e) => TERMINAL_TYPES.has(e.type) || e === run.unwrittenStart);
    if (terminalOnly) {
      // Only the terminal event is missing: the lease lapses and a sweeper ends the run.
      run.terminalLost = true;
      return;
    }
    // A run with a hole in its events must not go on: later steps would refer to a missing
    // one (a tool_completed without its tool_executing). It ends once, as failed, even if the
    // agent had finished meanwhile; its terminal event goes out in the next batch.
    run.eventsLost = true;
    const failure: Terminal = { type: 'agent_error', code: 'agent_failed', message: 'the event log was unavailable; the run was stopped' };
    if (!run.finished) return this.#finish(run, failure);
    run.outcome = 'agent_failed';
    const failed = this.#stamp(run, failure);
    const at = run.pending.findIndex((e) => TERMINAL_TYPES.has(e.type));
    if (at >= 0) run.pending[at] = failed;
    else if (ending) run.pending.push(failed);
  }

  #fencedOff(run: ActiveRun): void {
    run.fencedOff = true;
    this.#stop(run);
    this.#forget(run.record.runId);
  }

  #stamp(run: ActiveRun, event: EventPayload): EventBody {
    return stampEvent(event, { run_id: run.record.runId, thread_id: run.record.threadId, ts: this.#now() });
  }

  /**
   * A merged delta, stamped as `#stamp` would stamp it but without stampEvent's Object.assign
   * (about 75 ns), and encoded from the run's template (RunStamp): the most frequent event.
   */
  #deltaBody(run: ActiveRun, delta: MergedDelta): EventBody {
    return run.stamp.delta(delta.type, delta.text, this.#now());
  }

  /**
   * The single place a run ends: exactly one terminal event, then the thread moves on.
   * `agentReturned`: the agent's steps ended on their own, so there is nothing to abort.
   */
  #finish(run: ActiveRun, terminal: Terminal, agentReturned = false): void {
    if (run.finished) return;
    this.#stop(run, agentReturned);
    run.deltas.flush(); // what was held goes out before the terminal event, never after it
    run.outcome = terminal.type === 'agent_error' ? terminal.code : terminal.status;
    this.#append(run, terminal);
    void this.#written(run).then(() => {
      if (run.fencedOff || run.terminalLost) this.#forget(run.record.runId);
      else void this.#ended(run.record, run.outcome!);
    });
  }

  #stop(run: ActiveRun, agentReturned = false): void {
    run.finished = true;
    if (run.timeout !== null) this.#options.clock.clearTimeout(run.timeout);
    // The signal is for an agent still running (cancel, timeout, shutdown, a fault, another node's
    // end); aborting it costs an Error and an event dispatch (several µs), at every run's end.
    if (!agentReturned) run.controller.abort(new Error('run ended'));
  }

  /** The terminal event is in the log: hand the thread to its next run, then forget this one. */
  async #ended(record: RunRecord, outcome: RunOutcome): Promise<void> {
    try {
      const next = await this.#retry('advance', () => this.#store.advance(record));
      if (next) this.#executeHere(next);
    } catch (error) {
      this.#options.onFault?.(error, 'advance');
    }
    this.#forget(record.runId);
    this.#options.onRunEnded?.(outcome);
  }

  #forget(runId: string): void {
    this.#active.delete(runId);
    if (this.liveRuns > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /**
   * Retries an operation while the engine is unavailable, up to `retryForMs`. The first attempt
   * runs without an async frame of its own: it is the path of every append.
   */
  #retry<T>(context: string, operation: () => Promise<T>, abandoned: () => boolean = () => false): Promise<T> {
    const deadline = this.#options.clock.now() + this.#retryForMs;
    let first: Promise<T>;
    try {
      first = operation();
    } catch (error) {
      first = Promise.reject(error);
    }
    return first.catch((error: unknown) => this.#retryAfter(error, context, operation, abandoned, deadline));
  }

  /** #retry after its first attempt failed with `failure`. */
  async #retryAfter<T>(failure: unknown, context: string, operation: () => Promise<T>, abandoned: () => boolean, deadline: number): Promise<T> {
    let error = failure;
    for (let attempt = 0; ; attempt++) {
      if (error instanceof RunEndedError || this.#options.clock.now() >= deadline) throw error;
      if (attempt === 0) this.#options.onFault?.(error, `${context} retrying`);
      await sleep(this.#options.clock, Math.min(50 * 2 ** attempt, 1000));
      if (abandoned()) throw error;
      try {
        return await operation();
      } catch (next) {
        error = next;
      }
    }
  }

  async #renewLeases(): Promise<void> {
    try {
      await this.#store.renewLeases([...this.#active.values()].filter((run) => !run.finished).map((run) => run.record));
    } catch (error) {
      this.#options.onFault?.(error, 'renew leases');
    }
  }

  /**
   * Ends the runs of nodes that stopped renewing their leases (they died). A lease also lapses
   * while the store stalls or is down, for every node alike (one written during a stall may land
   * lapsed already), so this node judges leases only after a whole lease of its own unbroken
   * contact with the store: by then every live node, back in contact at the same moment, has
   * renewed its leases (a third of a lease apart), and only nodes that really stopped still hold
   * lapsed ones. The store calls a stall too short to lapse a lease no break, and compares
   * expiries with the time the sweep began, so a stall beginning mid-sweep changes nothing.
   */
  async #endLostRuns(): Promise<void> {
    if (!this.#inContactForALease()) return;
    let lost: LostRun[];
    try {
      lost = await this.#store.claimLostRuns(20, (runId) => this.#active.has(runId));
    } catch (error) {
      this.#options.onFault?.(error, 'claim lost runs');
      return;
    }
    for (const record of lost) {
      const stamp = { run_id: record.runId, thread_id: record.threadId, ts: this.#now() };
      const events: EventBody[] = [];
      // A run handed to a node that died before writing anything still starts before it ends.
      if (!record.started) events.push({ type: 'agent_started', message_id: record.messageId, text: record.text, ...stamp });
      events.push({ type: 'agent_error', code: 'run_lost', message: 'the node executing this run stopped', ...stamp });
      try {
        const entries = await this.#options.engine.append(record.userId, events, { runId: record.runId, terminal: true });
        this.#appended(record.userId, entries);
        this.#options.onRunEnded?.('run_lost');
      } catch (error) {
        // Already ended by its own node just before it died: only the thread must move on.
        // Any other failure: the claimed lease expires again and a later sweep retries.
        if (!(error instanceof RunEndedError)) {
          this.#options.onFault?.(error, 'end lost run');
          continue;
        }
      }
      try {
        const next = await this.#store.advance(record);
        if (next) this.#executeHere(next);
      } catch (error) {
        this.#options.onFault?.(error, 'advance after lost run');
      }
    }
  }

  #inContactForALease(): boolean {
    const contact = this.#store.contact;
    if (!contact) return true;
    const now = this.#options.clock.now();
    if (!contact.ok || contact.breaks !== this.#contact.breaks) {
      this.#contact = { breaks: contact.breaks, since: now };
      return false;
    }
    return now - this.#contact.since >= this.#store.leaseMs!;
  }

  /** The time stamped on events: runs streaming at once stamp many events per millisecond, each formatted once. */
  #now(): string {
    const ms = this.#options.clock.now();
    if (ms !== this.#stampedAt) {
      this.#stampedAt = ms;
      this.#stamped = new Date(ms).toISOString();
    }
    return this.#stamped;
  }
}

function lostRunEvents(run: ActiveRun, batch: readonly EventBody[]): EventBody[] {
  const terminal = batch.filter((e) => TERMINAL_TYPES.has(e.type));
  return run.unwrittenStart && terminal.length > 0 ? [run.unwrittenStart, ...terminal] : terminal;
}

/** `agent_completed.text`: the streamed fragments when the agent streamed, else its last answer. */
function answerOf(run: ActiveRun): string {
  return run.streamedText ?? run.answer;
}

function cancelled(text: string): Terminal {
  return { type: 'agent_completed', status: 'cancelled', text };
}

function shutdownError(): Terminal {
  return { type: 'agent_error', code: 'shutdown', message: 'the gateway shut down before the run finished' };
}

function stepEvent(step: Exclude<AgentStep, { type: 'answer' | 'text_delta' | 'thinking_delta' }>): EventPayload {
  switch (step.type) {
    case 'thinking':
      return { type: 'agent_thinking', text: step.text };
    case 'tool_call':
      return { type: 'tool_executing', call_id: step.callId, tool: step.tool, args: step.args };
    case 'tool_result':
      return { type: 'tool_completed', call_id: step.callId, tool: step.tool, ok: step.ok, result: step.result };
  }
}
