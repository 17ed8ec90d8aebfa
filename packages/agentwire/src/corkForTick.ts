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

const corked = new WeakSet<Corkable>();
/** The streams corked in this tick, in the order they were first written to. */
let held: Held[] = [];

/**
 * One end-of-tick job uncorks every stream corked in the tick (not one closure and nextTick per
 * stream). Every stream is uncorked before any callback runs: a callback that throws must not
 * leave the other streams corked for good.
 */
function uncorkAll(): void {
  const streams = held;
  held = [];
  for (const { stream } of streams) {
    corked.delete(stream);
    stream.uncork();
  }
  for (const { onFlushed } of streams) onFlushed?.();
}

/**
 * Holds the stream's writes from now to the end of the tick, then hands them to the socket in
 * one write (Node's cork/nextTick-uncork idiom). A socket write is a system call, and everything
 * a tick produces for one socket (a batch of events, the commands of many runs) then costs one.
 * Nothing waits for a timer. `onFlushed` runs right after the uncork, when the stream's buffer
 * holds only what the socket did not take.
 */
export function corkForTick(stream: Corkable, onFlushed?: () => void): void {
  if (corked.has(stream)) return;
  corked.add(stream);
  stream.cork();
  if (held.push({ stream, onFlushed }) === 1) atEndOfTick(uncorkAll);
}
