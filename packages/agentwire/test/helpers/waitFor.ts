/**
 * Event-driven waits with a deadline. The owner of some state calls `notify()` after every
 * change; `until(check, timeoutMs, what)` re-runs `check` then and resolves with the first value
 * that is neither `undefined` nor `false`. A wait that times out fails with an error naming what
 * was awaited and, through `describe`, the state at that moment.
 */
export class Waiters {
  readonly #waiters = new Set<() => void>();

  /** `describe` adds the owner's state to every timeout error (unless a wait gives its own). */
  constructor(readonly describe?: () => string) {}

  /** Re-checks every pending wait. */
  notify(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  /** Drops every pending wait (each then ends by its timeout). */
  clear(): void {
    this.#waiters.clear();
  }

  until<T>(check: () => T | undefined | false, timeoutMs: number, what: string, describe: (() => string) | undefined = this.describe): Promise<T> {
    const now = check();
    if (now !== undefined && now !== false) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const waiter = () => {
        const value = check();
        if (value === undefined || value === false) return;
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve(value);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        const state = describe ? `; ${describe()}` : '';
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${state}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }
}

/** Bounds a wait on a promise: rejects naming `what` if it has not settled within `timeoutMs`. */
export function within<T>(promise: Promise<T>, what: string | (() => string), timeoutMs = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const name = typeof what === 'string' ? what : what();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name}`));
    }, timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
