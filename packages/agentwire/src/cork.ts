import { atEndOfTick } from './endOfTick.js';

/** A stream whose writes can be held and handed to the socket together (net.Socket, tls.TLSSocket). */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

interface Held {
  readonly stream: Corkable;
  readonly onFlushed: (() => void) | undefined;
}

/**
 * Streams corked until one scheduled job uncorks them all (not one closure and job per stream).
 * Every stream is uncorked before any callback runs: a callback that throws must not leave the
 * other streams corked for good.
 */
class CorkedStreams {
  readonly #corked = new WeakSet<Corkable>();
  /** In the order they were first written to. */
  #held: Held[] = [];
  readonly #schedule: (job: () => void) => void;

  constructor(schedule: (job: () => void) => void) {
    this.#schedule = schedule;
  }

  hold(stream: Corkable, onFlushed: (() => void) | undefined): void {
    if (this.#corked.has(stream)) return;
    this.#corked.add(stream);
    stream.cork();
    if (this.#held.push({ stream, onFlushed }) === 1) this.#schedule(this.#uncorkAll);
  }

  readonly #uncorkAll = (): void => {
    const streams = this.#held;
    this.#held = [];
    for (const { stream } of streams) {
      this.#corked.delete(stream);
      stream.uncork();
    }
    for (const { onFlushed } of streams) onFlushed?.();
  };
}

const tick = new CorkedStreams(atEndOfTick);
const iteration = new CorkedStreams((job) => setImmediate(job));

/**
 * Holds the stream's writes from now to the end of the tick, then hands them to the socket in
 * one write (Node's cork/nextTick-uncork idiom). A socket write is a system call, and everything
 * a tick produces for one socket (the commands of many runs) then costs one. Nothing waits for a
 * timer. `onFlushed` runs right after the uncork, when the stream's buffer holds only what the
 * socket did not take.
 */
export function corkForTick(stream: Corkable, onFlushed?: () => void): void {
  tick.hold(stream, onFlushed);
}

/**
 * How a gateway gathers a connection's frames into socket writes (GatewayOptions.frameBatching):
 * to the end of the event loop's turn (corkForIteration) or of the tick (corkForTick).
 */
export type FrameBatching = 'turn' | 'tick';

/** The cork of `batching`. */
export function corkFor(batching: FrameBatching): (stream: Corkable, onFlushed?: () => void) => void {
  return batching === 'turn' ? corkForIteration : corkForTick;
}

/**
 * Like corkForTick, to the end of this turn of the event loop: the writes go out in its check
 * phase (`setImmediate`), or in the next turn's if the stream is corked during that phase. Every
 * frame a turn produces for one socket then leaves in one write, and the writes of a turn leave
 * together, after its work, rather than one between each piece of it: the receiving processes
 * are woken once per burst, not once per frame (memory engine, deltas/s against raw ws: 0.79 to
 * 0.86, docs/BENCHMARKS.md). What it costs is the rest of the turn: the I/O callbacks still to
 * run in it, never a timer's wait.
 */
export function corkForIteration(stream: Corkable, onFlushed?: () => void): void {
  iteration.hold(stream, onFlushed);
}
