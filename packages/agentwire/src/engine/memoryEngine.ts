import { randomUUID } from 'node:crypto';
import { systemClock, type Clock, type TimerHandle } from '@agentwire/protocol';
import { encodeEvent, type EventBody, type LogEntry } from '@agentwire/protocol';
import type { EventEngine, LiveListener, LogHead, Subscription } from './types.js';
import { DEFAULTS } from '../config/settings.js';

/** Retention bounds of a `MemoryEngine`. */
export interface MemoryEngineOptions {
  /** Entries kept per user (oldest evicted first). Default: AGENTWIRE_RETENTION_EVENTS's (10000). */
  retentionEvents?: number;
  /**
   * Characters of event JSON kept per user (oldest evicted first; the newest entry always stays),
   * so a user with large events cannot hold `retentionEvents` of them. The length of the JSON
   * text, which is its size in bytes on the wire for ASCII. Default: AGENTWIRE_RETENTION_BYTES's (8 MiB).
   */
  retentionBytes?: number;
  /** Entries older than this are evicted; idle users are forgotten after it. Default 24 h. */
  retentionMs?: number;
  clock?: Clock;
}

interface UserLog {
  readonly epoch: string;
  lastSeq: number;
  /** Retained entries; `entries[head]` is the oldest. Compacted lazily to keep trims O(1). */
  entries: LogEntry[];
  head: number;
  /** Sum of the JSON lengths of the retained entries. */
  bytes: number;
  lastActivity: number;
  readonly listeners: Set<LiveListener>;
}

/**
 * The in-memory engine: one process, bounded retention by count, size and age. Its epoch changes
 * whenever a user's log is created anew (process start, or the user was forgotten after being
 * idle past the retention age), so a resume across that boundary is answered `resumed: false`.
 */
export class MemoryEngine implements EventEngine {
  readonly #logs = new Map<string, UserLog>();
  readonly #instance = randomUUID().slice(0, 8);
  #generation = 0;
  readonly #retentionEvents: number;
  readonly #retentionBytes: number;
  readonly #retentionMs: number;
  readonly #clock: Clock;
  readonly #reaper: TimerHandle;

  constructor(options: MemoryEngineOptions = {}) {
    this.#retentionEvents = options.retentionEvents ?? DEFAULTS.retentionEvents;
    this.#retentionBytes = options.retentionBytes ?? DEFAULTS.retentionBytes;
    this.#retentionMs = options.retentionMs ?? 86_400_000;
    this.#clock = options.clock ?? systemClock;
    this.#reaper = this.#clock.setInterval(() => this.#forgetIdleUsers(), Math.min(this.#retentionMs, 60_000));
  }

  readonly available = true;

  get retentionMs(): number {
    return this.#retentionMs;
  }

  get retentionEvents(): number {
    return this.#retentionEvents;
  }

  async ready(): Promise<void> {}

  async append(userId: string, events: readonly EventBody[]): Promise<LogEntry[]> {
    const log = this.#log(userId);
    const now = this.#clock.now();
    // Every event is encoded before any is logged: an append is all or nothing, so one that
    // throws (an event JSON cannot hold) leaves no seq behind and no entry undelivered.
    const appended = events.map((body, index): LogEntry => {
      const seq = log.lastSeq + 1 + index;
      return { seq, type: body.type, json: encodeEvent(body, seq), appendedAt: now, epoch: log.epoch };
    });
    for (const entry of appended) {
      log.entries.push(entry);
      log.bytes += entry.json.length;
    }
    log.lastSeq += appended.length;
    log.lastActivity = now;
    this.#trim(log, now);
    for (const entry of appended) {
      for (const listener of log.listeners) listener(entry);
    }
    return appended;
  }

  async subscribe(userId: string, listener: LiveListener): Promise<Subscription> {
    const log = this.#log(userId);
    log.listeners.add(listener);
    return {
      unsubscribe: async () => {
        log.listeners.delete(listener);
      },
    };
  }

  async read(userId: string, fromSeq: number, toSeq: number): Promise<LogEntry[]> {
    const log = this.#logs.get(userId);
    if (!log || toSeq < fromSeq) return [];
    this.#trim(log, this.#clock.now());
    const retained = log.entries.length - log.head;
    if (retained === 0) return [];
    const oldest = log.entries[log.head]!.seq;
    const start = log.head + Math.max(0, fromSeq - oldest);
    const end = log.head + Math.min(retained, toSeq - oldest + 1);
    return start < end ? log.entries.slice(start, end) : [];
  }

  async head(userId: string): Promise<LogHead> {
    const log = this.#log(userId);
    return { epoch: log.epoch, lastSeq: log.lastSeq };
  }

  async close(): Promise<void> {
    this.#clock.clearInterval(this.#reaper);
  }

  #log(userId: string): UserLog {
    let log = this.#logs.get(userId);
    if (!log) {
      log = {
        epoch: `${this.#instance}-${++this.#generation}`,
        lastSeq: 0,
        entries: [],
        head: 0,
        bytes: 0,
        lastActivity: this.#clock.now(),
        listeners: new Set(),
      };
      this.#logs.set(userId, log);
    }
    return log;
  }

  #trim(log: UserLog, now: number): void {
    const cutoff = now - this.#retentionMs;
    while (
      log.entries.length - log.head > this.#retentionEvents ||
      (log.bytes > this.#retentionBytes && log.entries.length - log.head > 1) ||
      (log.head < log.entries.length && log.entries[log.head]!.appendedAt < cutoff)
    ) {
      log.bytes -= log.entries[log.head++]!.json.length;
    }
    if (log.head > 64 && log.head * 2 > log.entries.length) {
      log.entries = log.entries.slice(log.head);
      log.head = 0;
    }
  }

  /** Forgets users with no subscriber and no activity within the retention age. */
  #forgetIdleUsers(): void {
    const cutoff = this.#clock.now() - this.#retentionMs;
    for (const [userId, log] of this.#logs) {
      if (log.listeners.size === 0 && log.lastActivity < cutoff) this.#logs.delete(userId);
    }
  }
}
