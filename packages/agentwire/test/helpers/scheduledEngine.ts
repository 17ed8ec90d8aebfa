import type { Scheduler } from 'fast-check';
import type { AppendFence, EventEngine, GapListener, LiveListener, LogHead, Subscription } from '../../src/engine/types.js';
import type { EventBody, LogEntry } from '@agentwire/protocol';

/**
 * An EventEngine around another one (a MemoryEngine in the tests) whose every step is ordered by
 * a fast-check scheduler.
 *
 * Each call has two scheduled points: the request runs against the inner engine only when the
 * scheduler releases it (an append takes its seqs then, a subscription becomes active then),
 * and the reply reaches the caller only when the scheduler releases it again. Every live
 * notification is one more scheduled task, so notifications race with each other (they may
 * arrive out of seq order), with head/read replies and with subscribe replies. Nothing is lost:
 * a notification whose subscription was cancelled before it is released is dropped, as a
 * pub/sub client drops messages after UNSUBSCRIBE.
 *
 * Only the users in the scheduler's scope are scheduled; other users' calls, and every call while
 * no scheduler is set (`use(null)`), pass straight through. A test that reuses one engine for many
 * runs scopes each scheduler to that run's users, so that a late call of an earlier run (a server
 * may accept an upgrade after its client gave up) never waits on a scheduler nobody drives.
 */
export class ScheduledEngine implements EventEngine {
  #scheduler: Scheduler | null = null;
  #inScope: (userId: string) => boolean = () => true;
  /** Subscriptions whose request ran and whose unsubscribe request has not run yet. */
  activeSubscriptions = 0;
  /** Live notifications delivered after one with a higher seq on the same subscription. */
  reorderedNotifications = 0;

  constructor(readonly inner: EventEngine) {}

  get available(): boolean {
    return this.inner.available ?? true;
  }

  /** Sets the scheduler that orders the following calls of the users in scope (one per run). */
  use(scheduler: Scheduler | null, inScope: (userId: string) => boolean = () => true): void {
    this.#scheduler = scheduler;
    this.#inScope = inScope;
  }

  #schedulerFor(userId: string): Scheduler | null {
    return this.#inScope(userId) ? this.#scheduler : null;
  }

  ready(): Promise<void> {
    return this.inner.ready();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  append(userId: string, events: readonly EventBody[], fence?: AppendFence): Promise<LogEntry[]> {
    return this.#step(userId, `append ${userId} ${events.map((e) => e.type).join(',')}`, () => this.inner.append(userId, events, fence));
  }

  subscribe(userId: string, listener: LiveListener, onPossibleGap?: GapListener): Promise<Subscription> {
    let active = true;
    let highest = 0;
    const later = (label: string, deliver: () => void) => {
      const scheduler = this.#schedulerFor(userId);
      if (!scheduler) return deliver();
      void scheduler.schedule(Promise.resolve(), label).then(() => {
        if (active) deliver();
      });
    };
    const scheduledListener: LiveListener = (entry) =>
      later(`live ${userId} #${entry.seq}`, () => {
        if (entry.seq < highest) this.reorderedNotifications++;
        highest = Math.max(highest, entry.seq);
        listener(entry);
      });
    const scheduledGap: GapListener | undefined = onPossibleGap && (() => later(`possible gap ${userId}`, () => onPossibleGap()));
    return this.#step(userId, `subscribe ${userId}`, async () => {
      const inner = await this.inner.subscribe(userId, scheduledListener, scheduledGap);
      this.activeSubscriptions++;
      return {
        unsubscribe: () =>
          this.#step(userId, `unsubscribe ${userId}`, async () => {
            if (active) this.activeSubscriptions--;
            active = false;
            await inner.unsubscribe();
          }),
      };
    });
  }

  read(userId: string, fromSeq: number, toSeq: number): Promise<LogEntry[]> {
    return this.#step(userId, `read ${userId} ${fromSeq}..${toSeq}`, () => this.inner.read(userId, fromSeq, toSeq));
  }

  head(userId: string): Promise<LogHead> {
    return this.#step(userId, `head ${userId}`, () => this.inner.head(userId));
  }

  async #step<T>(userId: string, label: string, op: () => Promise<T>): Promise<T> {
    const scheduler = this.#schedulerFor(userId);
    if (!scheduler) return op();
    await scheduler.schedule(Promise.resolve(), `${label} (request)`);
    const result = await op();
    await scheduler.schedule(Promise.resolve(), `${label} (reply)`);
    return result;
  }
}
