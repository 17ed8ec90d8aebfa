import type { EventBody, LogEntry } from '@agentwire/protocol';

/** Where a user's log stands. */
export interface LogHead {
  /** Names one unbroken history of this user's log; changes only when the log was lost. */
  readonly epoch: string;
  /** Newest seq of the user (0 if none). */
  readonly lastSeq: number;
}

/** Called with each entry appended to a subscribed user's log, in seq order. */
export type LiveListener = (entry: LogEntry) => void;

/**
 * Told when live notifications may have been lost without a later entry revealing the gap
 * (e.g. the engine's pub/sub connection was re-established): the subscriber should compare its
 * position with `head()` and read what it missed.
 */
export type GapListener = () => void;

/** A live subscription to one user's log. */
export interface Subscription {
  unsubscribe(): Promise<void>;
}

/**
 * Ties an append to a run, for engines shared by several nodes: the append is refused with
 * RunEndedError once the run's terminal event was appended (by any node), so a run never gets
 * events after its terminal event, e.g. from a node that was presumed dead.
 */
export interface AppendFence {
  readonly runId: string;
  /** This append carries the run's terminal event. */
  readonly terminal: boolean;
  /**
   * Names this append across retries: an engine whose reply can be lost after the append was
   * applied (Redis) applies an append with the same id only once and answers with its seqs.
   */
  readonly appendId?: string;
}

/** Thrown by `append` for a fence whose run already has its terminal event. */
export class RunEndedError extends Error {
  override readonly name = 'RunEndedError';
  constructor(readonly runId: string) {
    super(`run ${runId} already ended`);
  }
}

/**
 * The durable per-user event log (PROTOCOL.md sections 3 and 7).
 *
 * Shaped for Redis Streams + pub/sub as much as for memory: every call is async, appends take
 * a batch, live delivery is a per-user subscription that may (on Redis) lose notifications,
 * which is why consumers track seq and repair gaps with `read`. Only the log: message-id claims
 * (idempotency) belong to the run store.
 */
export interface EventEngine {
  /** Resolves once the engine can serve requests (connected, scripts loaded). */
  ready(): Promise<void>;
  /**
   * False while the engine cannot serve requests (e.g. Redis unreachable): the gateway is then
   * not ready and answers upgrades with 503. Absent means always available once ready.
   */
  readonly available?: boolean;
  /**
   * How long the log keeps a user who appends nothing (ms), where the engine has such an age:
   * what annotates the log (the default history store's thread marks) must live as long.
   */
  readonly retentionMs?: number;
  /**
   * Entries the log keeps per user at most, where the engine has such a bound: once the head
   * is at seq S, no seq below S - retentionEvents + 1 is held again (thread marks that hide only
   * such events can go).
   */
  readonly retentionEvents?: number;
  /**
   * Appends events in order, assigning consecutive seqs atomically; resolves with the entries
   * written. Engines whose replies can be lost (Redis) drop a fenced append's leading
   * agent_started when the run already started, since it was written by an attempt whose reply
   * was lost.
   */
  append(userId: string, events: readonly EventBody[], fence?: AppendFence): Promise<LogEntry[]>;
  /** Live entries of one user; resolves once delivery is active. */
  subscribe(userId: string, listener: LiveListener, onPossibleGap?: GapListener): Promise<Subscription>;
  /** Retained entries with fromSeq <= seq <= toSeq, in seq order (evicted ones are missing). */
  read(userId: string, fromSeq: number, toSeq: number): Promise<LogEntry[]>;
  head(userId: string): Promise<LogHead>;
  close(): Promise<void>;
}
