import type { GuaranteeId, Violation } from './guarantees.js';
import type { HistogramData } from './stats.js';

/** Everything `agentwire storm` was asked to do (already validated). */
export interface StormOptions {
  /** ws:// or wss:// URL of the endpoint, e.g. ws://127.0.0.1:8080/ws. */
  url: string;
  connections: number;
  users: number;
  /** New connections per second (over all workers). */
  rate: number;
  /** Messages each user sends. */
  messages: number;
  auth: { kind: 'secret'; secret: string } | { kind: 'bypass'; key: string };
  /** Seconds to hold the connections open after the messages, before the final checks. */
  durationSec: number;
  /** During the hold, each user keeps sending one message at a time. */
  keepSending: boolean;
  sendIntervalMs: number;
  workers: number;
  sourceAddresses: string[];
  threads: number;
  userPrefix: string;
  readyTimeoutMs: number;
  ackTimeoutMs: number;
  settleTimeoutMs: number;
  /** Connections opened but not yet ready, at most (per worker share). */
  maxInflight: number;
}

/** One worker's share of the storm. */
export interface WorkerPlan {
  index: number;
  url: string;
  auth: StormOptions['auth'];
  /** http(s) URL of the test-token route (bypass auth). */
  testTokenUrl: string;
  tokenTtlSec: number;
  users: string[];
  connections: { label: string; user: string; localAddress: string | null }[];
  rate: number;
  maxInflight: number;
  messages: number;
  threads: number;
  durationMs: number;
  keepSending: boolean;
  sendIntervalMs: number;
  readyTimeoutMs: number;
  ackTimeoutMs: number;
  settleTimeoutMs: number;
  /** Wall-clock ms at which the storm started (for per-second series). */
  startedAt: number;
  /** Distinguishes this storm's message and thread ids from any earlier one. */
  runTag: string;
}

export interface Progress {
  planned: number;
  connected: number;
  ready: number;
  closed: number;
  failed: number;
  messagesSent: number;
  runsAcked: number;
  runsDone: number;
  violations: number;
  phase: string;
}

export interface WorkerResult {
  index: number;
  pid: number;
  progress: Progress;
  counts: Record<GuaranteeId, number>;
  examples: Record<GuaranteeId, Violation[]>;
  /** connect start (socket created) -> connection_ready, ms, one per ready connection. */
  readyTimes: number[];
  /** connect start -> open, ms. */
  connectTimes: number[];
  latency: HistogramData;
  /** second since start -> latency histogram of the events received in that second. */
  latencyBySecond: Record<string, HistogramData>;
  closesByCode: Record<string, number>;
  /** Opened connections by the local address their socket actually used. */
  bySourceAddress: Record<string, number>;
  eventsReceived: number;
  errorFrames: Record<string, number>;
  /** Set when the worker could not run at all (e.g. no token). */
  fatal: string | null;
}

/** Points where every worker waits for all others: all connected, all settled. */
export type BarrierName = 'connected' | 'settled';

/** Worker -> parent. */
export type WorkerMessage = { type: 'progress'; progress: Progress } | { type: 'barrier'; name: BarrierName } | { type: 'result'; result: WorkerResult };

/** Parent -> worker. */
export type ParentMessage = { type: 'start'; plan: WorkerPlan } | { type: 'proceed'; name: BarrierName };
