import type { LogEntry } from '@agentwire/protocol';

// Thread history (PROTOCOL.md section 14): what the history routes answer, what agents receive as
// the conversation so far, and the one interface both history stores implement.

/** The status of a thread's run as the history routes report it. */
export type RunStatus = 'queued' | 'running' | 'completed' | 'cancelled' | 'error';

/** One thread in `GET /v1/threads`. Times are ISO-8601. */
export interface ThreadSummary {
  readonly threadId: string;
  /** The first user message cut to 80 characters, until renamed. */
  readonly title: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly lastRun: { readonly runId: string; readonly status: RunStatus } | null;
}

/** A tool call of an assistant message, with its result once it came. */
export interface ToolCallView {
  readonly callId: string;
  readonly tool: string;
  readonly args: Record<string, unknown>;
  readonly ok?: boolean;
  readonly result?: unknown;
}

/** A user's message: the `user_message` that started a run. */
export interface UserMessageView {
  readonly id: string;
  readonly role: 'user';
  readonly runId: string;
  readonly text: string;
  readonly createdAt: string;
}

/** A run's answer as far as it has streamed (`text` grows with every `agent_text_delta`). */
export interface AssistantMessageView {
  /** The run id. */
  readonly id: string;
  readonly role: 'assistant';
  readonly runId: string;
  readonly status: RunStatus;
  readonly text: string;
  readonly thinking: readonly string[];
  readonly toolCalls: readonly ToolCallView[];
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly createdAt: string;
  readonly completedAt: string | null;
}

/** A message of a thread: the user's or the assistant's. */
export type MessageView = UserMessageView | AssistantMessageView;

/** One page of an answer; `nextCursor` is opaque to callers (null: no more). */
export interface Page<T> {
  readonly items: readonly T[];
  readonly nextCursor: string | null;
}

/** `GET /v1/threads/<id>/messages`: a page of messages and the log position it includes. */
export interface MessagesPage extends Page<MessageView> {
  /** The user's log epoch and the seq of the newest event this answer already includes. */
  readonly epoch: string;
  readonly lastSeq: number;
}

/** One earlier turn of a thread as an agent receives it (oldest first). */
export interface ConversationTurn {
  readonly role: 'user' | 'assistant';
  readonly text: string;
  /** The assistant turn's tool calls (absent on user turns). */
  readonly toolCalls?: readonly ToolCallView[];
}

/** Thrown by a `HistoryStore` for a cursor it did not make (the routes answer 400 `invalid_request`). */
export class InvalidCursorError extends Error {
  override readonly name = 'InvalidCursorError';
  constructor() {
    super('cursor is not valid');
  }
}

/** Paging of a list: at most `limit` items after `cursor` (a `nextCursor` of an earlier page). */
export interface PageRequest {
  readonly limit: number;
  readonly cursor?: string;
}

/** Counters of a store that archives the log (PostgreSQL), since the node started. */
export interface ArchiveProgress {
  /** Events this node wrote to the archive (not counting ones already there). */
  readonly archived: number;
  /** Events that left the log's retention before any node archived them. */
  readonly lost: number;
  /** Archive transactions that failed (their events are caught up from the log). */
  readonly failedBatches: number;
  /** Events not queued because the queue was full (caught up from the log later). */
  readonly dropped: number;
  /** Events this node appended that are not archived yet: queued, or in the batch being written. */
  readonly lag: number;
  /** User logs with a range to catch up from the log (after an outage, a drop or a hole). */
  readonly behind: number;
}

/**
 * Thread history. Two implementations side by side: folded from the engine's retained log (the
 * default) and PostgreSQL (`AGENTWIRE_DATABASE_URL`), which archives the log write-behind.
 * Every method is per user: another user's thread is absent exactly like a missing one.
 */
export interface HistoryStore {
  /** The user's threads, most recently updated first. */
  listThreads(userId: string, page: PageRequest): Promise<Page<ThreadSummary>>;
  /** A page of a thread's messages (oldest first within the page; cursors page to older ones), or null when the thread does not exist. */
  messages(userId: string, threadId: string, page: PageRequest): Promise<MessagesPage | null>;
  /** Renames a thread; null when it does not exist. */
  renameThread(userId: string, threadId: string, title: string): Promise<ThreadSummary | null>;
  /**
   * Deletes a thread's history; false when it did not exist. The caller cancels its runs and
   * names them in `endingRunIds`: events they append after the deletion (a cancelled queued
   * run's start, a running one's last deltas and end) must not bring the thread back.
   */
  deleteThread(userId: string, threadId: string, endingRunIds?: readonly string[]): Promise<boolean>;
  /** The thread's last `maxTurns` turns before the run `beforeRunId` (or all when absent), oldest first. */
  conversation(userId: string, threadId: string, maxTurns: number, beforeRunId?: string): Promise<ConversationTurn[]>;
  /**
   * Entries this node just appended to the user's log (write-behind archiving; a store that
   * folds the log itself ignores it). Never throws and never waits for storage.
   */
  record(userId: string, entries: readonly LogEntry[]): void;
  /** A store that archives the log: how far its archive is (exported on `/metrics`). */
  archiveProgress?(): ArchiveProgress;
  /** False while the store's storage is unreachable (drives `/readyz`, section 10). */
  readonly available: boolean;
  close(): Promise<void>;
}
