/**
 * Shared pieces of the benchmark: the IPC request/reply helper used between the orchestrator
 * (bench/run.ts) and its child processes, the wire conventions both bench servers follow, and
 * small statistics helpers. Nothing here is part of agentwire itself.
 */
import type { ChildProcess } from 'node:child_process';
import { PerformanceObserver, monitorEventLoopDelay, performance, type EventLoopUtilization } from 'node:perf_hooks';

/** HS256 secret shared by the gateway bench server and the load generator. */
export const BENCH_SECRET = 'bench-secret-0123456789-0123456789-0123456789-abcdef';

/**
 * How bench tokens are signed: HS256 with BENCH_SECRET, or RS256 / ES256 with a key pair that
 * bench/run.ts makes per run (the gateway gets the public PEM, the load generator the private).
 */
export type BenchAlgorithm = 'HS256' | 'RS256' | 'ES256';

/** Both bench servers listen here only. */
export const BENCH_HOST = '127.0.0.1';

/** The subprotocols the load generator offers (the browser path of PROTOCOL.md section 2). */

/**
 * What a bench run does, chosen by the `user_message.text` both bench servers understand:
 * - `steps:<n>`: n thinking steps in one tick, then an answer (agent_started, n × agent_thinking,
 *   agent_completed);
 * - `deltas:<n>`: n stamped fragments, each in its own tick (as a model's tokens arrive in
 *   separate socket reads), alternating text and thinking, so that each is its own delta event
 *   whatever the flush window (a change of kind flushes): agent_started, n deltas, agent_completed;
 * - `stream:<n>:<ms>`: n stamped text fragments, one every <ms> ms (a model streaming at a
 *   pace), merged by the gateway's coalescer into fewer delta events (gateway only).
 */
export type Workload =
  | { readonly kind: 'steps'; readonly n: number }
  | { readonly kind: 'deltas'; readonly n: number }
  | { readonly kind: 'stream'; readonly n: number; readonly everyMs: number };

export function workloadText(workload: Workload): string {
  return workload.kind === 'stream' ? `stream:${workload.n}:${workload.everyMs}` : `${workload.kind}:${workload.n}`;
}

/** Bounded: at most 9999 steps or fragments, at most 9999 ms apart; anything else is one step. */
export function parseWorkload(text: string): Workload {
  const match = /^(steps|deltas|stream):(\d{1,4})(?::(\d{1,4}))?$/.exec(text);
  if (!match) return { kind: 'steps', n: 1 };
  const n = Number(match[2]);
  if (match[1] === 'stream') return { kind: 'stream', n, everyMs: Number(match[3] ?? 10) };
  return { kind: match[1] as 'steps' | 'deltas', n };
}

/** Durable events per run on every connection of its user; null when the gateway's merging decides. */
export function eventsPerRun(workload: Workload): number | null {
  return workload.kind === 'stream' ? null : workload.n + 2;
}

/**
 * Wall-clock time in ms with µs digits, comparable between the processes of one machine
 * (performance.timeOrigin is each process's start on the same system clock).
 */
export function preciseNow(): number {
  return performance.timeOrigin + performance.now();
}

/** A streamed fragment: `@<preciseNow() when made> ` (19 characters until the year 2286). */
export function fragmentText(): string {
  return `@${preciseNow().toFixed(3)} `;
}

/** Calls `each` with the stamp of every fragment in a delta's text (the bytes of a whole frame will do). */
export function forEachFragmentStamp(text: string, each: (stampMs: number) => void): void {
  for (let at = text.indexOf('@'); at >= 0; at = text.indexOf('@', at + 1)) {
    const stamp = Number(text.slice(at + 1, at + 18));
    if (Number.isFinite(stamp)) each(stamp);
  }
}

export interface ServerUsage {
  /** process.cpuUsage() of the server process, microseconds. */
  readonly cpuUser: number;
  readonly cpuSystem: number;
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
  readonly arrayBuffers: number;
  readonly connections: number;
}

export interface IpcRequest {
  readonly id: number;
  readonly cmd: string;
  readonly args?: unknown;
}

export type IpcReply =
  { readonly id: number; readonly ok: true; readonly result: unknown } | { readonly id: number; readonly ok: false; readonly error: string };

/** Request/reply over a forked child's IPC channel; every call has a timeout. */
export class IpcClient {
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }>();

  readonly #child: ChildProcess;

  constructor(
    readonly name: string,
    child: ChildProcess,
  ) {
    this.#child = child;
    child.on('message', (message: unknown) => {
      const reply = message as IpcReply;
      if (typeof reply !== 'object' || reply === null || typeof reply.id !== 'number') return;
      const pending = this.#pending.get(reply.id);
      if (!pending) return;
      this.#pending.delete(reply.id);
      clearTimeout(pending.timer);
      if (reply.ok) pending.resolve(reply.result);
      else pending.reject(new Error(`${name}: ${reply.error}`));
    });
    child.once('exit', (code, signal) => {
      for (const [id, pending] of this.#pending) {
        this.#pending.delete(id);
        clearTimeout(pending.timer);
        pending.reject(new Error(`${name} exited (code ${code}, signal ${signal}) before answering`));
      }
    });
  }

  call<T>(cmd: string, args: unknown = {}, timeoutMs = 60_000): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${this.name}: '${cmd}' timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      this.#child.send({ id, cmd, args } satisfies IpcRequest);
    });
  }
}

/** Serves IPC requests in a child process: one handler per command. */
export function serveIpc(handlers: Record<string, (args: never) => unknown>): void {
  process.on('message', (message: unknown) => {
    const request = message as IpcRequest;
    if (typeof request !== 'object' || request === null || typeof request.id !== 'number') return;
    const handler = handlers[request.cmd];
    const reply = (payload: IpcReply) => {
      if (process.connected) process.send!(payload);
    };
    if (!handler) return reply({ id: request.id, ok: false, error: `unknown command ${request.cmd}` });
    Promise.resolve()
      .then(() => handler((request.args ?? {}) as never)) // each handler names the arguments its command takes
      .then(
        (result) => reply({ id: request.id, ok: true, result: result ?? null }),
        (error: unknown) => reply({ id: request.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
      );
  });
}

export function usageNow(connections: number): ServerUsage {
  const cpu = process.cpuUsage();
  const mem = process.memoryUsage();
  return {
    cpuUser: cpu.user,
    cpuSystem: cpu.system,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    connections,
  };
}

/** Full GC (the server runs with --expose-gc), a few times with turns in between. */
export async function fullGc(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('gc is not exposed: start the server with --expose-gc');
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** What a process's event loop did between `LoopWatch.start` and `stop`. */
export interface LoopReport {
  /** How late a 1 ms timer fired, ms. */
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  /** Share of the time the loop was busy (event-loop utilization, 0–1). */
  readonly utilization: number;
  /** Share of the time spent in garbage-collection pauses on the main thread (0–1). */
  readonly gcShare: number;
}

/**
 * Watches this process's event loop over a measured step: timer lateness (1 ms resolution; 10
 * ms would hide what we look for), utilization and GC pauses. Off between steps: its 1 ms timer
 * is work the process otherwise does not do (the raw ws server never has it).
 */
export class LoopWatch {
  readonly #delay = monitorEventLoopDelay({ resolution: 1 });
  #utilization: EventLoopUtilization | null = null;
  #startedAt = 0;
  #gcMs = 0;
  readonly #gc = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) this.#gcMs += entry.duration;
  });

  start(): void {
    this.#delay.reset();
    this.#delay.enable();
    this.#gcMs = 0;
    this.#gc.observe({ entryTypes: ['gc'] });
    this.#utilization = performance.eventLoopUtilization();
    this.#startedAt = performance.now();
  }

  stop(): LoopReport {
    const utilization = this.#utilization ? performance.eventLoopUtilization(this.#utilization).utilization : Number.NaN;
    const elapsed = performance.now() - this.#startedAt;
    this.#delay.disable();
    this.#gc.disconnect();
    return {
      p50: this.#delay.percentile(50) / 1e6,
      p99: this.#delay.percentile(99) / 1e6,
      max: this.#delay.max / 1e6,
      utilization,
      gcShare: this.#gcMs / elapsed,
    };
  }
}

// ---------------------------------------------------------------- statistics

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Nearest-rank percentile, p in (0, 100]. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly values: readonly number[];
}

export function spread(values: readonly number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), values };
}

/** The gateway's append → fan-out histogram (agentwire_append_to_send_seconds) as cumulative bucket counts. */
export type Buckets = { le: number; count: number }[];

/** Upper bound of the bucket where the cumulative count first reaches p% (from a delta of two snapshots). */
export function bucketPercentile(before: Buckets[], after: Buckets[], p: number): number {
  const les = after[0]!.map((b) => b.le);
  const counts = les.map((_, i) => after.reduce((n, a, node) => n + a[i]!.count - before[node]![i]!.count, 0));
  const total = counts[counts.length - 1]!;
  if (total === 0) return Number.NaN;
  const at = counts.findIndex((c) => c >= (p / 100) * total);
  return les[at]! * 1000;
}
