import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ConnectionState, LifecycleObserver } from '../lifecycle/connectionState.js';
import type { EventType, LogEntry } from '../protocol/events.js';
import type { RunOutcome } from '../runs/runManager.js';

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
  readonly closes = new Counter({
    name: 'agentwire_closes_total',
    help: 'Closed connections by close code (1006: no close frame)',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly auth = new Counter({
    name: 'agentwire_auth_total',
    help: 'Authentication attempts by method and outcome',
    labelNames: ['method', 'outcome'],
    registers: [this.registry],
  });
  readonly eventsSent = new Counter({
    name: 'agentwire_events_sent_total',
    help: 'Durable events sent to connections, by event type',
    labelNames: ['type'],
    registers: [this.registry],
  });
  readonly errorsSent = new Counter({
    name: 'agentwire_errors_sent_total',
    help: 'Error frames sent, by code',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly runs = new Counter({
    name: 'agentwire_runs_total',
    help: 'Runs ended, by outcome',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  readonly faults = new Counter({
    name: 'agentwire_faults_total',
    help: 'Unexpected server faults (each is a bug or an engine failure), by context',
    labelNames: ['context'],
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

  readonly #sentByType = new Map<EventType, Counter.Internal>();

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

  eventSent(type: EventType): void {
    let child = this.#sentByType.get(type);
    if (!child) {
      child = this.eventsSent.labels(type);
      this.#sentByType.set(type, child);
    }
    child.inc();
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
