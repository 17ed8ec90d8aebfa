import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ALL_STATES,
  ConnectionLifecycle,
  ConnectionState,
  StateTransitionError,
  TRANSITIONS,
  isValidTransition,
  type LifecycleObserver,
} from '../../src/lifecycle/index.js';
import { GatewayMetrics } from '../../src/observability/metrics.js';

/**
 * The contract of PROTOCOL.md section 4, written out here independently of the TRANSITIONS
 * table so that a wrong table is caught:
 *   CONNECTING -> ACCEPTED -> AUTHENTICATED -> SERVICES_READY -> PROCESSING_READY -> CLOSING -> CLOSED
 *   no skip, no repeat; CLOSING from every non-terminal state; CLOSED only from CLOSING, or
 *   directly from CONNECTING (refused upgrade).
 */
const STATES = ['CONNECTING', 'ACCEPTED', 'AUTHENTICATED', 'SERVICES_READY', 'PROCESSING_READY', 'CLOSING', 'CLOSED'] as const;
type State = (typeof STATES)[number];

const CONTRACT_ALLOWED: ReadonlySet<string> = new Set([
  // the chain
  'CONNECTING>ACCEPTED',
  'ACCEPTED>AUTHENTICATED',
  'AUTHENTICATED>SERVICES_READY',
  'SERVICES_READY>PROCESSING_READY',
  'PROCESSING_READY>CLOSING',
  'CLOSING>CLOSED',
  // CLOSING from every non-terminal state (CLOSING itself would be a repeat)
  'CONNECTING>CLOSING',
  'ACCEPTED>CLOSING',
  'AUTHENTICATED>CLOSING',
  'SERVICES_READY>CLOSING',
  // refused upgrade
  'CONNECTING>CLOSED',
]);
const allowedByContract = (from: State, to: State) => CONTRACT_ALLOWED.has(`${from}>${to}`);

/** Every path from CONNECTING to `target` that follows the TRANSITIONS table (the graph is acyclic). */
function pathsTo(target: State): State[][] {
  const found: State[][] = [];
  const walk = (path: State[]) => {
    const last = path.at(-1)!;
    if (last === target) found.push(path);
    for (const next of TRANSITIONS[last]) {
      if (!path.includes(next as State)) walk([...path, next as State]);
    }
  };
  walk(['CONNECTING']);
  return found;
}

type Call = ['transitioned', State | null, State] | ['rejected', State, State];

function recordingObserver(): LifecycleObserver & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    transitioned: (from, to) => calls.push(['transitioned', from as State | null, to as State]),
    rejected: (from, to) => calls.push(['rejected', from as State, to as State]),
  };
}

/** A lifecycle walked along `path` (path[0] is CONNECTING, where every lifecycle starts). */
function lifecycleAt(path: readonly State[], observer?: LifecycleObserver, id = 'conn-1'): ConnectionLifecycle {
  const lifecycle = new ConnectionLifecycle(id, observer);
  for (const state of path.slice(1)) lifecycle.transition(state);
  expect(lifecycle.state).toBe(path.at(-1));
  return lifecycle;
}

async function gaugeByState(metrics: GatewayMetrics): Promise<Record<string, number>> {
  const result: Record<string, number> = {};
  for (const { labels, value } of (await metrics.connections.get()).values) {
    if (value !== 0) result[String(labels.state)] = value;
  }
  return result;
}

async function transitionCounts(metrics: GatewayMetrics): Promise<Record<string, number>> {
  const result: Record<string, number> = {};
  for (const { labels, value } of (await metrics.transitions.get()).values) {
    result[`${labels.from}>${labels.to}`] = value;
  }
  return result;
}

const PAIRS: Array<[State, State]> = STATES.flatMap((from) => STATES.map((to): [State, State] => [from, to]));

describe('the state set and the transition table', () => {
  it('has exactly the seven states of the contract', () => {
    expect([...ALL_STATES]).toEqual([...STATES]);
    for (const state of STATES) expect(ConnectionState[state]).toBe(state);
  });

  it('allows exactly the 11 transitions of the contract', () => {
    const table = new Set(STATES.flatMap((from) => [...TRANSITIONS[from]].map((to) => `${from}>${to}`)));
    expect([...table].sort()).toEqual([...CONTRACT_ALLOWED].sort());
    for (const [from, to] of PAIRS) expect(isValidTransition(from, to)).toBe(allowedByContract(from, to));
  });

  it('reaches every state from CONNECTING, along contract-valid steps only', () => {
    for (const state of STATES) {
      const paths = pathsTo(state);
      expect(paths.length, `no path to ${state}`).toBeGreaterThan(0);
      for (const path of paths) {
        for (let i = 1; i < path.length; i++) expect(allowedByContract(path[i - 1]!, path[i]!)).toBe(true);
      }
    }
    // The happy path is the full chain, and it is the only way to PROCESSING_READY.
    expect(pathsTo('PROCESSING_READY')).toEqual([STATES.slice(0, 5)]);
    // CLOSING from five states; CLOSED through each of those or directly from CONNECTING.
    expect(pathsTo('CLOSING')).toHaveLength(5);
    expect(pathsTo('CLOSED')).toHaveLength(6);
  });
});

describe('every ordered pair (from, to) of the 7 states', () => {
  it.each(PAIRS)('%s -> %s', async (from, to) => {
    const allowed = allowedByContract(from, to);
    const paths = pathsTo(from);
    expect(paths.length).toBeGreaterThan(0);
    for (const path of paths) {
      const observer = recordingObserver();
      const lifecycle = lifecycleAt(path, observer);
      const expectedSoFar: Call[] = [['transitioned', null, 'CONNECTING']];
      for (let i = 1; i < path.length; i++) expectedSoFar.push(['transitioned', path[i - 1]!, path[i]!]);
      expect(observer.calls).toEqual(expectedSoFar);

      if (allowed) {
        lifecycle.transition(to);
        expect(lifecycle.state).toBe(to);
        expect(observer.calls).toEqual([...expectedSoFar, ['transitioned', from, to]]);
      } else {
        let caught: unknown;
        try {
          lifecycle.transition(to);
        } catch (error) {
          caught = error;
        }
        expect(caught).toBeInstanceOf(StateTransitionError);
        const error = caught as StateTransitionError;
        expect(error).toBeInstanceOf(Error);
        expect(error.name).toBe('StateTransitionError');
        expect(error.message.toLowerCase()).toContain('invalid transition');
        expect(error.message).toContain(from);
        expect(error.message).toContain(to);
        expect(error.message).toContain('conn-1');
        expect(error.from).toBe(from);
        expect(error.to).toBe(to);
        expect(error.connectionId).toBe('conn-1');
        expect(lifecycle.state).toBe(from);
        expect(observer.calls).toEqual([...expectedSoFar, ['rejected', from, to]]);
      }
    }

    // The metrics observer: the gauge counts this connection in exactly one state (none once
    // CLOSED), the transition counter follows the taken steps, the invalid counter the refused one.
    const metrics = new GatewayMetrics();
    const path = paths[0]!;
    const lifecycle = lifecycleAt(path, metrics.lifecycleObserver);
    expect(await gaugeByState(metrics)).toEqual(from === 'CLOSED' ? {} : { [from]: 1 });
    if (allowed) lifecycle.transition(to);
    else expect(() => lifecycle.transition(to)).toThrow(StateTransitionError);
    const final = allowed ? to : from;
    expect(await gaugeByState(metrics)).toEqual(final === 'CLOSED' ? {} : { [final]: 1 });
    expect(await metrics.invalidTransitionCount()).toBe(allowed ? 0 : 1);
    const steps = [...path.slice(1).map((s, i) => `${path[i]}>${s}`), ...(allowed ? [`${from}>${to}`] : [])];
    const expectedCounts: Record<string, number> = {};
    for (const step of steps) expectedCounts[step] = (expectedCounts[step] ?? 0) + 1;
    expect(await transitionCounts(metrics)).toEqual(expectedCounts);
  });
});

describe('seed plan scenarios (must pass)', () => {
  it('skipping a state raises StateTransitionError: CONNECTING -> SERVICES_READY', () => {
    const lifecycle = new ConnectionLifecycle('test-conn');
    expect(() => lifecycle.transition(ConnectionState.SERVICES_READY)).toThrow(StateTransitionError);
    expect(() => lifecycle.transition(ConnectionState.SERVICES_READY)).toThrow(/invalid transition CONNECTING -> SERVICES_READY/);
    expect(lifecycle.state).toBe('CONNECTING');
  });

  it('enforces the correct sequence CONNECTING -> ACCEPTED -> AUTHENTICATED -> SERVICES_READY -> PROCESSING_READY', () => {
    const lifecycle = new ConnectionLifecycle('test-conn');
    const seen: State[] = [lifecycle.state];
    for (const state of STATES.slice(1, 5)) {
      lifecycle.transition(state);
      seen.push(lifecycle.state);
    }
    expect(seen).toEqual(STATES.slice(0, 5));
    // Once processing, the only way on is CLOSING; no state is entered twice.
    for (const state of STATES.slice(0, 5)) {
      expect(() => lifecycle.transition(state)).toThrow(StateTransitionError);
    }
    expect(lifecycle.state).toBe('PROCESSING_READY');
  });

  it('two connections of one user have independent state machines (each connection has exactly one)', () => {
    const a = new ConnectionLifecycle('conn1');
    const b = new ConnectionLifecycle('conn2');
    a.transition(ConnectionState.ACCEPTED);
    expect(b.state).toBe('CONNECTING');
    b.transition(ConnectionState.ACCEPTED);
    a.transition(ConnectionState.CLOSING);
    expect([a.state, b.state]).toEqual(['CLOSING', 'ACCEPTED']);
  });
});

describe('beginClosing and isEnding', () => {
  it.each(STATES)('from %s', (from) => {
    const observer = recordingObserver();
    const lifecycle = lifecycleAt(pathsTo(from)[0]!, observer);
    const before = observer.calls.length;
    const ending = from === 'CLOSING' || from === 'CLOSED';
    expect(lifecycle.isEnding).toBe(ending);
    expect(lifecycle.beginClosing()).toBe(!ending);
    expect(lifecycle.state).toBe(ending ? from : 'CLOSING');
    expect(lifecycle.isEnding).toBe(true);
    // A second call is a no-op and never reports a refused transition.
    expect(lifecycle.beginClosing()).toBe(false);
    expect(observer.calls.slice(before)).toEqual(ending ? [] : [['transitioned', from, 'CLOSING']]);
  });
});

describe('GatewayMetrics lifecycle observer under arbitrary attempts', () => {
  it('keeps the gauge equal to the live connections per state and counts every refusal', async () => {
    const attempt = fc.record({ conn: fc.nat(5), to: fc.constantFrom(...STATES) });
    await fc.assert(
      fc.asyncProperty(fc.array(attempt, { maxLength: 60 }), async (attempts) => {
        const metrics = new GatewayMetrics();
        const lifecycles = Array.from({ length: 6 }, (_, i) => new ConnectionLifecycle(`c${i}`, metrics.lifecycleObserver));
        const model: State[] = lifecycles.map(() => 'CONNECTING');
        let refused = 0;
        for (const { conn, to } of attempts) {
          const from = model[conn]!;
          if (allowedByContract(from, to)) {
            lifecycles[conn]!.transition(to);
            model[conn] = to;
          } else {
            expect(() => lifecycles[conn]!.transition(to)).toThrow(StateTransitionError);
            refused++;
          }
          expect(lifecycles[conn]!.state).toBe(model[conn]);
        }
        const expected: Record<string, number> = {};
        for (const state of model) if (state !== 'CLOSED') expected[state] = (expected[state] ?? 0) + 1;
        expect(await gaugeByState(metrics)).toEqual(expected);
        expect(await metrics.invalidTransitionCount()).toBe(refused);
      }),
      { numRuns: 200 },
    );
  });
});
