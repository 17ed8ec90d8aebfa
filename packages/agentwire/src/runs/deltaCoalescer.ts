import type { Clock, TimerHandle } from '@agentwire/protocol';

/** The durable event a run of fragments of one kind becomes. */
export type DeltaKind = 'agent_text_delta' | 'agent_thinking_delta';

/** One merged delta, ready to be appended as an event of the run. */
export interface MergedDelta {
  readonly type: DeltaKind;
  readonly text: string;
}

/** Largest merged delta, in UTF-8 bytes of its text (a single larger fragment goes out alone, unsplit). */
export const DEFAULT_MAX_DELTA_BYTES = 4096;

export interface DeltaCoalescerOptions {
  /** Ends holds when the flush window has passed; one for all the coalescers of a run manager. */
  readonly scheduler: FlushScheduler;
  /** A merged delta is sent once its text reaches this many UTF-8 bytes. */
  readonly maxBytes?: number;
  /** Receives each merged delta, synchronously, in the order the fragments arrived. */
  readonly emit: (delta: MergedDelta) => void;
}

/**
 * Merges the delta fragments of one run that arrive in quick succession into fewer events
 * (PROTOCOL.md section 7), so an agent streaming 100 tokens/s does not cost 100 appends/s.
 *
 * Consecutive fragments of one kind are held and go out as one delta when the first of these
 * happens: a fragment of the other kind arrives, the run has another event (`flush()`, called by
 * the run manager before every other event and at the run's end), the scheduler's flush window
 * has passed since the first held fragment, the held text reaches `maxBytes` (a fragment that
 * would take it past the cap first sends what is held), or, with two fragments or more held, the
 * run's next fragment is not expected before the window may end the hold (the scheduler's lead
 * taken off). So a fragment is never held past the window, never merged across another event,
 * and the concatenation and order of fragments are kept exactly.
 *
 * The expectation is the run's pace: the shorter of the gap before its latest fragment and the
 * moving average of its gaps. A model streams tokens at a steady pace, and holding on after the
 * last fragment the window can still take only delays the ones held: at 100 fragments/s and a
 * 20 ms window, a hold ends on its second fragment, not 5-10 ms later on the timer, with the same
 * merge. A hold of a single fragment is not ended so: a loaded event loop stretches every run's
 * gaps past the window, and sending each fragment alone would multiply the events just when the
 * gateway can least afford them (the Redis engine at 80 % of its max: 1.2-1.4 fragments per
 * delta instead of 2, docs/BENCHMARKS.md); such a hold waits for the window as before. A guess
 * that is wrong costs a merge (one more event), never a late fragment.
 *
 * No I/O: time comes from the scheduler, output goes to `emit`.
 */
export class DeltaCoalescer {
  readonly #scheduler: FlushScheduler;
  readonly #maxBytes: number;
  readonly #emit: (delta: MergedDelta) => void;
  #kind: DeltaKind | null = null;
  readonly #held: string[] = [];
  #heldBytes = 0;
  /** The scheduler's id of the current hold; 0 while nothing is held. */
  #hold = 0;
  /** When the current hold began (scheduler clock). */
  #heldSince = 0;
  /** When the run's latest fragment arrived; NaN before its first. */
  #lastAt = Number.NaN;
  /** The gap before the latest fragment and the moving average of the gaps, in ms; NaN until known. */
  #lastGap = Number.NaN;
  #meanGap = Number.NaN;

  constructor(options: DeltaCoalescerOptions) {
    this.#scheduler = options.scheduler;
    this.#maxBytes = options.maxBytes ?? DEFAULT_MAX_DELTA_BYTES;
    this.#emit = options.emit;
  }

  /** True while fragments are held (a flush would emit). */
  get holding(): boolean {
    return this.#kind !== null;
  }

  /** Takes one fragment; empty ones are dropped (a delta's text is never empty). */
  add(kind: DeltaKind, text: string): void {
    if (text.length === 0) return;
    const bytes = Buffer.byteLength(text);
    if (this.#kind !== null && (this.#kind !== kind || this.#heldBytes + bytes > this.#maxBytes)) this.flush();
    this.#held.push(text);
    this.#heldBytes += bytes;
    const windowed = this.#scheduler.flushMs > 0;
    const now = windowed ? this.#noteArrival() : 0;
    if (this.#kind === null) {
      this.#kind = kind;
      if (windowed) {
        this.#heldSince = now;
        this.#hold = this.#scheduler.hold(this, now);
      }
    }
    if (!windowed || this.#heldBytes >= this.#maxBytes || (this.#held.length > 1 && this.#nextArrivesTooLate(now))) this.flush();
  }

  /** Notes a fragment's arrival in the run's cadence; returns the time. */
  #noteArrival(): number {
    const now = this.#scheduler.now();
    // A gap longer than twice the window tells no more than one of twice the window (no merge
    // either way) and would keep the average long after the pace picks up again.
    const gap = Math.min(now - this.#lastAt, 2 * this.#scheduler.flushMs);
    if (gap >= 0) {
      this.#lastGap = gap;
      this.#meanGap = Number.isNaN(this.#meanGap) ? gap : this.#meanGap + (gap - this.#meanGap) * MEAN_GAP_WEIGHT;
    }
    this.#lastAt = now;
    return now;
  }

  /** True if the run's next fragment, at its pace, would come only after the window may have ended the hold. */
  #nextArrivesTooLate(now: number): boolean {
    // NaN (no gap known yet) compares false: the hold goes on.
    return now + Math.min(this.#lastGap, this.#meanGap) > this.#scheduler.mayEndAt(this.#heldSince);
  }

  /** Sends what is held now, if anything. */
  flush(): void {
    if (this.#hold !== 0) {
      this.#hold = 0;
      this.#scheduler.released();
    }
    const kind = this.#kind;
    if (kind === null) return;
    const text = this.#held.length === 1 ? this.#held[0]! : this.#held.join('');
    this.#kind = null;
    this.#held.length = 0;
    this.#heldBytes = 0;
    this.#emit({ type: kind, text });
  }

  /** The scheduler's window for hold `hold` has passed: flushes, unless that hold already ended; true if it flushed. */
  expire(hold: number): boolean {
    if (hold !== this.#hold) return false;
    this.flush();
    return true;
  }
}

/** The weight of the newest gap in a coalescer's moving average of its run's gaps. */
const MEAN_GAP_WEIGHT = 0.25;

interface Hold {
  readonly coalescer: DeltaCoalescer;
  readonly id: number;
  readonly at: number;
}

/** The most of its window a hold is cut short by to make up for late timers. */
const MAX_LEAD_SHARE = 0.25;

/**
 * How long the worst lateness the timer showed keeps holds short: from one to two of these
 * periods. A busy loop is late in bursts (a GC pause, a burst of appends) about a second apart;
 * a lead that faded between them was gone when the next burst came, and its holds ended late.
 */
const LEAD_MEMORY_MS = 1000;

/**
 * The clock's milliseconds and the timers' tick apart: a timer armed for n ms may fire when the
 * clock shows n - 1 passed. A hold that close to its end ends then, rather than on a timer armed
 * for the last millisecond, which could fire after the run's next fragment and merge it.
 */
const CLOCK_SLACK_MS = 1;

/**
 * Ends the holds of many coalescers on one timer, instead of a timer armed and cleared per held
 * fragment (a streaming gateway holds and flushes once per delta event). Every hold lasts the
 * same window, so holds end in the order they began: a queue whose head's deadline the one timer
 * is armed for. A hold its coalescer ended early stays queued, skipped when its window passes;
 * once no hold is live the queue is dropped and the timer cleared.
 *
 * A timer fires late by as long as the event loop is busy with other work (several ms on a
 * loaded gateway), and a hold ended by a late timer would outlast the window section 7 promises.
 * So the scheduler ends holds early by the lateness its timer has shown lately (its lead: the
 * worst lateness of the current and the previous LEAD_MEMORY_MS period), at most a quarter of
 * the window. Early is allowed (fragments merge a little less); late is not.
 */
export class FlushScheduler {
  /** A held fragment goes out at most this long after it arrived (0: every fragment at once). */
  readonly flushMs: number;
  readonly #clock: Clock;
  #queue: Hold[] = [];
  /** Index of the oldest hold still queued in #queue. */
  #head = 0;
  /** Holds begun and not ended. */
  #live = 0;
  #nextId = 0;
  #timer: TimerHandle | null = null;
  /** When the armed timer is meant to fire (clock time). */
  #armedFor = 0;
  /** How much earlier than its window passes a hold is ended, in ms (see above). */
  #lead = 0;
  /** The worst lateness of the timer in the current period (begun at #periodStart) and in the one before. */
  #latePeriod = 0;
  #lateBefore = 0;
  #periodStart = Number.NEGATIVE_INFINITY;
  #expired = 0;
  #overdue = 0;

  constructor(clock: Clock, flushMs: number) {
    this.#clock = clock;
    this.flushMs = flushMs;
  }

  /** How early holds are ended now, in ms: for tests and diagnostics. */
  get lead(): number {
    return this.#lead;
  }

  /**
   * Holds the window ended (not their coalescer), and of those the ones that lasted longer than
   * the window (the timer was later than the lead made up for): section 7's promise kept or not.
   */
  get holds(): { readonly expired: number; readonly overdue: number } {
    return { expired: this.#expired, overdue: this.#overdue };
  }

  /** The scheduler's clock's time, in ms. */
  now(): number {
    return this.#clock.now();
  }

  /** The earliest time the window may end a hold begun at `heldSince` (the lead and the clock's slack taken off). */
  mayEndAt(heldSince: number): number {
    return heldSince + this.flushMs - this.#lead - CLOCK_SLACK_MS;
  }

  /** Begins a hold of `coalescer` at `at` (now), ended by `released()` or by its `expire(id)`; returns its id. */
  hold(coalescer: DeltaCoalescer, at: number): number {
    const id = ++this.#nextId;
    this.#queue.push({ coalescer, id, at });
    this.#live++;
    if (this.#timer === null) this.#arm(at, this.flushMs - this.#lead);
    return id;
  }

  /** A hold ended (its coalescer flushed). */
  released(): void {
    if (--this.#live > 0) return;
    this.#queue = [];
    this.#head = 0;
    if (this.#timer !== null) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = null;
    }
  }

  #arm(now: number, delayMs: number): void {
    const delay = Math.max(1, Math.round(delayMs));
    this.#armedFor = now + delay;
    this.#timer = this.#clock.setTimeout(this.#expire, delay);
  }

  #noteLateness(now: number, late: number): void {
    const elapsed = now - this.#periodStart;
    // A clock that went back begins a period too, so an old lateness is not kept for as long.
    if (elapsed >= LEAD_MEMORY_MS || elapsed < 0) {
      this.#lateBefore = elapsed < 2 * LEAD_MEMORY_MS ? this.#latePeriod : 0;
      this.#latePeriod = 0;
      this.#periodStart = now;
    }
    this.#latePeriod = Math.max(this.#latePeriod, late);
    this.#lead = Math.min(this.flushMs * MAX_LEAD_SHARE, Math.max(this.#latePeriod, this.#lateBefore));
  }

  readonly #expire = (): void => {
    this.#timer = null;
    const now = this.#clock.now();
    this.#noteLateness(now, Math.max(0, now - this.#armedFor));
    const endsAfter = this.flushMs - this.#lead;
    while (this.#head < this.#queue.length) {
      const hold = this.#queue[this.#head]!;
      const age = now - hold.at;
      // A clock that went back (age < 0) ends the hold early: early is allowed, late is not.
      if (age >= 0 && age + CLOCK_SLACK_MS < endsAfter) {
        if (this.#timer === null) this.#arm(now, endsAfter - age);
        break;
      }
      this.#head++;
      if (hold.coalescer.expire(hold.id)) {
        this.#expired++;
        if (age > this.flushMs) this.#overdue++;
      }
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  };
}
