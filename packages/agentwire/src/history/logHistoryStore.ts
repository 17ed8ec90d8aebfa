import type { EventEngine, LogHead } from '../engine/types.js';
import type { UnfinishedRun } from '../runs/runStore.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { conversationTurns, messagePage, runningRuns, threadPage, threadSummary } from './fold.js';
import { FoldCache, type Deletion, type UserFold } from './foldCache.js';
import { MemoryThreadMarks, type DeadMark, type ThreadMark, type ThreadMarkStore } from './threadMarks.js';
import type { ConversationTurn, HistoryStore, MessagesPage, Page, PageRequest, ThreadSummary } from './types.js';

/** Writes of a rename or deletion tried, each after reading the marks again, before giving up. */
const MAX_MARK_ATTEMPTS = 5;
/** Users whose next pruning threshold is remembered; a forgotten one is pruned again at the minimum. */
const MAX_PRUNE_THRESHOLDS = 10_000;

/** Options of `createLogHistoryStore`. */
export interface LogHistoryStoreOptions {
  /** The log to fold (its `read` and `head`). */
  readonly engine: Pick<EventEngine, 'read' | 'head' | 'available' | 'retentionEvents'>;
  /** Renames and deletions. Default: in memory (one node); `RedisThreadMarks` shares them. */
  readonly marks?: ThreadMarkStore;
  /**
   * Runs running or queued (the run store's `activeRuns`): a deletion also deletes their later
   * events. (A queued run as a thread's `last_run` is the routes' to add, for every store.)
   * Without it, no mark a run could still change (a deletion naming runs, a rename) is pruned.
   */
  readonly activeRuns?: (userId: string) => Promise<UnfinishedRun[]>;
  /** The newest events of a user folded, at most (and never more than the engine's `retentionEvents`). Default 10 000. */
  readonly maxEvents?: number;
  /** Events whose fold is kept between requests, over all users (least recently read users go first). Default 100 000. */
  readonly maxCachedEvents?: number;
  /**
   * A user's marks are pruned (`pruneMarks`, in the background) when a fold finds at least this
   * many, and next only once as many as twice what that pruning kept. Default 64.
   */
  readonly marksBeforePruning?: number;
  /** Told of what fails off the request path (pruning marks). */
  readonly onFault?: (error: unknown, context: string) => void;
}

interface Folded {
  readonly head: LogHead;
  readonly user: UserFold;
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
  readonly #cache: FoldCache;
  readonly #marksBeforePruning: number;
  /**
   * Whether a fold reaches as far back as the log keeps events. Only then can it tell that the
   * log no longer holds what a mark hides or renames: with a narrower window (`maxEvents` below
   * the engine's `retentionEvents`), a node folding more would show what this one judged gone.
   */
  readonly #foldsWholeLog: boolean;
  readonly #onFault: LogHistoryStoreOptions['onFault'];
  /** Marks at which each user is pruned next (oldest entry first), past `#marksBeforePruning`. */
  readonly #pruneAt = new Map<string, number>();
  /** Prunings under way, by user: one per user at a time; close() waits for them. */
  readonly #pruning = new Map<string, Promise<unknown>>();
  #closed = false;

  constructor(options: LogHistoryStoreOptions) {
    this.#engine = options.engine;
    this.#marks = options.marks ?? new MemoryThreadMarks();
    this.#activeRuns = options.activeRuns;
    // Never wider than the log: a kept fold would go on showing runs the log no longer holds,
    // which a fresh fold (another node's, or after a deletion) does not.
    const retention = options.engine.retentionEvents;
    const window = Math.min(options.maxEvents ?? 10_000, retention ?? Number.POSITIVE_INFINITY);
    this.#cache = new FoldCache(window, options.maxCachedEvents ?? 100_000);
    this.#foldsWholeLog = retention !== undefined && window >= retention;
    this.#marksBeforePruning = options.marksBeforePruning ?? 64;
    this.#onFault = options.onFault;
  }

  get available(): boolean {
    return this.#engine.available !== false;
  }

  async listThreads(userId: string, page: PageRequest): Promise<Page<ThreadSummary>> {
    const before = page.cursor === undefined ? Number.POSITIVE_INFINITY : decodeCursor('threads', page.cursor);
    const { head, user, marks } = await this.#fold(userId);
    const { items, more } = threadPage(user.fold, before, page.limit);
    const last = items.at(-1);
    return {
      items: items.map((thread) => withMarks(thread, currentMark(marks, thread.threadId, head.epoch))),
      nextCursor: more && last ? encodeCursor('threads', last.lastSeq) : null,
    };
  }

  async messages(userId: string, threadId: string, page: PageRequest): Promise<MessagesPage | null> {
    const before = page.cursor === undefined ? Number.POSITIVE_INFINITY : decodeCursor('messages', page.cursor);
    const { head, user } = await this.#fold(userId);
    const messages = messagePage(user.fold, threadId, before, page.limit);
    if (!messages) return null;
    const { items, more } = messages;
    return {
      epoch: head.epoch,
      lastSeq: user.readThrough,
      items: items.map((m) => m.message),
      nextCursor: more ? encodeCursor('messages', items[0]!.position) : null,
    };
  }

  async renameThread(userId: string, threadId: string, title: string): Promise<ThreadSummary | null> {
    for (let attempt = 1; ; attempt++) {
      const { head, user, marks } = await this.#fold(userId);
      const thread = threadSummary(user.fold, threadId);
      if (!thread) return null;
      const mark: ThreadMark = { ...currentMark(marks, threadId, head.epoch), title };
      // Written only over the mark read above: a deletion made since is folded again (a 404).
      if (await this.#putMark(userId, threadId, mark, marks, attempt)) return withMarks(thread, mark);
    }
  }

  async deleteThread(userId: string, threadId: string, endingRunIds: readonly string[] = []): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const [{ head, user, marks }, active] = await Promise.all([this.#fold(userId), this.#activeRuns?.(userId) ?? []]);
      if (!threadSummary(user.fold, threadId)) return false;
      // Runs still going end after the deletion (their terminal event, or a queued one's
      // agent_started) and must not bring the thread back: their later events are deleted too.
      const deletedRuns = new Set([
        ...runningRuns(user.fold, threadId),
        ...active.filter((run) => run.threadId === threadId).map((run) => run.runId),
        ...endingRunIds,
      ]);
      const previous = currentMark(marks, threadId, head.epoch);
      const mark: ThreadMark = {
        epoch: head.epoch,
        deletedThrough: user.readThrough,
        deletedRuns: [...new Set([...(previous.deletedRuns ?? []), ...deletedRuns])],
      };
      if (await this.#putMark(userId, threadId, mark, marks, attempt)) return true;
    }
  }

  /**
   * Writes a thread's mark if the stored one is still the one in `read`; false when another
   * write came between (the caller reads again). Past MAX_MARK_ATTEMPTS it gives up (a 503).
   */
  async #putMark(userId: string, threadId: string, mark: ThreadMark, read: Map<string, ThreadMark>, attempt: number): Promise<boolean> {
    if ((await this.#marks.put(userId, threadId, mark, read.get(threadId) ?? null)) !== false) return true;
    if (attempt >= MAX_MARK_ATTEMPTS) throw new Error(`the marks of thread ${threadId} kept changing under ${attempt} writes`);
    return false;
  }

  async conversation(userId: string, threadId: string, maxTurns: number, beforeRunId?: string): Promise<ConversationTurn[]> {
    if (maxTurns <= 0) return [];
    const { user } = await this.#fold(userId);
    return conversationTurns(user.fold, threadId, maxTurns, beforeRunId);
  }

  /**
   * What a node appends is in the log already; the marks only hear of it, so that they live as
   * long as the events they hide.
   */
  record(userId: string): void {
    this.#marks.appended?.(userId);
  }

  /** Waits for the prunings under way (they use the marks and the engine, which close after) and starts none. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#pruning.values());
  }

  /**
   * Removes the user's marks that can change no answer (the rule in threadMarks.ts), each only
   * while it is still the mark judged; resolves how many went. Runs in the background when a
   * fold finds many marks; never on a request's path.
   */
  async pruneMarks(userId: string): Promise<number> {
    if (!this.#marks.remove) return 0;
    // Marks, then runs, then the head: a run a deletion names was active when it was written, so
    // one not active now ended before the head was read, and its every event is in the fold.
    // Without the runs, nothing is judged that a run could still change.
    const marks = await this.#marks.all(userId);
    const active = this.#activeRuns && (await this.#activeRuns(userId));
    const activeIds = new Set(active?.map((run) => run.runId));
    const activeThreads = new Set(active?.map((run) => run.threadId));
    const head = await this.#engine.head(userId);
    const user = await this.#cache.fold(this.#engine, userId, head, deletionsOf(marks, head.epoch));
    const dead: DeadMark[] = [];
    for (const [threadId, mark] of marks) {
      if (mark.epoch === head.epoch) {
        if (!this.#foldsWholeLog) continue;
        const runs = mark.deletedRuns ?? [];
        const runsEnded = active ? runs.every((runId) => !activeIds.has(runId)) : runs.length === 0;
        // The fold's floor: no seq below it is shown again, as the window (within the log) only moves on.
        if (mark.deletedThrough !== undefined && !(runsEnded && (user.hidden.get(threadId) ?? 0) < user.floor)) continue;
        // A rename names a thread that shows, or that a queued run of it will show again.
        if (mark.title !== undefined && (!active || activeThreads.has(threadId) || threadSummary(user.fold, threadId))) continue;
      }
      dead.push({ threadId, mark, whileAt: mark.epoch === head.epoch && mark.title !== undefined });
    }
    const removed = await this.#marks.remove(userId, { epoch: head.epoch, lastSeq: user.readThrough }, dead);
    this.#pruneAgainAt(userId, marks.size - removed);
    return removed;
  }

  /** The user is pruned next at twice the marks kept: a user whose marks all matter costs a pruning per doubling. */
  #pruneAgainAt(userId: string, kept: number): void {
    this.#pruneAt.delete(userId);
    this.#pruneAt.set(userId, Math.max(this.#marksBeforePruning, 2 * kept));
    if (this.#pruneAt.size > MAX_PRUNE_THRESHOLDS) this.#pruneAt.delete(this.#pruneAt.keys().next().value!);
  }

  /** Prunes the user's marks in the background when there are many (best effort: a failure is a fault, never a request's). */
  #pruneIfMany(userId: string, marks: number): void {
    if (this.#closed || !this.#marks.remove || this.#pruning.has(userId) || marks < (this.#pruneAt.get(userId) ?? this.#marksBeforePruning)) return;
    const pruning = this.pruneMarks(userId)
      .catch((error: unknown) => {
        // Not tried again on every fold meanwhile: as if it had kept them all.
        this.#pruneAgainAt(userId, marks);
        this.#onFault?.(error, 'prune thread marks');
      })
      .finally(() => this.#pruning.delete(userId));
    this.#pruning.set(userId, pruning);
  }

  /**
   * The user's fold of their newest `maxEvents` events, including at least every event up to
   * the head read first (`readThrough` says how far), so an answer includes exactly the events
   * up to `readThrough`. Kept between requests (FoldCache): only what was appended since is read.
   */
  async #fold(userId: string): Promise<Folded> {
    const [head, marks] = await Promise.all([this.#engine.head(userId), this.#marks.all(userId)]);
    const user = await this.#cache.fold(this.#engine, userId, head, deletionsOf(marks, head.epoch));
    this.#pruneIfMany(userId, marks.size);
    return { head, user, marks };
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

/** The deletions of the user's threads in this epoch, by thread id. */
function deletionsOf(marks: Map<string, ThreadMark>, epoch: string): Map<string, Deletion> {
  const deletions = new Map<string, Deletion>();
  for (const [threadId, mark] of marks) {
    if (mark.epoch === epoch && mark.deletedThrough !== undefined) {
      deletions.set(threadId, { through: mark.deletedThrough, runs: new Set(mark.deletedRuns) });
    }
  }
  return deletions;
}

function withMarks(thread: ThreadSummary, mark: ThreadMark): ThreadSummary {
  return { threadId: thread.threadId, title: mark.title ?? thread.title, createdAt: thread.createdAt, updatedAt: thread.updatedAt, lastRun: thread.lastRun };
}
