import type { DurableEvent } from '@agentwire/protocol';
import type { AssistantMessageView, ConversationTurn, MessageView, RunStatus, ThreadSummary, ToolCallView } from './types.js';

// The thread view as a pure fold of a user's durable events (PROTOCOL.md sections 7 and 14): no
// I/O, no clock. Folding is incremental — folding a stream in one pass or in chunks gives the
// same state — so a store can fold the log page by page. The state is mutated in place (it is
// the caller's own); every view handed out is a fresh copy.

/** Titles are the first user message cut to this many characters (section 14). */
export const TITLE_CHARACTERS = 80;

interface RunFold {
  readonly runId: string;
  readonly threadId: string;
  /** Seq of the run's `agent_started`: orders runs, and positions its messages. */
  readonly startSeq: number;
  readonly messageId: string;
  readonly userText: string;
  readonly createdAt: string;
  status: RunStatus;
  text: string;
  readonly thinking: string[];
  /** The last `thinking` entry is a run of thinking deltas the next delta extends. */
  thinkingOpen: boolean;
  /** By call id, in the order the calls began. */
  readonly toolCalls: Map<string, { callId: string; tool: string; args: Record<string, unknown>; ok?: boolean; result?: unknown }>;
  error: { code: string; message: string } | null;
  completedAt: string | null;
}

interface ThreadFold {
  readonly threadId: string;
  readonly title: string;
  readonly createdAt: string;
  updatedAt: string;
  /** Seq of the thread's newest event: orders threads (most recently updated first). */
  lastSeq: number;
  /** In start order. */
  readonly runs: RunFold[];
}

/** The folded state of one user's events. */
export interface HistoryFold {
  readonly threads: Map<string, ThreadFold>;
  readonly runs: Map<string, RunFold>;
  /** The newest seq folded; older or equal seqs are ignored, so overlapping reads are harmless. */
  lastSeq: number;
  /** Events the fold leaves out (deleted threads); decided per event, before it is applied. */
  readonly exclude: ((event: DurableEvent) => boolean) | undefined;
}

/** A message of a thread with its position: messages are ordered by position, oldest first. */
export interface PositionedMessage {
  readonly position: number;
  readonly message: MessageView;
}

export function createFold(exclude?: (event: DurableEvent) => boolean): HistoryFold {
  return { threads: new Map(), runs: new Map(), lastSeq: 0, exclude };
}

/**
 * Parses one log entry's JSON into a durable event, or null when it is not a well-formed one
 * (logs are storage, and storage is not trusted: a malformed entry is skipped, never thrown).
 */
export function parseEvent(json: string): DurableEvent | null {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  const e = value as Record<string, unknown>;
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) < 1) return null;
  if (typeof e.run_id !== 'string' || typeof e.thread_id !== 'string' || typeof e.ts !== 'string') return null;
  const isText = typeof e.text === 'string';
  switch (e.type) {
    case 'agent_started':
      return isText && typeof e.message_id === 'string' ? (e as unknown as DurableEvent) : null;
    case 'agent_thinking':
    case 'agent_thinking_delta':
    case 'agent_text_delta':
      return isText ? (e as unknown as DurableEvent) : null;
    case 'tool_executing':
      return typeof e.call_id === 'string' && typeof e.tool === 'string' && isPlainObject(e.args) ? (e as unknown as DurableEvent) : null;
    case 'tool_completed':
      return typeof e.call_id === 'string' && typeof e.tool === 'string' && typeof e.ok === 'boolean' ? (e as unknown as DurableEvent) : null;
    case 'agent_completed':
      return isText && (e.status === 'completed' || e.status === 'cancelled') ? (e as unknown as DurableEvent) : null;
    case 'agent_error':
      return typeof e.code === 'string' && typeof e.message === 'string' ? (e as unknown as DurableEvent) : null;
    default:
      return null;
  }
}

/**
 * Applies events in seq order. Events of a run whose `agent_started` was not folded (evicted
 * from the log, or excluded) are ignored, as is anything after a run's terminal event.
 */
export function foldEvents(fold: HistoryFold, events: Iterable<DurableEvent>): HistoryFold {
  for (const event of events) foldEvent(fold, event);
  return fold;
}

export function foldEvent(fold: HistoryFold, event: DurableEvent): void {
  if (event.seq <= fold.lastSeq) return;
  fold.lastSeq = event.seq;
  if (fold.exclude?.(event)) return;
  if (event.type === 'agent_started') return startRun(fold, event);
  const run = fold.runs.get(event.run_id);
  if (!run || run.threadId !== event.thread_id || run.status !== 'running') return;
  const thread = fold.threads.get(run.threadId)!;
  thread.updatedAt = event.ts;
  thread.lastSeq = event.seq;
  if (event.type !== 'agent_thinking_delta') run.thinkingOpen = false;
  switch (event.type) {
    case 'agent_thinking':
      run.thinking.push(event.text);
      break;
    case 'agent_thinking_delta':
      if (run.thinkingOpen) run.thinking[run.thinking.length - 1] += event.text;
      else run.thinking.push(event.text);
      run.thinkingOpen = true;
      break;
    case 'agent_text_delta':
      run.text += event.text;
      break;
    case 'tool_executing':
      if (!run.toolCalls.has(event.call_id)) run.toolCalls.set(event.call_id, { callId: event.call_id, tool: event.tool, args: event.args });
      break;
    case 'tool_completed': {
      const call = run.toolCalls.get(event.call_id);
      if (call && call.ok === undefined) {
        call.ok = event.ok;
        call.result = event.result;
      }
      break;
    }
    case 'agent_completed':
      run.status = event.status;
      // The answer is the concatenation of the deltas when the agent streamed; an empty text
      // (e.g. a cancel that carried none) keeps what had streamed.
      if (event.text !== '') run.text = event.text;
      run.completedAt = event.ts;
      break;
    case 'agent_error':
      run.status = 'error';
      run.error = { code: event.code, message: event.message };
      run.completedAt = event.ts;
      break;
  }
}

function startRun(fold: HistoryFold, event: Extract<DurableEvent, { type: 'agent_started' }>): void {
  if (fold.runs.has(event.run_id)) return;
  let thread = fold.threads.get(event.thread_id);
  if (!thread) {
    thread = { threadId: event.thread_id, title: cutTitle(event.text), createdAt: event.ts, updatedAt: event.ts, lastSeq: event.seq, runs: [] };
    fold.threads.set(event.thread_id, thread);
  }
  thread.updatedAt = event.ts;
  thread.lastSeq = event.seq;
  const run: RunFold = {
    runId: event.run_id,
    threadId: event.thread_id,
    startSeq: event.seq,
    messageId: event.message_id,
    userText: event.text,
    createdAt: event.ts,
    status: 'running',
    text: '',
    thinking: [],
    thinkingOpen: false,
    toolCalls: new Map(),
    error: null,
    completedAt: null,
  };
  thread.runs.push(run);
  fold.runs.set(event.run_id, run);
}

/** The first `TITLE_CHARACTERS` characters (code points: a surrogate pair is never split). */
export function cutTitle(text: string): string {
  let title = '';
  let count = 0;
  for (const char of text) {
    if (count++ === TITLE_CHARACTERS) break;
    title += char;
  }
  return title;
}

/** The user's threads, most recently updated first. */
export function threadSummaries(fold: HistoryFold): Array<ThreadSummary & { readonly lastSeq: number }> {
  return [...fold.threads.values()].sort((a, b) => b.lastSeq - a.lastSeq).map(summaryOf);
}

export function threadSummary(fold: HistoryFold, threadId: string): (ThreadSummary & { readonly lastSeq: number }) | null {
  const thread = fold.threads.get(threadId);
  return thread ? summaryOf(thread) : null;
}

function summaryOf(thread: ThreadFold): ThreadSummary & { readonly lastSeq: number } {
  const last = thread.runs.at(-1);
  return {
    threadId: thread.threadId,
    title: thread.title,
    createdAt: thread.createdAt,
    updatedAt: thread.updatedAt,
    lastRun: last ? { runId: last.runId, status: last.status } : null,
    lastSeq: thread.lastSeq,
  };
}

/**
 * A thread's messages, oldest first, or null when the thread has none folded. A run gives its
 * user message at position `2 * startSeq` and its answer at `2 * startSeq + 1`: positions only
 * grow as the log grows, so a cursor made of one stays valid.
 */
export function threadMessages(fold: HistoryFold, threadId: string): PositionedMessage[] | null {
  const thread = fold.threads.get(threadId);
  if (!thread) return null;
  const messages: PositionedMessage[] = [];
  for (const run of thread.runs) {
    messages.push({
      position: 2 * run.startSeq,
      message: { id: run.messageId, role: 'user', runId: run.runId, text: run.userText, createdAt: run.createdAt },
    });
    messages.push({ position: 2 * run.startSeq + 1, message: assistantView(run) });
  }
  return messages;
}

function assistantView(run: RunFold): AssistantMessageView {
  return {
    id: run.runId,
    role: 'assistant',
    runId: run.runId,
    status: run.status,
    text: run.text,
    thinking: [...run.thinking],
    toolCalls: [...run.toolCalls.values()].map(toolCallView),
    error: run.error && { ...run.error },
    createdAt: run.createdAt,
    completedAt: run.completedAt,
  };
}

function toolCallView(call: RunFold['toolCalls'] extends Map<string, infer C> ? C : never): ToolCallView {
  return call.ok === undefined
    ? { callId: call.callId, tool: call.tool, args: call.args }
    : { callId: call.callId, tool: call.tool, args: call.args, ok: call.ok, result: call.result };
}

/** Runs of the thread still running (not ended in the folded events). */
export function runningRuns(fold: HistoryFold, threadId: string): string[] {
  return (fold.threads.get(threadId)?.runs ?? []).filter((run) => run.status === 'running').map((run) => run.runId);
}

/**
 * The thread's conversation as an agent receives it: for each ended run before `beforeRunId`
 * (all runs when it is absent or not folded) its user turn and, when it said or did anything,
 * its answer with the tool calls; the last `maxTurns` turns, oldest first.
 */
export function conversationTurns(fold: HistoryFold, threadId: string, maxTurns: number, beforeRunId?: string): ConversationTurn[] {
  if (maxTurns <= 0) return [];
  const runs = fold.threads.get(threadId)?.runs ?? [];
  const before = beforeRunId === undefined ? -1 : runs.findIndex((run) => run.runId === beforeRunId);
  const turns: ConversationTurn[] = [];
  for (const run of before >= 0 ? runs.slice(0, before) : runs) {
    if (run.status === 'running' || run.status === 'queued') continue;
    turns.push({ role: 'user', text: run.userText });
    if (run.text !== '' || run.toolCalls.size > 0) {
      turns.push({ role: 'assistant', text: run.text, toolCalls: [...run.toolCalls.values()].map(toolCallView) });
    }
  }
  return turns.slice(-maxTurns);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
