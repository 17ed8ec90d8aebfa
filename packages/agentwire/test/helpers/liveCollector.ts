import type { LogEntry } from '@agentwire/protocol';
import { Waiters } from './waitFor.js';

/** A live listener that keeps what it got; `until(count)` resolves once it holds `count` entries. */
export function liveCollector() {
  const entries: LogEntry[] = [];
  const waiters = new Waiters(() => `got ${entries.length}`);
  return {
    entries,
    listener: (entry: LogEntry) => {
      entries.push(entry);
      waiters.notify();
    },
    async until(count: number, timeoutMs = 5000): Promise<void> {
      await waiters.until(() => entries.length >= count, timeoutMs, `${count} entries`);
    },
  };
}
