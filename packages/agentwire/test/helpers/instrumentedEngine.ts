import type { EventEngine, LiveListener, LogHead, Subscription } from '../../src/engine/types.js';
import type { LogEntry } from '@agentwire/protocol';

export type EngineOp = 'head' | 'read' | 'subscribe' | 'append';

export interface EngineHooks {
  /** Runs before a call is forwarded; a returned promise delays it (a rejection fails the call). */
  before?(op: EngineOp, userId: string): Promise<void> | void;
  /** Decides whether a live notification reaches the subscriber (false drops it, like lost pub/sub). */
  deliverLive?(userId: string, entry: LogEntry): boolean;
}

/** The operations a user coordinator performs during a setup. */
export const SETUP_OPS: ReadonlySet<EngineOp> = new Set(['head', 'read', 'subscribe']);

/**
 * An EventEngine that forwards to another one and records what happens: every call, how many
 * calls of the tracked kinds are in flight per user (and the maximum ever seen), and how many
 * subscriptions are active. Hooks can delay calls, fail them, or drop live notifications.
 */
export class InstrumentedEngine implements EventEngine {
  readonly calls: Array<{ op: EngineOp; userId: string }> = [];
  readonly inFlight = new Map<string, number>();
  readonly maxInFlight = new Map<string, number>();
  /** Largest number of distinct users with a tracked call in flight at the same moment. */
  maxUsersInFlight = 0;
  readonly activeSubscriptions = new Map<string, number>();
  subscribeCount = 0;
  unsubscribeCount = 0;

  constructor(
    readonly inner: EventEngine,
    public hooks: EngineHooks = {},
    readonly tracked: ReadonlySet<EngineOp> = SETUP_OPS,
  ) {}

  countOf(op: EngineOp, userId?: string): number {
    return this.calls.filter((c) => c.op === op && (userId === undefined || c.userId === userId)).length;
  }

  ready(): Promise<void> {
    return this.inner.ready();
  }

  get available(): boolean | undefined {
    return this.inner.available;
  }

  // Extra arguments (optional ones the interface may grow) are forwarded unchanged.
  append(...args: Parameters<EventEngine['append']>): Promise<LogEntry[]> {
    return this.#call('append', args[0], () => this.inner.append(...args));
  }

  subscribe(...args: Parameters<EventEngine['subscribe']>): Promise<Subscription> {
    const [userId, listener, ...rest] = args;
    return this.#call('subscribe', userId, async () => {
      const live: LiveListener = (entry) => {
        if (this.hooks.deliverLive && !this.hooks.deliverLive(userId, entry)) return;
        listener(entry);
      };
      const inner = await this.inner.subscribe(userId, live, ...rest);
      this.subscribeCount++;
      this.activeSubscriptions.set(userId, (this.activeSubscriptions.get(userId) ?? 0) + 1);
      let active = true;
      return {
        unsubscribe: async () => {
          if (active) {
            active = false;
            this.unsubscribeCount++;
            this.activeSubscriptions.set(userId, this.activeSubscriptions.get(userId)! - 1);
          }
          await inner.unsubscribe();
        },
      };
    });
  }

  read(userId: string, fromSeq: number, toSeq: number): Promise<LogEntry[]> {
    return this.#call('read', userId, () => this.inner.read(userId, fromSeq, toSeq));
  }

  head(userId: string): Promise<LogHead> {
    return this.#call('head', userId, () => this.inner.head(userId));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  async #call<T>(op: EngineOp, userId: string, forward: () => Promise<T>): Promise<T> {
    this.calls.push({ op, userId });
    const tracked = this.tracked.has(op);
    if (tracked) this.#enter(userId);
    try {
      await this.hooks.before?.(op, userId);
      return await forward();
    } finally {
      if (tracked) this.#leave(userId);
    }
  }

  #enter(userId: string): void {
    const now = (this.inFlight.get(userId) ?? 0) + 1;
    this.inFlight.set(userId, now);
    this.maxInFlight.set(userId, Math.max(this.maxInFlight.get(userId) ?? 0, now));
    let users = 0;
    for (const count of this.inFlight.values()) if (count > 0) users++;
    this.maxUsersInFlight = Math.max(this.maxUsersInFlight, users);
  }

  #leave(userId: string): void {
    this.inFlight.set(userId, this.inFlight.get(userId)! - 1);
  }
}

export interface Deferred {
  readonly promise: Promise<void>;
  resolve(): void;
  reject(error: unknown): void;
}

export function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** One turn of the event loop: every pending microtask (promise continuation) has run. */
export const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
