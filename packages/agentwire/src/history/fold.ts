import type { DurableEvent } from '@agentwire/protocol';
import type { AssistantMessageView, ConversationTurn, MessageView, RunStatus, ThreadSummary, ToolCallView } from './types.js';

// The thread view as a pure fold of a user's durable events (PROTOCOL.md sections 7 and 14): no
// I/O, no clock. Folding is incremental — folding a stream in one pass or in chunks gives the
// same state — so a store can fold the log page by page. The state is mutated in place (it is
// the caller's own); every view handed out is a fresh copy. A store keeps one fold per user and
// feeds it what was appended since, so reading a page costs O(page), not O(events): threads are
// kept ordered by recency, runs by start, and the oldest runs can be dropped (`dropRunsBefore`)
// as the folded window of the log moves on.

/** Titles are the first user message cut to this many characters (section 14). */
export const TITLE_CHARACTERS = 80;
/** Longest title `PATCH /v1/threads/<id>` gives, in code points. */
export const MAX_TITLE_CHARACTERS = 200;

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
  /** Seq and time of the run's newest applied event (its thread's are the newest of its runs'). */
  lastSeq: number;
  updatedAt: string;
}

/** A thread is derived from its runs: title and creation from the first, update from the newest event. */
interface ThreadFold {
  readonly threadId: string;
  title: string;
  createdAt: string;
  updatedAt: string;
  /** Seq of the thread's newest event: orders threads (most recently updated first). */
  lastSeq: number;
  /** In start order. */
  readonly runs: RunFold[];
}

/** The folded state of one user's events. */
export interface HistoryFold {
  readonly threads: Map<string, ThreadFold>;
  /** In start order (insertion order: runs start in seq order). */
  readonly runs: Map<string, RunFold>;
  /** Every thread, by `lastSeq` ascending: the thread list is a slice from the end. */
  readonly recency: ThreadFold[];
  /** The newest seq folded; older or equal seqs are ignored, so overlapping reads are harmless. */
  lastSeq: number;
  /**
   * Seq of the newest `agent_started` ignored because its run had started already (0: none). A
   * fold of the log from after the first start would take that one instead, so dropping runs
   * below it cannot give the same state (`dropRunsBefore` refuses).
   */
  shadowedStart: number;
  /** Events the fold leaves out (deleted threads); decided per event, before it is applied. */
  readonly exclude: ((event: DurableEvent) => boolean) | undefined;
}

/** A message of a thread with its position: messages are ordered by position, oldest first. */
export interface PositionedMessage {
  readonly position: number;
  readonly message: MessageView;
}

export function createFold(exclude?: (event: DurableEvent) => boolean): HistoryFold {
  return { threads: new Map(), runs: new Map(), recency: [], lastSeq: 0, shadowedStart: 0, exclude };
}

/** Stored JSON that must be an object: its fields, or null for anything else (never a throw). */
export function parseJsonObject(json: string): Record<string, unknown> | null {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return null;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

/**
 * Parses one log entry's JSON into a durable event, or null when it is not a well-formed one
 * (logs are storage, and storage is not trusted: a malformed entry is skipped, never thrown).
 */
export function parseEvent(json: string): DurableEvent | null {
  const e = parseJsonObject(json);
  if (e === null) return null;
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
  touch(fold, fold.threads.get(run.threadId)!, run, event);
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
  if (fold.runs.has(event.run_id)) {
    fold.shadowedStart = event.seq;
    return;
  }
  let thread = fold.threads.get(event.thread_id);
  if (!thread) {
    thread = { threadId: event.thread_id, title: cutTitle(event.text), createdAt: event.ts, updatedAt: event.ts, lastSeq: event.seq, runs: [] };
    fold.threads.set(event.thread_id, thread);
    fold.recency.push(thread);
  }
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
    lastSeq: event.seq,
    updatedAt: event.ts,
  };
  thread.runs.push(run);
  fold.runs.set(event.run_id, run);
  touch(fold, thread, run, event);
}

/** The run's event is the newest of all: its thread moves to the end of `recency`. */
function touch(fold: HistoryFold, thread: ThreadFold, run: RunFold, event: DurableEvent): void {
  run.lastSeq = event.seq;
  run.updatedAt = event.ts;
  // A thread's events mostly come in a row: then it is the last already and keeps its place.
  if (fold.recency.at(-1) !== thread) {
    fold.recency.splice(recencyIndex(fold.recency, thread.lastSeq), 1);
    fold.recency.push(thread);
  }
  thread.updatedAt = event.ts;
  thread.lastSeq = event.seq;
}

/** Index of the first thread in `recency` whose `lastSeq` is >= `seq`. */
function recencyIndex(recency: readonly ThreadFold[], seq: number): number {
  return lowerBound(recency.length, (i) => recency[i]!.lastSeq < seq);
}

/** Index of the first run in `runs` whose `startSeq` is >= `seq`. */
function runIndex(runs: readonly RunFold[], seq: number): number {
  return lowerBound(runs.length, (i) => runs[i]!.startSeq < seq);
}

/** The first index in [0, length) where `before` turns false (it is true, then false). */
function lowerBound(length: number, before: (i: number) => boolean): number {
  let low = 0;
  let high = length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (before(middle)) low = middle + 1;
    else high = middle;
  }
  return low;
}

/**
 * Drops the runs that started before `floor`, leaving the fold of the events from `floor` on
 * (which never shows a run whose `agent_started` it did not see). Returns false, changing
 * nothing, when that fold would differ (`shadowedStart`): the caller folds those events afresh.
 */
export function dropRunsBefore(fold: HistoryFold, floor: number): boolean {
  if (fold.shadowedStart >= floor) return false;
  const dropped = new Map<ThreadFold, number>();
  for (const run of fold.runs.values()) {
    if (run.startSeq >= floor) break;
    fold.runs.delete(run.runId);
    const thread = fold.threads.get(run.threadId)!;
    dropped.set(thread, (dropped.get(thread) ?? 0) + 1);
  }
  for (const [thread, count] of dropped) {
    const newestBefore = thread.lastSeq;
    // A thread's runs start in order, so the dropped ones are its first.
    thread.runs.splice(0, count);
    const first = thread.runs[0];
    if (!first) {
      fold.threads.delete(thread.threadId);
      fold.recency.splice(recencyIndex(fold.recency, newestBefore), 1);
      continue;
    }
    thread.title = cutTitle(first.userText);
    thread.createdAt = first.createdAt;
    const newest = thread.runs.reduce((a, b) => (b.lastSeq > a.lastSeq ? b : a));
    if (newest.lastSeq === newestBefore) continue;
    // The thread's newest event was a dropped run's: it moves back to its remaining newest.
    fold.recency.splice(recencyIndex(fold.recency, newestBefore), 1);
    thread.lastSeq = newest.lastSeq;
    thread.updatedAt = newest.updatedAt;
    fold.recency.splice(recencyIndex(fold.recency, thread.lastSeq), 0, thread);
  }
  return true;
}

/** The first `TITLE_CHARACTERS` characters (code points: a surrogate pair is never split). */
export function cutTitle(text: string): string {
  return cutCharacters(text, TITLE_CHARACTERS);
}

/** The first `max` characters of `text`, counted in code points as titles are (never half a surrogate pair). */
export function cutCharacters(text: string, max: number): string {
  // Fewer UTF-16 units than `max` cannot hold more code points: the common case copies nothing.
  if (text.length <= max) return text;
  let cut = '';
  let count = 0;
  for (const char of text) {
    if (count++ === max) break;
    cut += char;
  }
  return cut;
}

/** A thread with the seq that orders it (a thread-list cursor). */
export type PositionedThread = ThreadSummary & { readonly lastSeq: number };

/**
 * The user's threads updated before `beforeSeq`, most recently updated first, at most `limit`;
 * `more` when older ones remain. O(log threads + limit).
 */
export function threadPage(fold: HistoryFold, beforeSeq: number, limit: number): { readonly items: PositionedThread[]; readonly more: boolean } {
  const end = recencyIndex(fold.recency, beforeSeq);
  const start = Math.max(0, end - limit);
  const items: PositionedThread[] = [];
  for (let i = end - 1; i >= start; i--) items.push(summaryOf(fold.recency[i]!));
  return { items, more: start > 0 };
}

export function threadSummary(fold: HistoryFold, threadId: string): PositionedThread | null {
  const thread = fold.threads.get(threadId);
  return thread ? summaryOf(thread) : null;
}

function summaryOf(thread: ThreadFold): PositionedThread {
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
  return thread ? runMessages(thread.runs) : null;
}

/**
 * The thread's last `limit` messages before position `before` (oldest first), `more` when older
 * ones remain; null when the thread has none folded. O(log runs + limit).
 */
export function messagePage(
  fold: HistoryFold,
  threadId: string,
  before: number,
  limit: number,
): { readonly items: PositionedMessage[]; readonly more: boolean } | null {
  const thread = fold.threads.get(threadId);
  if (!thread) return null;
  // Runs whose user message is before `before`; one run more than the page needs, so that a
  // message left over shows there are older ones.
  const end = runIndex(thread.runs, Math.ceil(before / 2));
  const older = runMessages(thread.runs.slice(Math.max(0, end - Math.ceil(limit / 2) - 1), end)).filter((m) => m.position < before);
  const items = older.slice(-limit);
  return { items, more: older.length > items.length };
}

function runMessages(runs: readonly RunFold[]): PositionedMessage[] {
  const messages: PositionedMessage[] = [];
  for (const run of runs) {
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
  const before = beforeRunId === undefined ? undefined : fold.runs.get(beforeRunId);
  const end = before?.threadId === threadId ? runIndex(runs, before.startSeq) : runs.length;
  // Newest first, from the end: only the turns returned are looked at.
  const newestFirst: ConversationTurn[] = [];
  for (let i = end - 1; i >= 0 && newestFirst.length < maxTurns; i--) {
    const run = runs[i]!;
    if (run.status === 'running' || run.status === 'queued') continue;
    if (run.text !== '' || run.toolCalls.size > 0) {
      newestFirst.push({ role: 'assistant', text: run.text, toolCalls: [...run.toolCalls.values()].map(toolCallView) });
    }
    newestFirst.push({ role: 'user', text: run.userText });
  }
  return newestFirst.slice(0, maxTurns).reverse();
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
