import type { DurableEvent, LogEntry } from '@agentwire/protocol';
import type { EventEngine, LogHead } from '../engine/types.js';
import { createFold, dropRunsBefore, foldEvent, parseEvent, type HistoryFold } from './fold.js';

/** Entries read from the engine per call. */
const READ_CHUNK = 1000;

/** A thread's deletion as its mark names it (see ThreadMark). */
export interface Deletion {
  readonly through: number;
  readonly runs: ReadonlySet<string>;
}

/** One user's fold of the log window [floor, readThrough] of one epoch, under one set of deletions. */
export interface UserFold {
  readonly epoch: string;
  readonly deletions: ReadonlyMap<string, Deletion>;
  readonly fold: HistoryFold;
  /**
   * The newest seq of an event the deletions left out, by thread, over every event this fold
   * read: a deletion hides nothing the log still holds once that is below the log's floor.
   */
  readonly hidden: Map<string, number>;
  /** The oldest seq the fold may hold. */
  floor: number;
  /** Every entry up to this seq was read and folded (as far as the log still had it). */
  readThrough: number;
}

/**
 * The folded history of recently read users, kept between requests: a request reads, parses
 * and folds only what was appended since the user's last one (the log is append-only within an
 * epoch, and the fold is incremental), whichever node appended it. A fold covers the user's
 * newest `windowEvents` seqs: as the log grows, the runs that started below the window are
 * dropped. A new epoch (the log was lost), other deletions (a thread was deleted), entries
 * evicted before this node read them, a whole window appended since, or a window move the fold
 * cannot follow (a run started twice) start the user's fold over from the log. Bounded in seqs
 * over all users; the least recently read users are forgotten first.
 */
export class FoldCache {
  readonly #users = new Map<string, UserFold>();
  /** Window size of each remembered user, as counted in `#size`. */
  readonly #sizes = new Map<string, number>();
  readonly #windowEvents: number;
  readonly #maxEvents: number;
  #size = 0;

  constructor(windowEvents: number, maxEvents: number) {
    this.#windowEvents = windowEvents;
    this.#maxEvents = maxEvents;
  }

  /**
   * The user's fold including every event up to `head.lastSeq` (and possibly later ones a
   * concurrent request folded: `readThrough` says how far it reaches).
   */
  async fold(engine: Pick<EventEngine, 'read'>, userId: string, head: LogHead, deletions: ReadonlyMap<string, Deletion>): Promise<UserFold> {
    const kept = this.#users.get(userId);
    const current = kept?.epoch === head.epoch && head.lastSeq - kept.readThrough < this.#windowEvents && sameDeletions(kept.deletions, deletions);
    let user = current ? kept : this.#fresh(head, deletions, head.lastSeq);
    if (!(await readInto(engine, userId, user, head.lastSeq)) && user === kept) {
      // Retention evicted entries this fold never saw: it would differ from a fold of the log.
      user = this.#fresh(head, deletions, head.lastSeq);
      await readInto(engine, userId, user, head.lastSeq);
    }
    const floor = this.#floor(user.readThrough);
    if (floor > user.floor) {
      if (dropRunsBefore(user.fold, floor)) user.floor = floor;
      else {
        const through = user.readThrough;
        user = this.#fresh(head, deletions, through);
        await readInto(engine, userId, user, through);
      }
    }
    this.#remember(userId, kept, user);
    return user;
  }

  #floor(lastSeq: number): number {
    return Math.max(1, lastSeq - this.#windowEvents + 1);
  }

  #fresh(head: LogHead, deletions: ReadonlyMap<string, Deletion>, through: number): UserFold {
    const floor = this.#floor(through);
    const hidden = new Map<string, number>();
    return { epoch: head.epoch, deletions, fold: createFold(excluder(deletions, hidden)), hidden, floor, readThrough: floor - 1 };
  }

  /** Keeps the user's fold unless a concurrent request replaced `kept` meanwhile (theirs is as new). */
  #remember(userId: string, kept: UserFold | undefined, user: UserFold): void {
    const now = this.#users.get(userId);
    if (now !== kept && now !== user) return;
    this.#size -= this.#sizes.get(userId) ?? 0;
    this.#users.delete(userId);
    this.#sizes.delete(userId);
    const size = user.readThrough - user.floor + 1;
    if (size > this.#maxEvents) return;
    this.#users.set(userId, user);
    this.#sizes.set(userId, size);
    this.#size += size;
    for (const [oldest] of this.#users) {
      if (this.#size <= this.#maxEvents) break;
      this.#size -= this.#sizes.get(oldest)!;
      this.#users.delete(oldest);
      this.#sizes.delete(oldest);
    }
  }
}

/**
 * Folds the user's entries after `user.readThrough` up to `through`, chunk by chunk. A chunk
 * that a concurrent request folded first is skipped event by event (the fold ignores seqs it
 * has), so the fold only ever grows in seq order. False when the log no longer had some of
 * the entries (evicted by retention).
 */
async function readInto(engine: Pick<EventEngine, 'read'>, userId: string, user: UserFold, through: number): Promise<boolean> {
  let whole = true;
  while (user.readThrough < through) {
    const from = Math.max(user.floor, user.readThrough + 1);
    const to = Math.min(through, from + READ_CHUNK - 1);
    const entries = await engine.read(userId, from, to);
    if (entries.length < to - from + 1) whole = false;
    for (const entry of entries) {
      const event = eventOf(entry);
      if (event) foldEvent(user.fold, event);
    }
    user.readThrough = Math.max(user.readThrough, to);
  }
  return whole;
}

function eventOf(entry: LogEntry): DurableEvent | null {
  const event = parseEvent(entry.json);
  // The entry's seq is the log's; an event claiming another is not trusted.
  return event && event.seq === entry.seq ? event : null;
}

/** Leaves out the deleted events, noting each one's seq in `hidden` (events come in seq order). */
function excluder(deletions: ReadonlyMap<string, Deletion>, hidden: Map<string, number>): ((event: DurableEvent) => boolean) | undefined {
  if (deletions.size === 0) return undefined;
  return (event) => {
    const deletion = deletions.get(event.thread_id);
    if (deletion === undefined || !(event.seq <= deletion.through || deletion.runs.has(event.run_id))) return false;
    hidden.set(event.thread_id, event.seq);
    return true;
  };
}

function sameDeletions(a: ReadonlyMap<string, Deletion>, b: ReadonlyMap<string, Deletion>): boolean {
  if (a.size !== b.size) return false;
  for (const [threadId, deletion] of a) {
    const other = b.get(threadId);
    if (!other || other.through !== deletion.through || other.runs.size !== deletion.runs.size) return false;
    for (const runId of deletion.runs) if (!other.runs.has(runId)) return false;
  }
  return true;
}
