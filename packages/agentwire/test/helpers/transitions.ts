import type { ConnectionState } from '../../src/lifecycle/index.js';
import type { GatewayMetrics } from '../../src/observability/index.js';
import { Waiters } from './waitFor.js';

/**
 * Records every lifecycle transition of the connections that report to `metrics` (pass the same
 * metrics to the gateway), so a test can wait for a server-side state (e.g. CLOSED) by event
 * instead of guessing when the server has finished its part.
 */
export class TransitionWatcher {
  readonly seen: Array<{ from: ConnectionState | null; to: ConnectionState }> = [];
  readonly #waiters = new Waiters();

  constructor(metrics: GatewayMetrics) {
    const observer = metrics.lifecycleObserver;
    const original = observer.transitioned.bind(observer);
    observer.transitioned = (from, to) => {
      original(from, to);
      this.seen.push({ from, to });
      this.#waiters.notify();
    };
  }

  count(to: ConnectionState, from?: ConnectionState | null): number {
    return this.seen.filter((t) => t.to === to && (from === undefined || t.from === from)).length;
  }

  /** Resolves once `count` transitions into `to` have been seen in total. */
  async waitFor(to: ConnectionState, count = 1, timeoutMs = 5000): Promise<void> {
    await this.#waiters.until(
      () => this.count(to) >= count,
      timeoutMs,
      `${count} transition(s) into ${to}`,
      () => `seen ${this.count(to)}`,
    );
  }
}
