import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { CoordinatorRegistry, type CoordinatorMember, type CoordinatorOptions, type SetupResult } from '../../src/coordination/index.js';
import { MemoryEngine, type MemoryEngineOptions } from '../../src/engine/index.js';
import type { EventEngine, GapListener, LiveListener, LogHead, Subscription } from '../../src/engine/types.js';
import type { EventBody, LogEntry } from '@agentwire/protocol';
import { InstrumentedEngine, deferred, nextTurn, type Deferred, type EngineOp } from '../helpers/instrumentedEngine.js';
import { ScheduledEngine } from '../helpers/scheduledEngine.js';

/** A connection as the coordinator sees it, recording what it is given. */
class FakeMember implements CoordinatorMember {
  readonly delivered: LogEntry[] = [];
  resyncs = 0;
  open = true;
  constructor(readonly connectionId: string) {}
  isOpen(): boolean {
    return this.open;
  }
  deliver(entry: LogEntry): void {
    this.delivered.push(entry);
  }
  resync(): void {
    this.resyncs++;
  }
  get seqs(): number[] {
    return this.delivered.map((e) => e.seq);
  }
}

const engines: MemoryEngine[] = [];
afterEach(async () => {
  for (const engine of engines.splice(0)) await engine.close();
});

function memoryEngine(options: MemoryEngineOptions = {}): MemoryEngine {
  const engine = new MemoryEngine(options);
  engines.push(engine);
  return engine;
}

function thinking(n: number): EventBody {
  return { type: 'agent_thinking', run_id: 'r1', thread_id: 't1', ts: new Date(0).toISOString(), text: `step ${n}` };
}

async function appendN(engine: EventEngine, userId: string, count: number): Promise<LogEntry[]> {
  return engine.append(
    userId,
    Array.from({ length: count }, (_, i) => thinking(i)),
  );
}

const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

function registryOf(engine: EventEngine, options: Partial<CoordinatorOptions> = {}): CoordinatorRegistry {
  return new CoordinatorRegistry(engine, { maxConnections: 32, ...options });
}

/** An engine whose every call waits for its gate (opened by the test, in `gates` order). */
function gatedEngine(): { engine: InstrumentedEngine; gates: Deferred[] } {
  const gates: Deferred[] = [];
  const engine = new InstrumentedEngine(memoryEngine(), {
    before: () => {
      const gate = deferred();
      gates.push(gate);
      return gate.promise;
    },
  });
  return { engine, gates };
}

/** Admits and sets up a member; asserts the setup succeeded. */
async function join(registry: CoordinatorRegistry, userId: string, member: FakeMember, resume = {}) {
  const coordinator = registry.getOrCreate(userId);
  const generation = coordinator.admit(member);
  const result = await coordinator.setup(member, generation, resume);
  expect(result.ok).toBe(true);
  return { coordinator, generation, result: result as Extract<SetupResult, { ok: true }> };
}

describe('CoordinatorRegistry: one coordinator per user', () => {
  it('returns the same instance while any admitted connection lives and a new one after the last teardown', async () => {
    const engine = new InstrumentedEngine(memoryEngine());
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const b = new FakeMember('b');

    const first = registry.getOrCreate('u1');
    const genA = first.admit(a);
    expect(registry.getOrCreate('u1')).toBe(first);
    expect(registry.get('u1')).toBe(first);
    expect(registry.get('u2')).toBeUndefined();
    expect((await first.setup(a, genA, {})).ok).toBe(true);

    const same = registry.getOrCreate('u1');
    expect(same).toBe(first);
    const genB = same.admit(b);
    expect((await same.setup(b, genB, {})).ok).toBe(true);
    expect(first.connectionCount).toBe(2);
    expect(registry.size).toBe(1);
    // One subscription to the user's log however many connections the user has.
    expect(engine.countOf('subscribe', 'u1')).toBe(1);

    expect(await first.teardown('a', genA)).toEqual({ ok: true });
    expect(registry.get('u1')).toBe(first);
    expect(registry.getOrCreate('u1')).toBe(first);
    expect(engine.activeSubscriptions.get('u1')).toBe(1);

    expect(await first.teardown('b', genB)).toEqual({ ok: true });
    expect(registry.size).toBe(0);
    expect(registry.get('u1')).toBeUndefined();
    expect(engine.activeSubscriptions.get('u1')).toBe(0);
    expect(engine.unsubscribeCount).toBe(1);

    const next = registry.getOrCreate('u1');
    expect(next).not.toBe(first);
    expect(next.userId).toBe('u1');
    const c = new FakeMember('c');
    const genC = next.admit(c);
    expect((await next.setup(c, genC, {})).ok).toBe(true);
    await appendN(engine, 'u1', 1);
    expect(c.seqs).toEqual([1]);
    // The released coordinator delivers nothing any more.
    expect(a.delivered).toEqual([]);
    expect(b.delivered).toEqual([]);
    expect(await next.teardown('c', genC)).toEqual({ ok: true });
    expect(registry.size).toBe(0);
    expect(engine.activeSubscriptions.get('u1')).toBe(0);
  });

  it('keeps users apart: different users get different coordinators and only their own entries', async () => {
    const engine = memoryEngine();
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const b = new FakeMember('b');
    const { coordinator: ca, generation: ga } = await join(registry, 'u1', a);
    const { coordinator: cb, generation: gb } = await join(registry, 'u2', b);
    expect(ca).not.toBe(cb);
    expect(registry.size).toBe(2);
    await appendN(engine, 'u1', 2);
    await appendN(engine, 'u2', 1);
    expect(a.seqs).toEqual([1, 2]);
    expect(b.seqs).toEqual([1]);
    expect(b.delivered[0]!.json).toBe((await engine.read('u2', 1, 1))[0]!.json);
    await ca.teardown('a', ga);
    expect(registry.size).toBe(1);
    await cb.teardown('b', gb);
    expect(registry.size).toBe(0);
  });

  it('a connection admitted while the last teardown is queued keeps the coordinator alive', async () => {
    const gate: Deferred[] = [];
    const engine = new InstrumentedEngine(memoryEngine(), {
      before: (op) => {
        if (op !== 'head') return;
        const d = deferred();
        gate.push(d);
        return d.promise;
      },
    });
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const b = new FakeMember('b');
    const coordinator = registry.getOrCreate('u1');
    const genA = coordinator.admit(a);
    const setupA = coordinator.setup(a, genA, {});
    await nextTurn();
    expect(gate).toHaveLength(1); // blocked in the subscription's head
    const teardownA = coordinator.teardown('a', genA);
    // b arrives while a's teardown waits behind a's setup.
    expect(registry.getOrCreate('u1')).toBe(coordinator);
    const genB = coordinator.admit(b);
    const setupB = coordinator.setup(b, genB, {});
    gate.shift()!.resolve();
    await nextTurn();
    gate.shift()!.resolve(); // a's own head
    expect((await setupA).ok).toBe(true);
    expect(await teardownA).toEqual({ ok: true });
    expect(registry.get('u1')).toBe(coordinator);
    await nextTurn();
    gate.shift()!.resolve(); // b's head
    expect((await setupB).ok).toBe(true);
    expect(engine.activeSubscriptions.get('u1')).toBe(1);
    await appendN(engine.inner, 'u1', 1);
    expect(b.seqs).toEqual([1]);
    expect(a.seqs).toEqual([]);
  });
});

describe('UserCoordinator: setups and teardowns of one user run one at a time', () => {
  it('never overlaps two setups of one user while setups of different users overlap', async () => {
    const pending: Array<{ op: EngineOp; userId: string; gate: Deferred }> = [];
    const engine = new InstrumentedEngine(memoryEngine(), {
      before: (op, userId) => {
        const gate = deferred();
        pending.push({ op, userId, gate });
        return gate.promise;
      },
    });
    const registry = registryOf(engine);
    const users = ['u1', 'u1', 'u1', 'u1', 'u2', 'u2', 'u2'];
    const members = users.map((_, i) => new FakeMember(`m${i}`));
    const finished: string[] = [];
    const setups = members.map((member, i) => {
      const coordinator = registry.getOrCreate(users[i]!);
      const generation = coordinator.admit(member);
      return coordinator.setup(member, generation, {}).then((result) => {
        finished.push(member.connectionId);
        return result;
      });
    });

    let rounds = 0;
    let sawBothUsers = false;
    for (; finished.length < members.length; rounds++) {
      expect(rounds).toBeLessThan(100);
      await nextTurn();
      // Every call now in flight is waiting on its gate: count them per user.
      const perUser = new Map<string, number>();
      for (const call of pending) perUser.set(call.userId, (perUser.get(call.userId) ?? 0) + 1);
      for (const [, count] of perUser) expect(count).toBeLessThanOrEqual(1);
      if (perUser.size === 2) sawBothUsers = true;
      for (const call of pending.splice(0)) call.gate.resolve();
    }
    expect(sawBothUsers).toBe(true);
    expect(engine.maxInFlight.get('u1')).toBe(1);
    expect(engine.maxInFlight.get('u2')).toBe(1);
    expect(engine.maxUsersInFlight).toBe(2);
    for (const result of await Promise.all(setups)) expect(result.ok).toBe(true);
    // In the order they were requested, per user.
    expect(finished.filter((id) => ['m0', 'm1', 'm2', 'm3'].includes(id))).toEqual(['m0', 'm1', 'm2', 'm3']);
    expect(finished.filter((id) => ['m4', 'm5', 'm6'].includes(id))).toEqual(['m4', 'm5', 'm6']);
    expect(engine.countOf('subscribe', 'u1')).toBe(1);
    expect(engine.countOf('subscribe', 'u2')).toBe(1);
  });

  it('a teardown requested during a setup waits for it, and the setup after it waits for the teardown', async () => {
    const { engine, gates } = gatedEngine();
    const registry = registryOf(engine);
    const coordinator = registry.getOrCreate('u1');
    const a = new FakeMember('a');
    const b = new FakeMember('b');
    const c = new FakeMember('c');
    const genA = coordinator.admit(a);
    const genB = coordinator.admit(b);
    const genC = coordinator.admit(c);
    const order: string[] = [];
    const setupA = coordinator.setup(a, genA, {}).then((r) => (order.push('setup a'), r));
    const teardownB = coordinator.teardown('b', genB).then((r) => (order.push('teardown b'), r));
    const setupC = coordinator.setup(c, genC, {}).then((r) => (order.push('setup c'), r));
    for (let round = 0; order.length < 3; round++) {
      expect(round).toBeLessThan(100);
      await nextTurn();
      expect(gates.length).toBeLessThanOrEqual(1);
      gates.shift()?.resolve();
    }
    expect(order).toEqual(['setup a', 'teardown b', 'setup c']);
    expect((await setupA).ok).toBe(true);
    expect(await teardownB).toEqual({ ok: true });
    expect((await setupC).ok).toBe(true);
    expect(coordinator.connectionCount).toBe(2);
    expect(coordinator.admittedCount).toBe(2);
  });
});

describe('UserCoordinator: denials', () => {
  it('denies a teardown with a stale generation and removes nothing', async () => {
    const engine = memoryEngine();
    const registry = registryOf(engine);
    const member = new FakeMember('a');
    const coordinator = registry.getOrCreate('u1');
    const oldGeneration = coordinator.admit(member);
    // The same connection id registered again (a newer registration): the old generation is stale.
    const newGeneration = coordinator.admit(member);
    expect(newGeneration).toBeGreaterThan(oldGeneration);
    expect(await coordinator.setup(member, oldGeneration, {})).toEqual({ ok: false, reason: 'stale_generation' });
    expect((await coordinator.setup(member, newGeneration, {})).ok).toBe(true);

    expect(await coordinator.teardown('a', oldGeneration)).toEqual({ ok: false, reason: 'stale_generation' });
    expect(await coordinator.teardown('nobody', 1)).toEqual({ ok: false, reason: 'not_admitted' });
    expect(coordinator.connectionCount).toBe(1);
    expect(coordinator.admittedCount).toBe(1);
    expect(registry.get('u1')).toBe(coordinator);
    await appendN(engine, 'u1', 2);
    expect(member.seqs).toEqual([1, 2]);

    expect(await coordinator.teardown('a', newGeneration)).toEqual({ ok: true });
    expect(registry.size).toBe(0);
    // Torn down: the generation is gone entirely.
    expect(await coordinator.teardown('a', newGeneration)).toEqual({ ok: false, reason: 'not_admitted' });
  });

  it('denies setup of a member that was never admitted', async () => {
    const registry = registryOf(memoryEngine());
    const coordinator = registry.getOrCreate('u1');
    const other = new FakeMember('x');
    const generation = coordinator.admit(other);
    expect(await coordinator.setup(new FakeMember('ghost'), generation, {})).toEqual({ ok: false, reason: 'not_admitted' });
    expect(coordinator.connectionCount).toBe(0);
  });

  it('denies setup of a member that is already closed with connection_closed, and does not register it', async () => {
    const engine = memoryEngine();
    const registry = registryOf(engine);
    const coordinator = registry.getOrCreate('u1');
    const closed = new FakeMember('closed');
    closed.open = false;
    const generation = coordinator.admit(closed);
    expect(await coordinator.setup(closed, generation, {})).toEqual({ ok: false, reason: 'connection_closed' });
    expect(coordinator.connectionCount).toBe(0);
    await appendN(engine, 'u1', 1);
    expect(closed.delivered).toEqual([]);
    expect(await coordinator.teardown('closed', generation)).toEqual({ ok: true });
    expect(registry.size).toBe(0);
  });

  it('denies connection_closed for a member that closed while its setup was queued', async () => {
    const { engine, gates } = gatedEngine();
    const registry = registryOf(engine);
    const coordinator = registry.getOrCreate('u1');
    const a = new FakeMember('a');
    const b = new FakeMember('b');
    const setupA = coordinator.setup(a, coordinator.admit(a), {});
    const setupB = coordinator.setup(b, coordinator.admit(b), {});
    await nextTurn();
    b.open = false; // b's socket died while a's setup held the coordinator
    let settled = false;
    void setupA.then(() => (settled = true));
    for (let round = 0; !settled; round++) {
      expect(round).toBeLessThan(100);
      gates.shift()?.resolve();
      await nextTurn();
    }
    expect(await setupB).toEqual({ ok: false, reason: 'connection_closed' });
    expect(gates).toHaveLength(0); // b's setup did not touch the engine
    expect(coordinator.connectionCount).toBe(1);
  });

  it('caps the registered connections per user with too_many_connections', async () => {
    const engine = memoryEngine();
    const registry = registryOf(engine, { maxConnections: 2 });
    const members = ['a', 'b', 'c'].map((id) => new FakeMember(id));
    const coordinator = registry.getOrCreate('u1');
    const generations = members.map((m) => coordinator.admit(m));
    const results = await Promise.all(members.map((m, i) => coordinator.setup(m, generations[i]!, {})));
    expect(results.map((r) => (r.ok ? 'ok' : r.reason))).toEqual(['ok', 'ok', 'too_many_connections']);
    expect(coordinator.connectionCount).toBe(2);
    await appendN(engine, 'u1', 1);
    expect(members.map((m) => m.seqs)).toEqual([[1], [1], []]);

    expect(await coordinator.teardown('c', generations[2]!)).toEqual({ ok: true });
    expect(await coordinator.teardown('a', generations[0]!)).toEqual({ ok: true });
    const d = new FakeMember('d');
    expect((await coordinator.setup(d, coordinator.admit(d), {})).ok).toBe(true);
    expect(coordinator.connectionCount).toBe(2);
  });
});

describe('UserCoordinator: resume', () => {
  async function setupWith(engine: EventEngine, resume: { lastSeq?: number; epoch?: string }) {
    const registry = registryOf(engine);
    const coordinator = registry.getOrCreate('u1');
    const member = new FakeMember(`m-${Math.random()}`);
    return coordinator.setup(member, coordinator.admit(member), resume);
  }

  it('same epoch and a retained range: resumed with exactly the missing entries', async () => {
    const engine = memoryEngine();
    const appended = await appendN(engine, 'u1', 5);
    const { epoch } = await engine.head('u1');
    const result = await setupWith(engine, { lastSeq: 2, epoch });
    expect(result).toEqual({ ok: true, head: { epoch, lastSeq: 5 }, resumed: true, replay: appended.slice(2) });
    if (!result.ok) throw new Error('unreachable');
    expect(result.replay.map((e) => e.seq)).toEqual([3, 4, 5]);
    expect(result.replay.map((e) => JSON.parse(e.json).seq)).toEqual([3, 4, 5]);

    expect(await setupWith(engine, { lastSeq: 5, epoch })).toMatchObject({ ok: true, resumed: true, replay: [] });
    expect(await setupWith(engine, { lastSeq: 0, epoch })).toMatchObject({ ok: true, resumed: true, replay: appended });
  });

  it('no position, a wrong epoch, or a last_seq in the future: resumed false, nothing replayed', async () => {
    const engine = memoryEngine();
    await appendN(engine, 'u1', 5);
    const { epoch } = await engine.head('u1');
    for (const resume of [{}, { epoch }, { lastSeq: 2 }, { lastSeq: 2, epoch: `${epoch}-other` }, { lastSeq: 6, epoch }, { lastSeq: 99, epoch }]) {
      expect(await setupWith(engine, resume), JSON.stringify(resume)).toEqual({
        ok: true,
        head: { epoch, lastSeq: 5 },
        resumed: false,
        replay: [],
      });
    }
  });

  it('an evicted range: resumed false; a range still retained: resumed true', async () => {
    const engine = memoryEngine({ retentionEvents: 3 });
    const appended = await appendN(engine, 'u1', 10);
    const { epoch } = await engine.head('u1');
    for (const lastSeq of [0, 2, 6]) {
      expect(await setupWith(engine, { lastSeq, epoch }), `last_seq ${lastSeq}`).toEqual({
        ok: true,
        head: { epoch, lastSeq: 10 },
        resumed: false,
        replay: [],
      });
    }
    expect(await setupWith(engine, { lastSeq: 7, epoch })).toEqual({
      ok: true,
      head: { epoch, lastSeq: 10 },
      resumed: true,
      replay: appended.slice(7),
    });
  });

  it('entries appended during a setup reach the member live, after the head it was given', async () => {
    const engine = memoryEngine();
    await appendN(engine, 'u1', 2);
    const registry = registryOf(engine);
    const coordinator = registry.getOrCreate('u1');
    const member = new FakeMember('a');
    const setup = coordinator.setup(member, coordinator.admit(member), {});
    const appendedDuring = appendN(engine, 'u1', 3);
    const result = await setup;
    await appendedDuring;
    await appendN(engine, 'u1', 1);
    if (!result.ok) throw new Error('setup failed');
    // Together, what the head covers and what was delivered live is the whole log, without gap.
    expect(member.seqs).toEqual(range(result.head.lastSeq + 1, 6));
  });
});

/** Wraps an engine so that the live notifications of the listed seqs are lost. */
function lossyEngine(inner: EventEngine, dropped: ReadonlySet<number>) {
  return new InstrumentedEngine(inner, { deliverLive: (_user, entry) => !dropped.has(entry.seq) });
}

describe('UserCoordinator: gap repair', () => {
  it('reads the entries whose notifications were lost, so members get contiguous seqs', async () => {
    const memory = memoryEngine();
    // Not 12: nothing after it would reveal its loss.
    const engine = lossyEngine(memory, new Set([3, 4, 7, 10, 11]));
    const fanned: number[] = [];
    const registry = registryOf(engine, { onFanout: (e) => fanned.push(e.seq) });
    const a = new FakeMember('a');
    const b = new FakeMember('b');
    await join(registry, 'u1', a);
    await join(registry, 'u1', b);
    await appendN(engine, 'u1', 6);
    for (let i = 0; i < 6; i++) await engine.append('u1', [thinking(i)]);
    for (let i = 0; i < 10 && a.delivered.length < 12; i++) await nextTurn();
    const log = await memory.read('u1', 1, 12);
    expect(a.seqs).toEqual(range(1, 12));
    expect(a.delivered.map((e) => e.json)).toEqual(log.map((e) => e.json));
    expect(b.seqs).toEqual(range(1, 12));
    expect(fanned).toEqual(range(1, 12));
    expect(a.resyncs + b.resyncs).toBe(0);
    expect(engine.countOf('read', 'u1')).toBeGreaterThan(0);
  });

  it('delivers every seq exactly once, in order, whatever notifications are lost (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.boolean(), { minLength: 60, maxLength: 60 }),
        async (batches, drops) => {
          const memory = memoryEngine();
          const total = batches.reduce((s, n) => s + n, 0);
          // The last notification is never lost: nothing after it would reveal the gap.
          const dropped = new Set(range(1, total - 1).filter((seq) => drops[seq - 1]));
          const engine = lossyEngine(memory, dropped);
          const registry = registryOf(engine);
          const member = new FakeMember('a');
          const { coordinator, generation } = await join(registry, 'u1', member);
          await Promise.all(batches.map((n) => appendN(engine, 'u1', n)));
          for (let i = 0; i < 50 && member.delivered.length < total; i++) await nextTurn();
          expect(member.seqs).toEqual(range(1, total));
          expect(member.resyncs).toBe(0);
          await coordinator.teardown('a', generation);
          expect(registry.size).toBe(0);
          expect(engine.activeSubscriptions.get('u1')).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('an unrepairable gap (entries evicted) makes every member resync, and the coordinator goes on', async () => {
    const memory = memoryEngine({ retentionEvents: 3 });
    const engine = lossyEngine(memory, new Set(range(1, 8)));
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const b = new FakeMember('b');
    await join(registry, 'u1', a);
    const { coordinator } = await join(registry, 'u1', b);
    await appendN(engine, 'u1', 10); // only 8..10 retained; notifications 1..8 lost
    for (let i = 0; i < 10 && a.resyncs === 0; i++) await nextTurn();
    expect(a.resyncs).toBe(1);
    expect(b.resyncs).toBe(1);
    // Nothing out of order or with a hole was ever delivered.
    expect(a.delivered).toEqual([]);
    expect(b.delivered).toEqual([]);

    // Not stuck: a member set up afterwards gets every later entry, contiguous.
    const c = new FakeMember('c');
    const { result } = await join(registry, 'u1', c);
    expect(result.head.lastSeq).toBe(10);
    await appendN(engine, 'u1', 2);
    expect(c.seqs).toEqual([11, 12]);
    expect(coordinator.connectionCount).toBe(3);
  });

  it('a failing read during repair is reported as a fault and makes members resync', async () => {
    const memory = memoryEngine();
    const faults: string[] = [];
    const engine = new InstrumentedEngine(memory, {
      deliverLive: (_user, entry) => entry.seq !== 2,
      before: (op) => {
        if (op === 'read') throw new Error('engine down');
      },
    });
    const registry = registryOf(engine, { onFault: (_e, context) => faults.push(context) });
    const a = new FakeMember('a');
    await join(registry, 'u1', a);
    await appendN(engine, 'u1', 3);
    for (let i = 0; i < 10 && a.resyncs === 0; i++) await nextTurn();
    expect(a.seqs).toEqual([1]);
    expect(a.resyncs).toBe(1);
    expect(faults).toEqual(['gap repair']);
  });
});

describe('UserCoordinator: engine failures during setup', () => {
  function failingHead(failOn: ReadonlySet<number>) {
    let heads = 0;
    return new InstrumentedEngine(memoryEngine(), {
      before: (op) => {
        if (op === 'head' && failOn.has(++heads)) throw new Error(`head ${heads} failed`);
      },
    });
  }

  it('a head() that rejects while subscribing rejects the setup, unsubscribes, and a later setup works', async () => {
    const engine = failingHead(new Set([1]));
    const registry = registryOf(engine);
    const coordinator = registry.getOrCreate('u1');
    const a = new FakeMember('a');
    const genA = coordinator.admit(a);
    await expect(coordinator.setup(a, genA, {})).rejects.toThrow('head 1 failed');
    expect(engine.activeSubscriptions.get('u1')).toBe(0);
    expect(coordinator.connectionCount).toBe(0);

    const b = new FakeMember('b');
    const genB = coordinator.admit(b);
    const setupB = await coordinator.setup(b, genB, {});
    expect(setupB).toMatchObject({ ok: true, resumed: false, head: { lastSeq: 0 } });
    expect(engine.activeSubscriptions.get('u1')).toBe(1);
    await appendN(engine, 'u1', 2);
    expect(b.seqs).toEqual([1, 2]);
    expect(a.delivered).toEqual([]);

    expect(await coordinator.teardown('a', genA)).toEqual({ ok: true });
    expect(await coordinator.teardown('b', genB)).toEqual({ ok: true });
    expect(registry.size).toBe(0);
    expect(engine.activeSubscriptions.get('u1')).toBe(0);
  });

  it('a head() that rejects in a later setup rejects only that setup; the coordinator keeps serving', async () => {
    const engine = failingHead(new Set([3]));
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const { coordinator, generation: genA } = await join(registry, 'u1', a); // heads 1 and 2
    const b = new FakeMember('b');
    const genB = coordinator.admit(b);
    await expect(coordinator.setup(b, genB, {})).rejects.toThrow('head 3 failed');
    // The failed connection is torn down as a connection would be after its setup failed.
    expect(await coordinator.teardown('b', genB)).toEqual({ ok: true });
    const c = new FakeMember('c');
    const { result, generation: genC } = await join(registry, 'u1', c);
    expect(result.head.lastSeq).toBe(0);
    await appendN(engine, 'u1', 1);
    expect(a.seqs).toEqual([1]);
    expect(c.seqs).toEqual([1]);
    expect(b.delivered).toEqual([]);
    expect(engine.countOf('subscribe', 'u1')).toBe(1);
    expect(await coordinator.teardown('a', genA)).toEqual({ ok: true });
    expect(await coordinator.teardown('c', genC)).toEqual({ ok: true });
    expect(registry.size).toBe(0);
  });

  it('a subscribe() that rejects rejects the setup and the next setup subscribes again', async () => {
    let failNext = true;
    const engine = new InstrumentedEngine(memoryEngine(), {
      before: (op) => {
        if (op === 'subscribe' && failNext) {
          failNext = false;
          throw new Error('subscribe failed');
        }
      },
    });
    const registry = registryOf(engine);
    const coordinator = registry.getOrCreate('u1');
    const a = new FakeMember('a');
    const b = new FakeMember('b');
    const genA = coordinator.admit(a);
    const genB = coordinator.admit(b);
    const [ra, rb] = await Promise.allSettled([coordinator.setup(a, genA, {}), coordinator.setup(b, genB, {})]);
    expect(ra.status).toBe('rejected');
    expect(rb).toMatchObject({ status: 'fulfilled', value: { ok: true } });
    await appendN(engine, 'u1', 1);
    expect(b.seqs).toEqual([1]);
    expect(engine.activeSubscriptions.get('u1')).toBe(1);
  });
});

/**
 * An engine whose logs can all be lost at once, as Redis loses them on FLUSHALL: later calls see
 * fresh logs in a new epoch while subscriptions live on (a pub/sub connection survives a flush).
 * Head calls can be held before they read (request) or after (reply), to order them against a
 * loss and against live entries.
 */
class LosableEngine implements EventEngine {
  #inner = memoryEngine();
  readonly #listeners = new Map<string, Set<LiveListener>>();
  readonly #gapListeners = new Map<string, Set<GapListener>>();
  /** Drops live notifications, as a pub/sub connection that is down does. */
  muted = false;
  #hold: { readonly at: 'request' | 'reply'; readonly gate: Deferred; held: number } | null = null;

  /** Heads held so far by the current hold. */
  get headsHeld(): number {
    return this.#hold?.held ?? 0;
  }

  lose(): void {
    this.#inner = memoryEngine();
    for (const userId of this.#listeners.keys()) this.#relay(userId);
  }

  /** Tells the subscribers that notifications may have been lost (a pub/sub reconnect). */
  signalPossibleGap(userId: string): void {
    for (const listener of this.#gapListeners.get(userId) ?? []) listener();
  }

  /** Hands `entry` to the subscribers as a notification still in flight from before a loss would be. */
  deliverLate(userId: string, entry: LogEntry): void {
    for (const listener of this.#listeners.get(userId) ?? []) listener(entry);
  }

  /** Holds every head call at `at` until the returned function is called. */
  holdHeads(at: 'request' | 'reply'): () => void {
    const hold = { at, gate: deferred(), held: 0 };
    this.#hold = hold;
    return () => {
      if (this.#hold === hold) this.#hold = null;
      hold.gate.resolve();
    };
  }

  async head(userId: string): Promise<LogHead> {
    const hold = this.#hold;
    if (hold) hold.held++;
    if (hold?.at === 'request') await hold.gate.promise;
    const head = await this.#inner.head(userId);
    if (hold?.at === 'reply') await hold.gate.promise;
    return head;
  }

  async subscribe(userId: string, listener: LiveListener, onPossibleGap?: GapListener): Promise<Subscription> {
    if (onPossibleGap) {
      const gapListeners = this.#gapListeners.get(userId) ?? new Set();
      this.#gapListeners.set(userId, gapListeners.add(onPossibleGap));
    }
    let listeners = this.#listeners.get(userId);
    if (!listeners) {
      listeners = new Set();
      this.#listeners.set(userId, listeners);
      this.#relay(userId);
    }
    listeners.add(listener);
    return {
      unsubscribe: async () => {
        listeners.delete(listener);
        if (onPossibleGap) this.#gapListeners.get(userId)?.delete(onPossibleGap);
      },
    };
  }

  #relay(userId: string): void {
    const inner = this.#inner;
    void inner.subscribe(userId, (entry) => {
      if (inner === this.#inner && !this.muted) this.deliverLate(userId, entry);
    });
  }

  ready = () => this.#inner.ready();
  append = (userId: string, events: readonly EventBody[]) => this.#inner.append(userId, events);
  read = (userId: string, fromSeq: number, toSeq: number) => this.#inner.read(userId, fromSeq, toSeq);
  close = async () => {};
}

async function turnsUntil(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 50 && !done(); i++) await nextTurn();
  if (!done()) throw new Error(`never happened: ${what}`);
}

describe('UserCoordinator: log loss', () => {
  it('a member set up after the log was lost receives the new history; only members of the lost one resync', async () => {
    const engine = new LosableEngine();
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const { result: ra } = await join(registry, 'u1', a);
    await appendN(engine, 'u1', 2);
    expect(a.seqs).toEqual([1, 2]);

    engine.lose();
    const b = new FakeMember('b');
    const { result: rb } = await join(registry, 'u1', b);
    expect(rb.resumed).toBe(false);
    expect(rb.head.lastSeq).toBe(0);
    expect(rb.head.epoch).not.toBe(ra.head.epoch);
    expect(a.resyncs).toBe(1);

    await appendN(engine, 'u1', 3);
    expect(b.seqs).toEqual([1, 2, 3]);
    expect(b.delivered.every((e) => e.epoch === rb.head.epoch)).toBe(true);
    expect(b.resyncs).toBe(0);
    // The member of the lost history got nothing of the new one and resynced once.
    expect(a.seqs).toEqual([1, 2]);
    expect(a.resyncs).toBe(1);
  });

  it('a live entry of a new epoch resyncs the members of the old one; a member set up then gets what follows', async () => {
    const engine = new LosableEngine();
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    await join(registry, 'u1', a);
    await appendN(engine, 'u1', 1);
    engine.lose();
    await appendN(engine, 'u1', 1);
    expect(a.resyncs).toBe(1);
    expect(a.seqs).toEqual([1]);

    const b = new FakeMember('b');
    const { result } = await join(registry, 'u1', b);
    expect(result.head.lastSeq).toBe(1);
    await appendN(engine, 'u1', 2);
    expect(b.seqs).toEqual([2, 3]);
    expect(b.resyncs).toBe(0);
    expect(a.resyncs).toBe(1);
  });

  it('a loss found by a catch-up (notifications lost) resyncs the old members; a new member gets what follows', async () => {
    const engine = new LosableEngine();
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    await join(registry, 'u1', a);
    await appendN(engine, 'u1', 1);
    engine.lose();
    engine.muted = true;
    await appendN(engine, 'u1', 2);
    engine.muted = false;
    expect(a.resyncs).toBe(0);
    engine.signalPossibleGap('u1');
    await turnsUntil(() => a.resyncs > 0, 'the catch-up');
    expect(a.resyncs).toBe(1);
    expect(a.seqs).toEqual([1]);

    const b = new FakeMember('b');
    const { result } = await join(registry, 'u1', b);
    expect(result.head.lastSeq).toBe(2);
    await appendN(engine, 'u1', 1);
    expect(b.seqs).toEqual([3]);
    expect(b.resyncs).toBe(0);
    expect(a.resyncs).toBe(1);
  });

  it('late notifications of the lost history are dropped, not taken for another loss', async () => {
    const engine = new LosableEngine();
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    await join(registry, 'u1', a);
    const old = await appendN(engine, 'u1', 2);
    engine.lose();
    const b = new FakeMember('b');
    await join(registry, 'u1', b);
    engine.deliverLate('u1', { ...old[1]!, seq: 3 });
    engine.deliverLate('u1', old[0]!);
    await appendN(engine, 'u1', 2);
    expect(b.seqs).toEqual([1, 2]);
    expect(b.resyncs).toBe(0);
    expect(a.seqs).toEqual([1, 2]);
    expect(a.resyncs).toBe(1);
  });

  it('a setup whose head reply from before the loss arrives after entries of the new epoch reads the head again and keeps its entries', async () => {
    const engine = new LosableEngine();
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const { coordinator, result: ra } = await join(registry, 'u1', a);
    await appendN(engine, 'u1', 2);

    const release = engine.holdHeads('reply');
    const b = new FakeMember('b');
    const setupB = coordinator.setup(b, coordinator.admit(b), {});
    await turnsUntil(() => engine.headsHeld === 1, "b's head read");
    engine.lose();
    await appendN(engine, 'u1', 2); // entries 1 and 2 of the new history, live, while b's stale head is held
    expect(a.resyncs).toBe(1);
    release();
    const rb = await setupB;
    expect(rb).toMatchObject({ ok: true, resumed: false, head: { lastSeq: 2 } });
    expect((rb as Extract<SetupResult, { ok: true }>).head.epoch).not.toBe(ra.head.epoch);
    await appendN(engine, 'u1', 1);
    // 1 and 2 reached it during its setup (a connection drops those up to its head), 3 after.
    expect(b.seqs).toEqual([1, 2, 3]);
    expect(b.resyncs).toBe(0);
    expect(a.resyncs).toBe(1);
  });

  it('a member handed entries of the lost history during its setup resyncs; the next one gets the new history', async () => {
    const engine = new LosableEngine();
    const registry = registryOf(engine);
    const a = new FakeMember('a');
    const { coordinator } = await join(registry, 'u1', a);
    await appendN(engine, 'u1', 1);

    const release = engine.holdHeads('request');
    const b = new FakeMember('b');
    const setupB = coordinator.setup(b, coordinator.admit(b), {});
    await turnsUntil(() => engine.headsHeld === 1, "b's head request");
    await appendN(engine, 'u1', 1); // old history: reaches b, whose position is not known yet
    expect(b.seqs).toEqual([2]);
    engine.lose();
    release();
    expect(await setupB).toMatchObject({ ok: true, head: { lastSeq: 0 } });
    expect(b.resyncs).toBe(1);
    expect(a.resyncs).toBe(1);

    const c = new FakeMember('c');
    await join(registry, 'u1', c);
    await appendN(engine, 'u1', 2);
    expect(c.seqs).toEqual([1, 2]);
    expect(c.resyncs).toBe(0);
  });
});

describe('UserCoordinator: log loss under any interleaving (property)', () => {
  it('a member set up in the new epoch gets exactly the new history after its head; the member of the lost one resyncs once and gets none of it', async () => {
    const setUpIn = { oldEpoch: 0, newEpoch: 0, handedOldEntries: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        async (s, batches, oldAppendRacing) => {
          const losable = new LosableEngine();
          const engine = new ScheduledEngine(losable);
          const registry = registryOf(engine);
          const a = new FakeMember('a');
          const { coordinator, result: ra } = await join(registry, 'u1', a);
          await appendN(engine, 'u1', 2);
          const oldEpoch = ra.head.epoch;

          engine.use(s);
          const b = new FakeMember('b');
          const setupB = coordinator.setup(b, coordinator.admit(b), {});
          // An append racing the loss: it lands in the old history or the new, and its
          // notification may arrive late.
          const racing = oldAppendRacing ? appendN(engine, 'u1', 1) : Promise.resolve([]);
          const lost = s.schedule(Promise.resolve(), 'lose the log').then(() => losable.lose());
          const appended = lost.then(async () => {
            for (const n of batches) await appendN(engine, 'u1', n);
          });
          const [rb] = await s.waitFor(Promise.all([setupB, appended, racing]));
          // Replies are scheduled once their request ran: drain until nothing is left.
          for (let i = 0; i < 100 && (i === 0 || s.count() > 0); i++) {
            await s.waitAll();
            await nextTurn();
          }
          expect(s.count()).toBe(0);
          engine.use(null);

          expect(rb.ok).toBe(true);
          const { head } = rb as Extract<SetupResult, { ok: true }>;
          const newHead = await losable.head('u1');
          // The member of the lost history: resynced once, given nothing of the new one.
          expect(a.resyncs).toBe(1);
          expect(a.delivered.every((e) => e.epoch === oldEpoch)).toBe(true);
          if (head.epoch === oldEpoch) {
            setUpIn.oldEpoch++;
            // b was set up before the loss: it resyncs like a.
            expect(b.resyncs).toBe(1);
            expect(b.delivered.every((e) => e.epoch === oldEpoch)).toBe(true);
            return;
          }
          setUpIn.newEpoch++;
          expect(head.epoch).toBe(newHead.epoch);
          if (b.delivered.some((e) => e.epoch === oldEpoch)) {
            // Handed an entry of the lost history before its position was known: it must resync.
            setUpIn.handedOldEntries++;
            expect(b.resyncs).toBe(1);
            return;
          }
          // Set up in the new history: everything after its head, in order, and no resync.
          expect(b.resyncs).toBe(0);
          expect(b.delivered.every((e) => e.epoch === head.epoch)).toBe(true);
          expect(b.seqs.filter((seq) => seq > head.lastSeq)).toEqual(range(head.lastSeq + 1, newHead.lastSeq));
        },
      ),
      { numRuns: 200 },
    );
    // Both sides of the race were explored.
    expect(setUpIn.oldEpoch).toBeGreaterThan(0);
    expect(setUpIn.newEpoch).toBeGreaterThan(0);
  });
});
