/**
 * The EventEngine contract, run against every engine (as centrifuge runs one suite over its
 * memory and Redis engines). Engine-specific behaviour (Redis outages, notifications, the
 * memory byte bound) is tested beside each engine.
 */
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventBody, LogEntry } from '@agentwire/protocol';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { RunEndedError, type EventEngine } from '../../src/engine/types.js';
import { fcParams } from '../helpers/fastCheck.js';
import { liveCollector } from '../helpers/liveCollector.js';
import { machineRedisBackend } from '../helpers/machineRedis.js';
import { RedisClusterServer } from '../helpers/redisCluster.js';

interface EngineUnderTest {
  readonly engine: EventEngine;
  /** Another node on the same logs (shared engines only). */
  readonly peer?: () => Promise<EngineUnderTest>;
  close(): Promise<void>;
}

/** Makes an engine that keeps `retentionEvents` entries per user. */
type EngineFactory = (retentionEvents?: number) => Promise<EngineUnderTest>;

interface EngineKind {
  readonly make: EngineFactory;
  /**
   * The engine is shared by several nodes and so enforces `AppendFence` (types.ts): a node-local
   * engine ignores fences, since its one run manager never appends after a run's terminal event.
   */
  readonly shared: boolean;
}

/** A 3-master Redis Cluster of this file's own: the engine keeps each user's keys on one slot. */
let cluster: RedisClusterServer | undefined;
beforeAll(async () => {
  cluster = await RedisClusterServer.start();
});
afterAll(async () => {
  await cluster?.stop();
});

/** The Redis engine on the machine's Redis, or on the file's cluster. */
function redisEngine(onCluster: boolean): EngineFactory {
  const node = async (options: { retentionEvents?: number; keyPrefix?: string }): Promise<EngineUnderTest> => {
    const backend = await machineRedisBackend(options, onCluster ? cluster : undefined);
    const keyPrefix = backend.connection.keys.prefix;
    return {
      engine: backend.engine,
      peer: () => node({ ...options, keyPrefix }),
      close: async () => {
        await backend.engine.close();
        await backend.close();
      },
    };
  };
  return (retentionEvents) => node(retentionEvents !== undefined ? { retentionEvents } : {});
}

const implementations: [string, EngineKind][] = [
  [
    'MemoryEngine',
    {
      shared: false,
      make: async (retentionEvents) => {
        const engine = new MemoryEngine(retentionEvents !== undefined ? { retentionEvents } : {});
        return { engine, close: () => engine.close() };
      },
    },
  ],
  ['RedisEngine', { shared: true, make: redisEngine(false) }],
  ['RedisEngine on a Redis Cluster', { shared: true, make: redisEngine(true) }],
];

function thinking(text: string, run = 'r1'): EventBody {
  return { type: 'agent_thinking', text, run_id: run, thread_id: 't1', ts: new Date(0).toISOString() };
}

describe.each(implementations)('EventEngine contract: %s', (_name, { make, shared }) => {
  const opened: EngineUnderTest[] = [];
  afterEach(async () => {
    for (const each of opened.splice(0)) await each.close();
  });
  async function engine(retentionEvents?: number): Promise<EventEngine> {
    const made = await make(retentionEvents);
    opened.push(made);
    await made.engine.ready();
    return made.engine;
  }
  async function twoNodes(): Promise<[EventEngine, EventEngine]> {
    const first = await make();
    opened.push(first);
    const second = await first.peer!();
    opened.push(second);
    await Promise.all([first.engine.ready(), second.engine.ready()]);
    return [first.engine, second.engine];
  }

  it('assigns contiguous seqs per user, writes them into the JSON, and reads ranges back', async () => {
    const e = await engine();
    expect(e.available ?? true).toBe(true);
    const head0 = await e.head('alice');
    expect(head0.lastSeq).toBe(0);
    const appended = await e.append('alice', [thinking('a "quoted" text'), thinking('b')]);
    expect(appended.map((x) => x.seq)).toEqual([1, 2]);
    expect(JSON.parse(appended[0]!.json)).toMatchObject({ type: 'agent_thinking', seq: 1, text: 'a "quoted" text' });
    expect((await e.append('bob', [thinking('other user')]))[0]!.seq).toBe(1);
    const head = await e.head('alice');
    expect(head).toEqual({ epoch: head0.epoch, lastSeq: 2 });
    const read = await e.read('alice', 1, 2);
    expect(read.map((x) => [x.seq, x.type, x.json])).toEqual(appended.map((x) => [x.seq, x.type, x.json]));
    expect(await e.read('alice', 2, 1)).toEqual([]);
  });

  it('appends all of a batch or nothing: an event JSON cannot hold leaves no seq, entry or delivery behind', async () => {
    const e = await engine();
    const live = liveCollector();
    await e.subscribe('erin', live.listener);
    await e.append('erin', [thinking('1')]);
    const unencodable = { type: 'tool_executing', call_id: 'c', tool: 't', args: { n: 1n }, run_id: 'r1', thread_id: 't1', ts: new Date(0).toISOString() };
    await expect(e.append('erin', [thinking('2'), unencodable as unknown as EventBody])).rejects.toThrow();
    expect((await e.head('erin')).lastSeq).toBe(1);
    await e.append('erin', [thinking('3')]);
    expect((await e.read('erin', 1, 10)).map((x) => [x.seq, JSON.parse(x.json).text])).toEqual([
      [1, '1'],
      [2, '3'],
    ]);
    await live.until(2);
    expect(live.entries.map((x) => x.seq)).toEqual([1, 2]);
  });

  it('reads any sub-range, in seq order, and nothing past the head', async () => {
    const e = await engine();
    const appended = await e.append('dora', [thinking('1'), thinking('2'), thinking('3'), thinking('4'), thinking('5')]);
    expect(appended.every((x) => x.epoch === appended[0]!.epoch)).toBe(true);
    expect((await e.head('dora')).epoch).toBe(appended[0]!.epoch);
    expect((await e.read('dora', 2, 4)).map((x) => x.seq)).toEqual([2, 3, 4]);
    expect((await e.read('dora', 4, 100)).map((x) => x.seq)).toEqual([4, 5]);
    expect((await e.read('dora', 3, 3)).map((x) => JSON.parse(x.json).text)).toEqual(['3']);
    expect(await e.read('dora', 6, 10)).toEqual([]);
    expect(await e.read('nobody', 1, 10)).toEqual([]);
    expect((await e.head('nobody')).lastSeq).toBe(0);
  });

  it('delivers live entries to subscribers of that user only, in order', async () => {
    const e = await engine();
    const alice = liveCollector();
    const bob = liveCollector();
    const subA = await e.subscribe('alice', alice.listener);
    const subB = await e.subscribe('bob', bob.listener);
    await e.append('alice', [thinking('1'), thinking('2')]);
    await e.append('bob', [thinking('x')]);
    await e.append('alice', [thinking('3')]);
    await alice.until(3);
    await bob.until(1);
    expect(alice.entries.map((x) => x.seq)).toEqual([1, 2, 3]);
    expect(bob.entries.map((x) => JSON.parse(x.json).text)).toEqual(['x']);
    const head = await e.head('alice');
    expect(alice.entries.every((x) => x.epoch === head.epoch)).toBe(true);
    await subA.unsubscribe();
    await subB.unsubscribe();
  });

  it('stops delivering to a subscription once it is unsubscribed', async () => {
    const e = await engine();
    const first = liveCollector();
    const sub = await e.subscribe('gil', first.listener);
    await e.append('gil', [thinking('before')]);
    await first.until(1);
    await sub.unsubscribe();
    // A second subscriber sees the next append: had the first still been subscribed, it would have been told too.
    const second = liveCollector();
    const other = await e.subscribe('gil', second.listener);
    await e.append('gil', [thinking('after')]);
    await second.until(1);
    expect(second.entries.map((x) => x.seq)).toEqual([2]);
    expect(first.entries.map((x) => x.seq)).toEqual([1]);
    await other.unsubscribe();
  });

  if (shared)
    it('fences appends of an ended run', async () => {
      const e = await engine();
      await e.append('erin', [thinking('step', 'r9')], { runId: 'r9', terminal: false });
      const terminal: EventBody = { type: 'agent_error', code: 'run_lost', message: 'x', run_id: 'r9', thread_id: 't1', ts: new Date(0).toISOString() };
      await e.append('erin', [terminal], { runId: 'r9', terminal: true });
      await expect(e.append('erin', [thinking('late', 'r9')], { runId: 'r9', terminal: false })).rejects.toBeInstanceOf(RunEndedError);
      await expect(e.append('erin', [terminal], { runId: 'r9', terminal: true })).rejects.toBeInstanceOf(RunEndedError);
      expect((await e.head('erin')).lastSeq).toBe(2);
      // Another run of the user, and unfenced appends, are not affected.
      expect((await e.append('erin', [thinking('next', 'r10')], { runId: 'r10', terminal: false }))[0]!.seq).toBe(3);
      expect((await e.append('erin', [thinking('unfenced')]))[0]!.seq).toBe(4);
    });

  if (shared)
    it("delivers two nodes' appends, concurrent or not, to both nodes' subscribers once each, in seq order (property)", async () => {
      const [a, b] = await twoNodes();
      const batch = fc.record({
        onA: fc.boolean(),
        texts: fc.array(fc.string({ maxLength: 12 }), { minLength: 1, maxLength: 3 }),
        // Sent only once every earlier append was answered; otherwise in the same tick as the one before.
        afterReplies: fc.boolean(),
      });
      let round = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(batch, { minLength: 1, maxLength: 12 }), async (batches) => {
          const user = `both-${++round}`;
          const onA = liveCollector();
          const onB = liveCollector();
          const subscriptions = [await a.subscribe(user, onA.listener), await b.subscribe(user, onB.listener)];
          const appended: LogEntry[] = [];
          const append = async (node: EventEngine, texts: string[]) =>
            appended.push(
              ...(await node.append(
                user,
                texts.map((t) => thinking(t)),
              )),
            );
          // The first notification tells each node where its subscribers stand.
          await append(a, ['first']);
          await Promise.all([onA.until(1), onB.until(1)]);
          let inFlight: Promise<unknown>[] = [];
          for (const { onA: fromA, texts, afterReplies } of batches) {
            if (afterReplies) {
              await Promise.all(inFlight);
              inFlight = [];
            }
            inFlight.push(append(fromA ? a : b, texts));
          }
          await Promise.all(inFlight);
          // Each node's last append is notified to the other after every earlier one (a late
          // duplicate of an echo would arrive before it), and handed over only after them.
          await append(a, ['last from a']);
          await append(b, ['last from b']);
          const total = appended.length;
          await Promise.all([onA.until(total), onB.until(total)]);
          const bySeq = appended.sort((x, y) => x.seq - y.seq).map(({ seq, type, json }) => ({ seq, type, json }));
          expect(bySeq.map((x) => x.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
          for (const live of [onA, onB]) expect(live.entries.map(({ seq, type, json }) => ({ seq, type, json }))).toEqual(bySeq);
          for (const subscription of subscriptions) await subscription.unsubscribe();
        }),
        fcParams(30, 20_000),
      );
    });

  it('keeps the newest entries up to the retention count, and seqs and epoch go on', async () => {
    const e = await engine(10);
    const before = await e.head('frank');
    for (let i = 0; i < 30; i++) await e.append('frank', [thinking(`m${i}`)]);
    const retained = await e.read('frank', 1, 30);
    expect(retained.map((x) => x.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 21 + i));
    expect(retained.map((x) => JSON.parse(x.json).text)).toEqual(Array.from({ length: 10 }, (_, i) => `m${20 + i}`));
    expect(await e.head('frank')).toEqual({ epoch: before.epoch, lastSeq: 30 });
  });
});
