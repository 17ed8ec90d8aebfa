import type { DurableEvent } from '@agentwire/protocol';
import type { EventEngine, LogHead } from '../engine/types.js';
import type { UnfinishedRun } from '../runs/runStore.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { EventCache } from './eventCache.js';
import { conversationTurns, createFold, foldEvent, runningRuns, threadMessages, threadSummaries, threadSummary, type HistoryFold } from './fold.js';
import { MemoryThreadMarks, type ThreadMark, type ThreadMarkStore } from './threadMarks.js';
import type { ConversationTurn, HistoryStore, MessagesPage, Page, PageRequest, ThreadSummary } from './types.js';

/** Options of `createLogHistoryStore`. */
export interface LogHistoryStoreOptions {
  /** The log to fold (its `read` and `head`). */
  readonly engine: Pick<EventEngine, 'read' | 'head' | 'available'>;
  /** Renames and deletions. Default: in memory (one node); `RedisThreadMarks` shares them. */
  readonly marks?: ThreadMarkStore;
  /** Runs running or queued (the run store's `activeRuns`): `queued` status and deletions. */
  readonly activeRuns?: (userId: string) => Promise<UnfinishedRun[]>;
  /** The newest events of a user folded per request, at most. Default 10 000 (the default retention). */
  readonly maxEvents?: number;
  /** Parsed events kept between requests, over all users (least recently read users go first). Default 100 000. */
  readonly maxCachedEvents?: number;
}

interface Folded {
  readonly head: LogHead;
  readonly fold: HistoryFold;
  readonly marks: Map<string, ThreadMark>;
}

/**
 * The default history store: every answer is the fold of the user's retained log (as far as
 * `maxEvents` reaches), read through the engine, so with the Redis engine every node answers
 * alike. Nothing to set up, and nothing beyond retention: older history needs the PostgreSQL
 * store. Renames and deletions are marks kept beside the log (`ThreadMarkStore`).
 *
 * `queued`: a run accepted but not started has no event yet; when the run store can list active
 * runs, a thread whose newest run is queued reports it as `last_run` with status `queued`. Its
 * messages appear once it starts (its `agent_started` carries the user's text), so an answer's
 * messages are exactly the fold of the events up to its `last_seq`.
 */
export class LogHistoryStore implements HistoryStore {
  readonly #engine: LogHistoryStoreOptions['engine'];
  readonly #marks: ThreadMarkStore;
  readonly #activeRuns: LogHistoryStoreOptions['activeRuns'];
  readonly #maxEvents: number;
  readonly #cache: EventCache;

  constructor(options: LogHistoryStoreOptions) {
    this.#engine = options.engine;
    this.#marks = options.marks ?? new MemoryThreadMarks();
    this.#activeRuns = options.activeRuns;
    this.#maxEvents = options.maxEvents ?? 10_000;
    this.#cache = new EventCache(options.maxCachedEvents ?? 100_000);
  }

  get available(): boolean {
    return this.#engine.available !== false;
  }

  async listThreads(userId: string, page: PageRequest): Promise<Page<ThreadSummary>> {
    const before = page.cursor === undefined ? Number.POSITIVE_INFINITY : decodeCursor('threads', page.cursor);
    const [{ head, fold, marks }, active] = await Promise.all([this.#fold(userId), this.#activeRuns?.(userId) ?? []]);
    const all = threadSummaries(fold).filter((thread) => thread.lastSeq < before);
    const items = all.slice(0, page.limit);
    const last = items.at(-1);
    return {
      items: items.map((thread) => withMarks(thread, currentMark(marks, thread.threadId, head.epoch), active)),
      nextCursor: all.length > items.length && last ? encodeCursor('threads', last.lastSeq) : null,
    };
  }

  async messages(userId: string, threadId: string, page: PageRequest): Promise<MessagesPage | null> {
    const before = page.cursor === undefined ? Number.POSITIVE_INFINITY : decodeCursor('messages', page.cursor);
    const { head, fold } = await this.#fold(userId, threadId);
    const messages = threadMessages(fold, threadId);
    if (!messages) return null;
    const older = messages.filter((m) => m.position < before);
    const items = older.slice(-page.limit);
    return {
      epoch: head.epoch,
      lastSeq: head.lastSeq,
      items: items.map((m) => m.message),
      nextCursor: older.length > items.length ? encodeCursor('messages', items[0]!.position) : null,
    };
  }

  async renameThread(userId: string, threadId: string, title: string): Promise<ThreadSummary | null> {
    const { head, fold, marks } = await this.#fold(userId, threadId);
    const thread = threadSummary(fold, threadId);
    if (!thread) return null;
    const mark: ThreadMark = { ...currentMark(marks, threadId, head.epoch), title };
    await this.#marks.put(userId, threadId, mark);
    return withMarks(thread, mark, (await this.#activeRuns?.(userId)) ?? []);
  }

  async deleteThread(userId: string, threadId: string): Promise<boolean> {
    const [{ head, fold, marks }, active] = await Promise.all([this.#fold(userId, threadId), this.#activeRuns?.(userId) ?? []]);
    if (!threadSummary(fold, threadId)) return false;
    // Runs still going end after the deletion (their terminal event, or a queued one's
    // agent_started) and must not bring the thread back: their later events are deleted too.
    const deletedRuns = new Set([...runningRuns(fold, threadId), ...active.filter((run) => run.threadId === threadId).map((run) => run.runId)]);
    const previous = currentMark(marks, threadId, head.epoch);
    await this.#marks.put(userId, threadId, {
      epoch: head.epoch,
      deletedThrough: head.lastSeq,
      deletedRuns: [...new Set([...(previous.deletedRuns ?? []), ...deletedRuns])],
    });
    return true;
  }

  async conversation(userId: string, threadId: string, maxTurns: number, beforeRunId?: string): Promise<ConversationTurn[]> {
    if (maxTurns <= 0) return [];
    const { fold } = await this.#fold(userId, threadId);
    return conversationTurns(fold, threadId, maxTurns, beforeRunId);
  }

  /** Folding the log is all this store does: what a node appends is in the log already. */
  record(): void {}

  async close(): Promise<void> {}

  /**
   * Folds the user's newest `maxEvents` events up to the head read first, so the answer
   * includes exactly the events up to `head.lastSeq`; only what was appended since this node's
   * last read of the user is read and parsed (EventCache). With `onlyThread`, only that
   * thread's events are folded.
   */
  async #fold(userId: string, onlyThread?: string): Promise<Folded> {
    const [head, marks] = await Promise.all([this.#engine.head(userId), this.#marks.all(userId)]);
    const events = await this.#cache.events(this.#engine, userId, head, Math.max(1, head.lastSeq - this.#maxEvents + 1));
    const fold = createFold(excluder(marks, head.epoch));
    for (const event of events) {
      if (onlyThread === undefined || event.thread_id === onlyThread) foldEvent(fold, event);
    }
    return { head, fold, marks };
  }
}

/** Creates the default, log-folded history store (see `LogHistoryStore`). */
export function createLogHistoryStore(options: LogHistoryStoreOptions): LogHistoryStore {
  return new LogHistoryStore(options);
}

/** The thread's mark in this epoch (marks of a lost log's epoch mean nothing). */
function currentMark(marks: Map<string, ThreadMark>, threadId: string, epoch: string): ThreadMark {
  const mark = marks.get(threadId);
  return mark?.epoch === epoch ? mark : { epoch };
}

function excluder(marks: Map<string, ThreadMark>, epoch: string): ((event: DurableEvent) => boolean) | undefined {
  const deletions = new Map<string, { through: number; runs: ReadonlySet<string> }>();
  for (const [threadId, mark] of marks) {
    if (mark.epoch === epoch && mark.deletedThrough !== undefined) {
      deletions.set(threadId, { through: mark.deletedThrough, runs: new Set(mark.deletedRuns) });
    }
  }
  if (deletions.size === 0) return undefined;
  return (event) => {
    const deletion = deletions.get(event.thread_id);
    return deletion !== undefined && (event.seq <= deletion.through || deletion.runs.has(event.run_id));
  };
}

function withMarks(thread: ThreadSummary, mark: ThreadMark, active: readonly UnfinishedRun[]): ThreadSummary {
  const queued = active.filter((run) => run.threadId === thread.threadId && run.state === 'queued').at(-1);
  return {
    threadId: thread.threadId,
    title: mark.title ?? thread.title,
    createdAt: thread.createdAt,
    updatedAt: thread.updatedAt,
    lastRun: queued ? { runId: queued.runId, status: 'queued' } : thread.lastRun,
  };
}
