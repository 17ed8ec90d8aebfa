/** A stream whose writes can be held and handed to the socket together (net.Socket, tls.TLSSocket). */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

const corked = new WeakSet<Corkable>();

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
  process.nextTick(() => {
    corked.delete(stream);
    stream.uncork();
    onFlushed?.();
  });
}
