import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type CounterConfiguration, type LabelValues } from 'prom-client';
import type { ConnectionState, LifecycleObserver } from '../lifecycle/connectionState.js';
import type { EventType, LogEntry } from '@agentwire/protocol';
import type { RunOutcome } from '../runs/runManager.js';
import type { ArchiveProgress } from '../history/types.js';

/** What a label value outside its known set is counted as. */
export const OTHER_LABEL = 'other';

/**
 * Close codes counted under their own label: the contract's (PROTOCOL.md section 9) and the
 * standard range 1000-1015 (1001 going away, 1005 no status, 1006 no close frame, ...). A peer
 * may close with any code from 3000 to 4999 (and the server sees it echoed), so everything else
 * is `other`: one series, however many codes clients invent.
 */
const KNOWN_CLOSE_CODES: ReadonlySet<number> = new Set([...Array.from({ length: 16 }, (_, i) => 1000 + i), 4008, 4401, 4403, 4408, 4429]);

export function closeCodeLabel(code: string | number): string {
  const n = Number(code);
  return KNOWN_CLOSE_CODES.has(n) ? String(n) : OTHER_LABEL;
}

/** Exhaustive over EventType (a new event type does not compile until it is listed here). */
const EVENT_TYPE_LABELS: Readonly<Record<EventType, true>> = {
  agent_started: true,
  agent_thinking: true,
  agent_thinking_delta: true,
  agent_text_delta: true,
  tool_executing: true,
  tool_completed: true,
  agent_completed: true,
  agent_error: true,
};

/** Event types come from the log, i.e. from the engine's storage: anything else is `other`. */
export function eventTypeLabel(type: string): string {
  return Object.hasOwn(EVENT_TYPE_LABELS, type) ? type : OTHER_LABEL;
}

/**
 * Distinct values a label fed only by code (error codes, fault contexts, auth methods and
 * outcomes, run outcomes) may take before further ones count as `other`. Those values are
 * literals of the source, not client data; the cap is a backstop so that a future caller passing
 * something dynamic cannot grow the series without bound.
 */
export const MAX_CODE_LABEL_VALUES = 32;

type LabelBound = (value: string) => string;

/** Delta holds the flush window ended, and those that outlasted it (FlushScheduler.holds). */
interface DeltaHolds {
  readonly expired: number;
  readonly overdue: number;
}

function firstDistinct(max: number): LabelBound {
  const seen = new Set<string>();
  return (value) => {
    if (seen.has(value)) return value;
    if (seen.size >= max) return OTHER_LABEL;
    seen.add(value);
    return value;
  };
}

/**
 * A Counter whose label values pass through a bound before they make a series, so every caller,
 * present or future, is bounded without having to remember it.
 */
class BoundedCounter<T extends string> extends Counter<T> {
  readonly #bounds: Readonly<Record<T, LabelBound>>;
  readonly #labelNames: readonly T[];

  constructor(config: CounterConfiguration<T> & { labelNames: readonly T[] }, bounds: Readonly<Record<T, LabelBound>>) {
    super(config);
    this.#bounds = bounds;
    this.#labelNames = config.labelNames;
    // prom-client sets `inc` on the instance (it picks the exemplar variant or not), so it is
    // wrapped here rather than overridden. Exemplars are not enabled on the gateway's counters.
    const unbounded = this.inc.bind(this) as (labels?: LabelValues<T> | number, value?: number) => void;
    this.inc = ((labels?: LabelValues<T> | number, value?: number) => {
      if (typeof labels === 'object') unbounded(this.#bound(labels), value);
      else unbounded(labels);
    }) as Counter<T>['inc'];
  }

  override labels(...args: [LabelValues<T>] | string[]): Counter.Internal {
    const [first] = args;
    if (typeof first === 'object') return super.labels(this.#bound(first));
    const names = this.#labelNames;
    return super.labels(...(args as string[]).map((value, i) => (i < names.length ? this.#bounds[names[i]!](value) : value)));
  }

  #bound(labels: LabelValues<T>): LabelValues<T> {
    const bounded: Partial<Record<T, string>> = {};
    for (const name of Object.keys(labels) as T[]) {
      const value = labels[name];
      if (value !== undefined) bounded[name] = Object.hasOwn(this.#bounds, name) ? this.#bounds[name](String(value)) : String(value);
    }
    return bounded as LabelValues<T>;
  }
}

/**
 * The gateway's Prometheus metrics, on a registry of its own so several gateways can live in
 * one process (tests, embedding). Label children used per frame or per event are cached.
 */
export class GatewayMetrics {
  readonly registry = new Registry();

  readonly connections = new Gauge({
    name: 'agentwire_connections',
    help: 'Connections by lifecycle state (CLOSED ones are not counted)',
    labelNames: ['state'],
    registers: [this.registry],
  });
  readonly transitions = new Counter({
    name: 'agentwire_state_transitions_total',
    help: 'Lifecycle transitions taken',
    labelNames: ['from', 'to'],
    registers: [this.registry],
  });
  readonly invalidTransitions = new Counter({
    name: 'agentwire_invalid_transitions_total',
    help: 'Lifecycle transitions attempted and refused (a bug if it ever rises above 0)',
    registers: [this.registry],
  });
  readonly closes = new BoundedCounter(
    {
      name: 'agentwire_closes_total',
      help: 'Closed connections by close code (1006: no close frame; other: a code outside 1000-1015 and the contract)',
      labelNames: ['code'],
      registers: [this.registry],
    },
    { code: closeCodeLabel },
  );
  readonly auth = new BoundedCounter(
    {
      name: 'agentwire_auth_total',
      help: 'Authentication attempts by method and outcome',
      labelNames: ['method', 'outcome'],
      registers: [this.registry],
    },
    { method: firstDistinct(MAX_CODE_LABEL_VALUES), outcome: firstDistinct(MAX_CODE_LABEL_VALUES) },
  );
  readonly eventsSent = new BoundedCounter(
    {
      name: 'agentwire_events_sent_total',
      help: 'Durable events sent to connections, by event type',
      labelNames: ['type'],
      registers: [this.registry],
      // Sends are counted per event per connection in #unreportedSends; they reach the counter here.
      collect: () => this.#reportSends(),
    },
    { type: eventTypeLabel },
  );
  readonly errorsSent = new BoundedCounter(
    {
      name: 'agentwire_errors_sent_total',
      help: 'Error frames sent, by code',
      labelNames: ['code'],
      registers: [this.registry],
    },
    { code: firstDistinct(MAX_CODE_LABEL_VALUES) },
  );
  readonly runs = new BoundedCounter(
    {
      name: 'agentwire_runs_total',
      help: 'Runs ended, by outcome',
      labelNames: ['outcome'],
      registers: [this.registry],
    },
    { outcome: firstDistinct(MAX_CODE_LABEL_VALUES) },
  );
  readonly faults = new BoundedCounter(
    {
      name: 'agentwire_faults_total',
      help: 'Unexpected server faults (each is a bug or an engine failure), by context',
      labelNames: ['context'],
      registers: [this.registry],
    },
    { context: firstDistinct(MAX_CODE_LABEL_VALUES) },
  );
  readonly socketsRefused = new Counter({
    name: 'agentwire_sockets_refused_total',
    help: 'TCP connections closed as they were accepted because the server held AGENTWIRE_MAX_SOCKETS open',
    registers: [this.registry],
  });
  readonly timeToReady = new Histogram({
    name: 'agentwire_time_to_ready_seconds',
    help: 'Time from the upgrade request to connection_ready',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly appendToSend = new Histogram({
    name: 'agentwire_append_to_send_seconds',
    help: 'Time from an event being appended to the log to its fan-out to connections',
    buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });

  /** The run manager's delta holds (observeDeltaHolds). */
  #deltaHolds: (() => DeltaHolds) | null = null;

  /** The history store's archive, when it has one (observeArchive). */
  #archive: (() => ArchiveProgress) | null = null;

  /**
   * Events sent since the counter was last read, by label (so at most one entry per known type
   * plus `other`): a number to add to per send rather than a prom-client call, the hottest
   * metric of a streaming gateway.
   */
  readonly #unreportedSends = new Map<string, number>();

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  readonly lifecycleObserver: LifecycleObserver = {
    transitioned: (from: ConnectionState | null, to: ConnectionState) => {
      if (from !== null) {
        this.connections.dec({ state: from });
        this.transitions.inc({ from, to });
      }
      if (to !== 'CLOSED') this.connections.inc({ state: to });
    },
    rejected: () => this.invalidTransitions.inc(),
  };

  /**
   * Exports the run manager's delta holds (section 7: a fragment is never held longer than
   * AGENTWIRE_STREAM_FLUSH_MS), read when `/metrics` is scraped: nothing is counted per hold here.
   */
  observeDeltaHolds(holds: () => DeltaHolds): void {
    // Metrics shared by several gateways count the last one's (as observeArchive).
    const registered = this.#deltaHolds !== null;
    this.#deltaHolds = holds;
    if (registered) return;
    const read = () => this.#deltaHolds!();
    this.#totalCounter(
      'agentwire_delta_holds_total',
      'Delta holds ended by the flush window (not by another event of the run or its pace)',
      () => read().expired,
    );
    this.#totalCounter(
      'agentwire_delta_holds_overdue_total',
      'Of those, holds that lasted longer than AGENTWIRE_STREAM_FLUSH_MS: the event loop was later than the flush timer made up for',
      () => read().overdue,
    );
  }

  /**
   * Exports a history archive's counters (PostgreSQL: AGENTWIRE_DATABASE_URL), read when
   * `/metrics` is scraped. The series exist only on a gateway whose store archives.
   */
  observeArchive(progress: () => ArchiveProgress): void {
    if (this.#archive) {
      this.#archive = progress;
      return;
    }
    this.#archive = progress;
    const read = () => this.#archive!();
    const gauge = (name: string, help: string, pick: (p: ArchiveProgress) => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(pick(read()));
        },
      });
    const counter = (name: string, help: string, pick: (p: ArchiveProgress) => number) => this.#totalCounter(name, help, () => pick(read()));
    counter('agentwire_archive_events_total', 'Events this node wrote to the history archive (PostgreSQL)', (p) => p.archived);
    counter('agentwire_archive_events_lost_total', 'Events that left the log retention before any node archived them', (p) => p.lost);
    counter('agentwire_archive_batch_failures_total', 'Archive transactions that failed (their events are caught up from the log)', (p) => p.failedBatches);
    counter(
      'agentwire_archive_events_dropped_total',
      'Events not queued for the archive because its queue was full (caught up from the log)',
      (p) => p.dropped,
    );
    gauge('agentwire_archive_lag_events', 'Events this node appended that are not archived yet (queued or being written)', (p) => p.lag);
    gauge('agentwire_archive_behind_logs', 'User logs with a range waiting to be caught up from the log into the archive', (p) => p.behind);
  }

  /** A counter of a total kept elsewhere: the series is set to `total()` on every scrape. */
  #totalCounter(name: string, help: string, total: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(total());
      },
    });
  }

  eventSent(type: EventType): void {
    const label = eventTypeLabel(type);
    this.#unreportedSends.set(label, (this.#unreportedSends.get(label) ?? 0) + 1);
  }

  #reportSends(): void {
    for (const [type, count] of this.#unreportedSends) this.eventsSent.inc({ type }, count);
    this.#unreportedSends.clear();
  }

  fannedOut(entry: LogEntry, now: number): void {
    this.appendToSend.observe(Math.max(0, now - entry.appendedAt) / 1000);
  }

  runEnded(outcome: RunOutcome): void {
    this.runs.inc({ outcome });
  }

  async invalidTransitionCount(): Promise<number> {
    return (await this.invalidTransitions.get()).values[0]?.value ?? 0;
  }
}
