import type { ConnectionState } from '../../src/lifecycle/index.js';
import type { GatewayMetrics } from '../../src/observability/index.js';

/**
 * Records every lifecycle transition of the connections that report to `metrics` (pass the same
 * metrics to the gateway), so a test can wait for a server-side state (e.g. CLOSED) by event
 * instead of guessing when the server has finished its part.
 */
export class TransitionWatcher {
  readonly seen: Array<{ from: ConnectionState | null; to: ConnectionState }> = [];
  #waiters = new Set<() => void>();

  constructor(metrics: GatewayMetrics) {
    const observer = metrics.lifecycleObserver;
    const original = observer.transitioned.bind(observer);
    observer.transitioned = (from, to) => {
      original(from, to);
      this.seen.push({ from, to });
      for (const waiter of [...this.#waiters]) waiter();
    };
  }

  count(to: ConnectionState, from?: ConnectionState | null): number {
    return this.seen.filter((t) => t.to === to && (from === undefined || t.from === from)).length;
  }

  /** Resolves once `count` transitions into `to` have been seen in total. */
  waitFor(to: ConnectionState, count = 1, timeoutMs = 5000): Promise<void> {
    if (this.count(to) >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (this.count(to) < count) return;
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${count} transition(s) into ${to}; seen ${this.count(to)}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }
}
