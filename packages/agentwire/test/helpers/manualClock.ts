import type { Clock, TimerHandle } from '@agentwire/protocol';

interface ManualTimer {
  readonly id: number;
  dueAt: number;
  readonly fn: () => void;
  /** Set for intervals: the timer is rescheduled this many ms later after each firing. */
  readonly repeatMs: number | null;
}

/** Lets async code that reacted to a firing (promise chains, generators) run before the next one. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A clock that only moves when a test advances it; timers fire in due-time order. */
export class ManualClock implements Clock {
  #currentTime: number;
  #nextId = 1;
  /** Sorted by due time, then by creation order. */
  #timers: ManualTimer[] = [];

  constructor(startTime = 0) {
    this.#currentTime = startTime;
  }

  now(): number {
    return this.#currentTime;
  }

  get pendingTimers(): number {
    return this.#timers.length;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.#schedule(fn, ms, null);
  }

  clearTimeout(handle: TimerHandle): void {
    this.#cancel(handle);
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    // A zero-length interval would make advance() loop forever.
    return this.#schedule(fn, ms, Math.max(1, ms));
  }

  clearInterval(handle: TimerHandle): void {
    this.#cancel(handle);
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way. */
  async advance(ms: number): Promise<void> {
    const target = this.#currentTime + ms;
    await settle();
    for (let timer = this.#timers[0]; timer && timer.dueAt <= target; timer = this.#timers[0]) {
      this.#timers.shift();
      this.#currentTime = timer.dueAt;
      if (timer.repeatMs !== null) this.#insert({ ...timer, dueAt: timer.dueAt + timer.repeatMs });
      timer.fn();
      await settle();
    }
    this.#currentTime = target;
  }

  #schedule(fn: () => void, ms: number, repeatMs: number | null): TimerHandle {
    const timer: ManualTimer = { id: this.#nextId++, dueAt: this.#currentTime + Math.max(0, ms), fn, repeatMs };
    this.#insert(timer);
    return { id: timer.id } as unknown as TimerHandle;
  }

  #insert(timer: ManualTimer): void {
    const index = this.#timers.findIndex((other) => other.dueAt > timer.dueAt);
    this.#timers.splice(index === -1 ? this.#timers.length : index, 0, timer);
  }

  #cancel(handle: TimerHandle): void {
    const { id } = handle as unknown as { id: number };
    this.#timers = this.#timers.filter((timer) => timer.id !== id);
  }
}
