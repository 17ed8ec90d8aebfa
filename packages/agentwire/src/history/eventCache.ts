import type { DurableEvent, LogEntry } from '@agentwire/protocol';
import type { EventEngine, LogHead } from '../engine/types.js';
import { parseEvent } from './fold.js';

/** Entries read from the engine per call. */
const READ_CHUNK = 1000;

interface UserEvents {
  epoch: string;
  /** Seq of `events[0]`. */
  first: number;
  /** Parsed events by seq - first; null where the log had none or a malformed one. */
  events: Array<DurableEvent | null>;
}

/**
 * Parsed events of recently read users, so that a history request reads and parses only what
 * was appended since the last one (the log is append-only within an epoch): a new epoch starts
 * over, and events below the requested floor are dropped. Bounded in events over all users;
 * the least recently read users are forgotten first.
 */
export class EventCache {
  readonly #users = new Map<string, UserEvents>();
  readonly #maxEvents: number;
  #size = 0;

  constructor(maxEvents: number) {
    this.#maxEvents = maxEvents;
  }

  /** The user's events with floor <= seq <= head.lastSeq, in seq order (evicted ones missing). */
  async events(engine: Pick<EventEngine, 'read'>, userId: string, head: LogHead, floor: number): Promise<DurableEvent[]> {
    let cached = this.#users.get(userId);
    this.#forget(userId);
    if (!cached || cached.epoch !== head.epoch || cached.first + cached.events.length - 1 > head.lastSeq) {
      cached = { epoch: head.epoch, first: floor, events: [] };
    }
    if (floor > cached.first) {
      cached.events.splice(0, floor - cached.first);
      cached.first = floor;
    }
    // Kept from here on: a user read while another read of theirs is in flight starts over.
    const from = Math.max(floor, cached.first + cached.events.length);
    for (let start = from; start <= head.lastSeq; start += READ_CHUNK) {
      for (const entry of await engine.read(userId, start, Math.min(head.lastSeq, start + READ_CHUNK - 1))) {
        cached.events[entry.seq - cached.first] = eventOf(entry);
      }
    }
    // Seqs the log no longer had (evicted meanwhile) read as null, never as holes.
    cached.events.length = Math.max(0, head.lastSeq - cached.first + 1);
    const events: DurableEvent[] = [];
    for (const event of cached.events) if (event) events.push(event);
    this.#remember(userId, cached);
    return events;
  }

  #forget(userId: string): void {
    const cached = this.#users.get(userId);
    if (!cached) return;
    this.#size -= cached.events.length;
    this.#users.delete(userId);
  }

  #remember(userId: string, cached: UserEvents): void {
    if (cached.events.length > this.#maxEvents) return;
    this.#users.set(userId, cached);
    this.#size += cached.events.length;
    for (const [oldest, events] of this.#users) {
      if (this.#size <= this.#maxEvents) break;
      this.#size -= events.events.length;
      this.#users.delete(oldest);
    }
  }
}

function eventOf(entry: LogEntry): DurableEvent | null {
  const event = parseEvent(entry.json);
  // The entry's seq is the log's; an event claiming another is not trusted.
  return event && event.seq === entry.seq ? event : null;
}
