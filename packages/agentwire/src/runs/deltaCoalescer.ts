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
  readonly clock: Clock;
  /** A held fragment goes out at most this long after it arrived (0: every fragment at once). */
  readonly flushMs: number;
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
 * the run manager before every other event and at the run's end), `flushMs` has passed since the
 * first held fragment, or the held text reaches `maxBytes` (a fragment that would take it past
 * the cap first sends what is held). So a fragment is never held past the window, never merged
 * across another event, and the concatenation and order of fragments are kept exactly.
 *
 * No I/O: time comes from the injected clock, output goes to `emit`.
 */
export class DeltaCoalescer {
  readonly #clock: Clock;
  readonly #flushMs: number;
  readonly #maxBytes: number;
  readonly #emit: (delta: MergedDelta) => void;
  #kind: DeltaKind | null = null;
  #held: string[] = [];
  #heldBytes = 0;
  #timer: TimerHandle | null = null;

  constructor(options: DeltaCoalescerOptions) {
    this.#clock = options.clock;
    this.#flushMs = options.flushMs;
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
    if (this.#kind === null) {
      this.#kind = kind;
      if (this.#flushMs > 0) this.#timer = this.#clock.setTimeout(() => this.flush(), this.#flushMs);
    }
    if (this.#flushMs <= 0 || this.#heldBytes >= this.#maxBytes) this.flush();
  }

  /** Sends what is held now, if anything. */
  flush(): void {
    if (this.#timer !== null) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = null;
    }
    const kind = this.#kind;
    if (kind === null) return;
    const text = this.#held.length === 1 ? this.#held[0]! : this.#held.join('');
    this.#kind = null;
    this.#held = [];
    this.#heldBytes = 0;
    this.#emit({ type: kind, text });
  }
}
