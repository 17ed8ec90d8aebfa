import { randomUUID } from 'node:crypto';
import type { Clock, TimerHandle } from '../clock.js';
import type { EventEngine, MessageClaim } from '../engine/types.js';
import type { AgentErrorCode, EventBody, EventPayload } from '../protocol/events.js';
import type { Agent, AgentStep } from './agent.js';

export type ThreadPolicy = 'enqueue' | 'reject';
export type RunOutcome = 'completed' | 'cancelled' | AgentErrorCode;

export interface RunManagerOptions {
  readonly engine: EventEngine;
  readonly agent: Agent;
  readonly clock: Clock;
  readonly threadPolicy: ThreadPolicy;
  readonly runTimeoutMs: number;
  /** Runs waiting behind a busy thread; one more gets `thread_busy`. Default 32. */
  readonly maxQueuedPerThread?: number;
  readonly onRunEnded?: (outcome: RunOutcome) => void;
  readonly onFault?: (error: unknown, context: string) => void;
}

export interface MessageRequest {
  readonly id: string;
  readonly threadId: string;
  readonly text: string;
}

export type SubmitReply =
  | { readonly kind: 'ack'; readonly status: 'started' | 'queued' | 'duplicate'; readonly runId: string; readonly threadId: string }
  | { readonly kind: 'error'; readonly code: 'thread_busy'; readonly message: string };

export type CancelReply =
  | { readonly kind: 'ack'; readonly status: 'cancelling'; readonly runId: string; readonly threadId: string }
  | { readonly kind: 'error'; readonly code: 'run_not_found' | 'forbidden'; readonly message: string };

interface Run {
  readonly id: string;
  readonly userId: string;
  readonly threadId: string;
  readonly messageId: string;
  readonly text: string;
  readonly controller: AbortController;
  started: boolean;
  finished: boolean;
  cancelRequested: boolean;
  answer: string;
  /** Appends of this run, chained so the log receives them in order. */
  appended: Promise<void>;
  timeout: TimerHandle | null;
}

type Terminal =
  | { type: 'agent_completed'; status: 'completed' | 'cancelled'; text: string }
  | { type: 'agent_error'; code: AgentErrorCode; message: string };

const noop = () => {};

/**
 * Runs agents for users: per-thread serialization (FIFO or reject), idempotent message ids,
 * cancel, run timeout, and exactly one terminal event per run. Runs belong to the user, not to
 * a connection, so a disconnect does not stop them.
 */
export class RunManager {
  readonly #runs = new Map<string, Run>();
  /** Per user+thread: the running run first, then the queued ones in arrival order. */
  readonly #threads = new Map<string, Run[]>();
  readonly #maxQueued: number;
  #shuttingDown = false;
  #idleWaiters: Array<() => void> = [];

  constructor(private readonly options: RunManagerOptions) {
    this.#maxQueued = options.maxQueuedPerThread ?? 32;
  }

  /** Runs started or queued and not yet ended. */
  get liveRuns(): number {
    return this.#runs.size;
  }

  /**
   * Handles one `user_message`. `reply` is called exactly once, before any event of a run it
   * started is appended, so the sender sees its ack before `agent_started`.
   */
  async submit(userId: string, message: MessageRequest, reply: (reply: SubmitReply) => void): Promise<void> {
    const candidate: MessageClaim = { runId: `run_${randomUUID()}`, threadId: message.threadId };
    const existing = await this.options.engine.claimMessage(userId, message.id, candidate);
    if (existing) {
      reply({ kind: 'ack', status: 'duplicate', runId: existing.runId, threadId: existing.threadId });
      return;
    }
    const key = threadKey(userId, message.threadId);
    const queue = this.#threads.get(key);
    if (queue && (this.options.threadPolicy === 'reject' || queue.length > this.#maxQueued)) {
      await this.options.engine.releaseMessage(userId, message.id);
      reply({
        kind: 'error',
        code: 'thread_busy',
        message:
          this.options.threadPolicy === 'reject'
            ? `thread ${message.threadId} has a run in progress`
            : `thread ${message.threadId} already has ${this.#maxQueued} queued runs`,
      });
      return;
    }
    const run: Run = {
      id: candidate.runId,
      userId,
      threadId: message.threadId,
      messageId: message.id,
      text: message.text,
      controller: new AbortController(),
      started: false,
      finished: false,
      cancelRequested: false,
      answer: '',
      appended: Promise.resolve(),
      timeout: null,
    };
    this.#runs.set(run.id, run);
    if (queue) {
      queue.push(run);
      reply({ kind: 'ack', status: 'queued', runId: run.id, threadId: run.threadId });
      return;
    }
    this.#threads.set(key, [run]);
    reply({ kind: 'ack', status: 'started', runId: run.id, threadId: run.threadId });
    void this.#execute(run);
  }

  cancel(userId: string, runId: string): CancelReply {
    const run = this.#runs.get(runId);
    if (!run) return { kind: 'error', code: 'run_not_found', message: `no active run ${runId}` };
    if (run.userId !== userId) {
      return { kind: 'error', code: 'forbidden', message: `run ${runId} belongs to another user` };
    }
    run.cancelRequested = true;
    // A queued run ends when its turn comes, so runs on the thread still never overlap.
    if (run.started) this.#finish(run, { type: 'agent_completed', status: 'cancelled', text: run.answer });
    return { kind: 'ack', status: 'cancelling', runId: run.id, threadId: run.threadId };
  }

  /**
   * Graceful drain: live runs get up to `timeoutMs`; then every run still live ends with
   * `agent_error` code `shutdown`. Resolves once every terminal event is appended.
   */
  async drain(timeoutMs: number): Promise<void> {
    if (this.#runs.size > 0) {
      let timer: TimerHandle | undefined;
      await Promise.race([
        this.#whenIdle(),
        new Promise<void>((resolve) => (timer = this.options.clock.setTimeout(resolve, timeoutMs))),
      ]);
      if (timer !== undefined) this.options.clock.clearTimeout(timer);
    }
    this.#shuttingDown = true;
    for (const run of [...this.#runs.values()]) {
      if (run.started) this.#finish(run, shutdownError());
    }
    await this.#whenIdle();
  }

  #whenIdle(): Promise<void> {
    if (this.#runs.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  async #execute(run: Run): Promise<void> {
    run.started = true;
    this.#append(run, { type: 'agent_started', message_id: run.messageId, text: run.text });
    if (this.#shuttingDown) return this.#finish(run, shutdownError());
    if (run.cancelRequested) {
      return this.#finish(run, { type: 'agent_completed', status: 'cancelled', text: '' });
    }
    run.timeout = this.options.clock.setTimeout(
      () => this.#finish(run, { type: 'agent_error', code: 'timeout', message: `run exceeded ${this.options.runTimeoutMs} ms` }),
      this.options.runTimeoutMs,
    );
    try {
      const steps = this.options.agent.run({
        runId: run.id,
        userId: run.userId,
        threadId: run.threadId,
        messageId: run.messageId,
        text: run.text,
        signal: run.controller.signal,
      });
      for await (const step of steps) {
        if (run.finished) break;
        if (step.type === 'answer') {
          run.answer = step.text;
          continue;
        }
        this.#append(run, stepEvent(step));
        // Backpressure: an agent never runs ahead of its own log.
        await run.appended;
      }
      this.#finish(run, { type: 'agent_completed', status: 'completed', text: run.answer });
    } catch (error) {
      this.#finish(run, {
        type: 'agent_error',
        code: 'agent_failed',
        message: error instanceof Error ? error.message : String(error),
      });
    }
  }

  #append(run: Run, event: EventPayload): void {
    const body = { ...event, run_id: run.id, thread_id: run.threadId, ts: new Date(this.options.clock.now()).toISOString() } as EventBody;
    run.appended = run.appended
      .then(() => this.options.engine.append(run.userId, [body]))
      .then(noop, (error) => this.options.onFault?.(error, `append ${body.type} of ${run.id}`));
  }

  /** The single place a run ends: exactly one terminal event, then the thread moves on. */
  #finish(run: Run, terminal: Terminal): void {
    if (run.finished) return;
    run.finished = true;
    if (run.timeout !== null) this.options.clock.clearTimeout(run.timeout);
    run.controller.abort(new Error(terminal.type === 'agent_error' ? terminal.code : terminal.status));
    this.#append(run, terminal);
    void run.appended.then(() => {
      this.#runs.delete(run.id);
      this.options.onRunEnded?.(terminal.type === 'agent_error' ? terminal.code : terminal.status);
      this.#advanceThread(run);
      if (this.#runs.size === 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    });
  }

  #advanceThread(finished: Run): void {
    const key = threadKey(finished.userId, finished.threadId);
    const queue = this.#threads.get(key);
    if (!queue) return;
    queue.shift();
    const next = queue[0];
    if (next) void this.#execute(next);
    else this.#threads.delete(key);
  }
}

function threadKey(userId: string, threadId: string): string {
  return `${userId}\u0000${threadId}`;
}

function shutdownError(): Terminal {
  return { type: 'agent_error', code: 'shutdown', message: 'the gateway shut down before the run finished' };
}

function stepEvent(step: Exclude<AgentStep, { type: 'answer' }>): EventPayload {
  switch (step.type) {
    case 'thinking':
      return { type: 'agent_thinking', text: step.text };
    case 'tool_call':
      return { type: 'tool_executing', call_id: step.callId, tool: step.tool, args: step.args };
    case 'tool_result':
      return { type: 'tool_completed', call_id: step.callId, tool: step.tool, ok: step.ok, result: step.result };
  }
}
