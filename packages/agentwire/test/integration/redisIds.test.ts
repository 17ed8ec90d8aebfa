import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '@agentwire/protocol';
import { createRedisBackend, type RedisEngine, type RedisRunStore } from '../../src/redis/index.js';
import { bucketOf, decodeId, encodeId } from '../../src/redis/keys.js';
import type { EventBody, LogEntry } from '@agentwire/protocol';
import type { Agent } from '../../src/runs/agent.js';
import { RunManager, type RunOutcome } from '../../src/runs/runManager.js';
import type { RunRecord } from '../../src/runs/runStore.js';
import { fcParams } from '../helpers/fastCheck.js';
import { userKeys } from '../helpers/redisBackend.js';
import { RedisServer } from '../helpers/redisServer.js';
import { Waiters } from '../helpers/waitFor.js';

/**
 * The Redis schema holds for any id the contract allows (PROTOCOL.md sections 2 and 6): a `sub` of
 * 1..1024 characters, message ids of 1..128, anything in them. Users with adversarial ids (made
 * of separators, escapes, this schema's own encodings, lone surrogate halves, or each other's ids
 * with a run id appended) never see or affect each other's runs, claims, cancels or events, and a
 * dead node's runs are recovered whatever their user's id.
 */

let redis: RedisServer;
let admin: Redis;
beforeAll(async () => {
  redis = await RedisServer.start();
  admin = redis.client();
});
afterAll(async () => {
  admin?.disconnect();
  await redis?.stop();
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const noop = () => {};
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const LEASE_MS = 1000;

/** Pieces of hostile ids: separators, JSON and key syntax, this schema's escapes, lone surrogates. */
const PIECES = [
  '\n',
  ':',
  '{',
  '}',
  '%',
  '%25',
  '%7B',
  '%7D',
  '%uD800',
  '\uD800',
  '\uDC00',
  '\uFFFD',
  '"',
  '\\',
  '","',
  '"]',
  '[',
  '}:run:',
  'run_a1',
  'é',
  '😀',
  '\u0000',
  ' ',
  'a',
];

function hostileId(maxLength: number): fc.Arbitrary<string> {
  return fc
    .oneof(
      fc.array(fc.constantFrom(...PIECES), { minLength: 1, maxLength: 12 }).map((pieces) => pieces.join('')),
      fc.string({ unit: 'binary', minLength: 1, maxLength: Math.min(maxLength, 64) }),
      fc.string({ unit: 'binary', minLength: maxLength, maxLength }),
    )
    .map((id) => id.slice(0, maxLength))
    .filter((id) => id.length > 0);
}

/** Another user's id made to collide with `user` under a careless schema. */
function rivalOf(user: string): fc.Arbitrary<string> {
  return fc
    .oneof(
      { arbitrary: hostileId(1024), weight: 1 },
      {
        arbitrary: fc.constantFrom(
          `${user}\nrun_a1`,
          `${user}\nrun_a2`,
          encodeId(user),
          decodeId(user),
          // What UTF-8 makes of it (lone surrogate halves become U+FFFD).
          Buffer.from(user).toString(),
          `${user}}`,
          `${user}:run:`,
          JSON.stringify(user),
          `${JSON.stringify(user)},"run_a1"`,
        ),
        weight: 3,
      },
    )
    .map((id) => id.slice(0, 1024))
    .filter((id) => id.length > 0 && id !== user);
}

interface Side {
  readonly user: string;
  readonly thread: string;
  readonly message: string;
  readonly text: string;
}

const scenario = hostileId(1024).chain((userA) =>
  fc.record({
    a: fc.record({ user: fc.constant(userA), thread: hostileId(128), message: hostileId(128), text: hostileId(200) }),
    b: fc.record({ user: rivalOf(userA), thread: hostileId(128), message: hostileId(128), text: hostileId(200) }),
    // The rival may reuse A's thread and message ids: they are per user.
    sameIds: fc.boolean(),
  }),
);

function stamp(runId: string, threadId: string) {
  return { run_id: runId, thread_id: threadId, ts: new Date(0).toISOString() };
}

/** A user's live entries, as one node's engine delivers them. */
async function watch(engine: RedisEngine, userId: string) {
  const entries: LogEntry[] = [];
  const waiters = new Waiters(() => `entries of ${JSON.stringify(userId)}: ${entries.map((e) => e.json).join(',')}`);
  const subscription = await engine.subscribe(userId, (entry) => {
    entries.push(entry);
    waiters.notify();
  });
  return {
    entries,
    runIds: () => entries.map((e) => JSON.parse(e.json).run_id as string),
    until: (count: number) => waiters.until(() => entries.length >= count, 5000, `${count} entries`),
    unsubscribe: () => subscription.unsubscribe(),
  };
}

async function node(nodeId: string, now: () => number = Date.now, leaseMs = LEASE_MS) {
  const backend = createRedisBackend({ url: redis.url, keyPrefix: 'ids', nodeId, leaseMs, now, onError: noop });
  await backend.engine.ready();
  cleanups.push(() => backend.close());
  return { engine: backend.engine, store: backend.runStore, keys: backend.connection.keys };
}

describe('Redis keys', () => {
  it('encodeId is one-to-one and reversible, and never yields a brace or a lone surrogate', () => {
    fc.assert(
      fc.property(hostileId(1024), hostileId(1024), (x, y) => {
        expect(decodeId(encodeId(x))).toBe(x);
        expect(encodeId(x)).not.toMatch(LONE_SURROGATE);
        expect(encodeId(x)).not.toMatch(/[{}]/);
        if (x !== y) expect(encodeId(x)).not.toBe(encodeId(y));
      }),
      fcParams(500, 5000),
    );
  });

  it("no two users share a key; a key has its user's bucket as hash tag and then names its user in braces", () => {
    fc.assert(
      fc.property(
        hostileId(1024).chain((x) => fc.tuple(fc.constant(x), rivalOf(x))),
        hostileId(128),
        ([x, y], id) => {
          const [kx, ky] = [userKeys('aw', x), userKeys('aw', y)];
          const all = (k: typeof kx) => [k.meta, k.log, k.live, k.connections, k.activeRuns, k.claim(id), k.thread(id), k.run('run_1')];
          const ofY = new Set(all(ky).map((key) => Buffer.from(key).toString('hex')));
          for (const key of all(kx)) {
            expect(ofY.has(Buffer.from(key).toString('hex'))).toBe(false);
            // Redis Cluster hashes the first {...}: the bucket, shared with the bucket's lease set.
            expect(key.slice(key.indexOf('{') + 1, key.indexOf('}'))).toBe(`b${bucketOf(encodeId(x))}`);
            const user = key.indexOf('{', key.indexOf('}'));
            expect(key.slice(user + 1, key.indexOf('}', user))).toBe(encodeId(x));
            // The lease set has the same hash tag, so the same slot: every script touches one slot.
            expect(kx.leases.slice(0, kx.leases.indexOf('}') + 1)).toBe(key.slice(0, key.indexOf('}') + 1));
          }
        },
      ),
      fcParams(300, 5000),
    );
  });

  it('a run id that is not of the gateway format names no key', () => {
    const keys = userKeys('aw', 'u');
    for (const bad of ['', 'run_1\n', 'run_1:x', '../run_1', 'run_{1}', 'x'.repeat(65), 'run_\uD800']) {
      expect(() => keys.run(bad)).toThrow(TypeError);
    }
  });
});

describe('Redis run store and engine with hostile ids', () => {
  it("two users never see or affect each other; a dead node's runs are recovered and the thread moves on", async () => {
    let now = Date.now();
    const clock = () => now;
    const dead = await node('dead', clock);
    const alive = await node('alive', clock);
    await fc.assert(
      fc.asyncProperty(scenario, async ({ a, b: rival, sameIds }) => {
        await admin.flushall();
        const b: Side = sameIds ? { ...rival, thread: a.thread, message: a.message } : rival;
        const recordOf = (side: Side, runId: string, messageId = side.message): RunRecord => ({
          runId,
          userId: side.user,
          threadId: side.thread,
          messageId,
          text: side.text,
        });
        const a1 = recordOf(a, 'run_a1');
        const a2 = recordOf(a, 'run_a2', `${a.message}\n2`);
        const b1 = recordOf(b, 'run_b1');
        const logA = await watch(alive.engine, a.user);
        const logB = await watch(alive.engine, b.user);
        try {
          // A's runs on the node that will die (one running, one queued behind it); B's on the other.
          expect(await dead.store.enqueue(a1, 'enqueue', 32, { maxActive: 2 })).toBe('start');
          expect(await dead.store.enqueue(a2, 'enqueue', 32, { maxActive: 2 })).toBe('queued');
          expect(await alive.store.enqueue(b1, 'enqueue', 32, { maxActive: 1 })).toBe('start');
          // Each user's cap counts its own runs only.
          expect(await alive.store.enqueue(recordOf(b, 'run_b2', `${b.message}\n2`), 'enqueue', 32, { maxActive: 1 })).toBe('too_many_runs');

          // Cancels across users are refused; hostile run ids find nothing.
          expect(await alive.store.requestCancel(b.user, 'run_a1')).toEqual({ kind: 'forbidden' });
          expect(await alive.store.requestCancel(b.user, 'run_a2')).toEqual({ kind: 'forbidden' });
          expect(await alive.store.requestCancel(a.user, 'run_b1')).toEqual({ kind: 'forbidden' });
          for (const hostile of ['run_a1\n', `run_a2"]`, '../run_a1', `${a.user}\nrun_a1`.slice(0, 128)]) {
            expect(await alive.store.requestCancel(b.user, hostile)).toEqual({ kind: 'not_found' });
          }
          // A's own cancel of its queued run finds it, with its thread id intact.
          expect(await alive.store.requestCancel(a.user, 'run_a2')).toEqual({ kind: 'queued', threadId: a.thread });
          expect(await admin.hget(alive.keys.user(a.user).run('run_a1'), 'cancel')).toBe('0');
          expect(await admin.hget(alive.keys.user(b.user).run('run_b1'), 'cancel')).toBe('0');

          // The dead node stops renewing; the alive one renews B's run, then sweeps.
          now += 2 * LEASE_MS;
          await alive.store.renewLeases([b1]);
          const lost = await alive.store.claimLostRuns(20, (runId) => runId === 'run_b1');
          expect(lost).toEqual([{ ...a1, started: false }]);
          // As the run manager ends a lost run: agent_started, run_lost, then the thread advances.
          const lostEvents: EventBody[] = [
            { type: 'agent_started', message_id: a1.messageId, text: a1.text, ...stamp('run_a1', a.thread) },
            { type: 'agent_error', code: 'run_lost', message: 'the node executing this run stopped', ...stamp('run_a1', a.thread) },
          ];
          await alive.engine.append(a.user, lostEvents, { runId: 'run_a1', terminal: true });
          expect(await alive.store.advance(a1)).toEqual({ record: { ...a2, runId: 'run_a2' }, cancelRequested: true });
          await alive.engine.append(b.user, [{ type: 'agent_started', message_id: b.message, text: b.text, ...stamp('run_b1', b.thread) }], {
            runId: 'run_b1',
            terminal: false,
          });

          // Events: each user's log and live stream hold its own runs only, ids intact.
          expect((await alive.engine.read(a.user, 1, 10)).map((e) => JSON.parse(e.json))).toMatchObject([
            { type: 'agent_started', run_id: 'run_a1', message_id: a.message, text: a.text, thread_id: a.thread },
            { type: 'agent_error', run_id: 'run_a1', code: 'run_lost' },
          ]);
          expect((await alive.engine.read(b.user, 1, 10)).map((e) => JSON.parse(e.json).run_id)).toEqual(['run_b1']);
          await logA.until(2);
          await logB.until(1);
          expect(logA.runIds()).toEqual(['run_a1', 'run_a1']);
          expect(logB.runIds()).toEqual(['run_b1']);

          // Claims are per user: the same message ids again are duplicates of each user's own run.
          expect(await alive.store.enqueue(recordOf(a, 'run_a3'), 'enqueue', 32)).toEqual({ duplicate: { runId: 'run_a1', threadId: a.thread } });
          expect(await alive.store.enqueue(recordOf(b, 'run_b3'), 'enqueue', 32)).toEqual({ duplicate: { runId: 'run_b1', threadId: b.thread } });
          // Active runs: A's queued run (now running here), B's running one.
          expect(await admin.zrange(alive.keys.user(a.user).activeRuns, 0, -1)).toEqual(['run_a2']);
          expect(await admin.zrange(alive.keys.user(b.user).activeRuns, 0, -1)).toEqual(['run_b1']);
        } finally {
          await logA.unsubscribe();
          await logB.unsubscribe();
        }
      }),
      fcParams(40, 40_000),
    );
  }, 60_000);

  it("a sub with a newline: its dead node's runs end as lost and its thread moves on", async () => {
    const user = 'eve\nx';
    const dead = await node('dead', Date.now, 200);
    const { engine, store } = await node('alive');
    const first: RunRecord = { runId: 'run_e1', userId: user, threadId: 't', messageId: 'm1', text: 'one' };
    expect(await dead.store.enqueue(first, 'enqueue', 32)).toBe('start');
    expect(await dead.store.enqueue({ ...first, runId: 'run_e2', messageId: 'm2', text: 'two' }, 'enqueue', 32)).toBe('queued');
    const outcomes = await sweepWith(engine, store, 2);
    expect(outcomes).toEqual(['run_lost', 'completed']);
    expect(await admin.llen(userKeys('ids', user).thread('t'))).toBe(0);
  });

  it("a sub of `<victim>\\n<run id>` cannot end the victim's queued run", async () => {
    // The victim's runs: one running on a live node (long lease), one queued behind it.
    const victimNode = await node('victim-node', Date.now, 60_000);
    const dead = await node('dead', Date.now, 200);
    const { engine, store } = await node('alive');
    const victim: RunRecord = { runId: 'run_v1', userId: 'victim', threadId: 't', messageId: 'm1', text: 'mine' };
    expect(await victimNode.store.enqueue(victim, 'enqueue', 32)).toBe('start');
    expect(await victimNode.store.enqueue({ ...victim, runId: 'run_v2', messageId: 'm2' }, 'enqueue', 32)).toBe('queued');
    // The attacker's run, on a node that dies.
    const attacker: RunRecord = { runId: 'run_x1', userId: 'victim\nrun_v2', threadId: 't', messageId: 'm1', text: 'theirs' };
    expect(await dead.store.enqueue(attacker, 'enqueue', 32)).toBe('start');
    expect(await sweepWith(engine, store, 1)).toEqual(['run_lost']);
    expect(await engine.read('victim', 1, 10)).toEqual([]);
    expect((await engine.read(attacker.userId, 1, 10)).map((e) => JSON.parse(e.json).run_id)).toEqual(['run_x1', 'run_x1']);
    expect(await admin.hmget(userKeys('ids', 'victim').run('run_v2'), 'state', 'cancel')).toEqual(['queued', '0']);
  });
});

/** Runs a run manager sweeping for lost runs on `store` until `count` runs ended; their outcomes. */
async function sweepWith(engine: RedisEngine, store: RedisRunStore, count: number): Promise<RunOutcome[]> {
  const outcomes: RunOutcome[] = [];
  const waiters = new Waiters(() => `outcomes: ${outcomes.join(',')}`);
  const agent: Agent = {
    async *run() {
      yield { type: 'answer', text: 'done' };
    },
  };
  const runs = new RunManager({
    engine,
    agent,
    clock: systemClock,
    threadPolicy: 'enqueue',
    runTimeoutMs: 10_000,
    store,
    lostRunSweepMs: 50,
    onRunEnded: (outcome) => {
      outcomes.push(outcome);
      waiters.notify();
    },
  });
  cleanups.push(() => runs.close());
  await waiters.until(() => outcomes.length >= count, 5000, `${count} runs to end`);
  return outcomes;
}
