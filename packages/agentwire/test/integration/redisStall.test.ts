/**
 * A stalled Redis: redis-server frozen with SIGSTOP, so its sockets stay open and take commands
 * but nothing is answered until SIGCONT. Readiness must see it (a probe with a 1 s deadline),
 * an ack or an upgrade under way must end within the command deadline, a stall longer than the
 * run lease must not end a run of a live node with run_lost (while a dead node's run still is),
 * and SIGTERM must end `agentwire serve` in time whatever the state of Redis.
 *
 * Every test runs its own redis-server and always resumes and stops it in afterEach. The stall
 * itself is the one timed wait (it is the scenario); everything else waits on events or polls
 * an HTTP probe the way a load balancer does, with deadlines.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { signToken } from '../../src/auth/index.js';
import { MemoryEngine } from '../../src/engine/index.js';
import { createRedisBackend } from '../../src/redis/index.js';
import type { Agent } from '../../src/runs/agent.js';
import { RunManager } from '../../src/runs/runManager.js';
import { LocalRunStore, type LostRun } from '../../src/runs/runStore.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { CLUSTER_SECRET, TestCluster, waitReady, type GatewayNode } from '../helpers/cluster.js';
import { startGateway } from '../helpers/gateway.js';
import { tryUpgrade, waitStatus } from '../helpers/http.js';
import { RedisServer, freePort } from '../helpers/redisServer.js';
import { ManualClock } from '../helpers/manualClock.js';
import { within } from '../helpers/waitFor.js';
import { demoRunTypes, isTerminal } from '../helpers/runInvariants.js';
import { seqProblem, TestClient, type Frame } from '../helpers/wsClient.js';

const COMMAND_TIMEOUT_MS = 1000;
const LEASE_MS = 600;
const DRAIN_TIMEOUT_MS = 500;
/** The serve command's grace after the drain timeout (src/cli/serve.ts) plus process start-up jitter. */
const EXIT_SLACK_MS = 2000 + 1500;
const noop = () => {};

const cleanups: Array<() => Promise<void> | void> = [];
const children = new ChildTracker();
let redis: RedisServer | null = null;

afterEach(async () => {
  redis?.resume();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await children.killAll();
  await redis?.stop();
  redis = null;
});

/** Freezes redis for `ms`, always resuming it. The stall's length is the scenario, not a sync wait. */
async function stall(server: RedisServer, ms: number): Promise<void> {
  server.pause();
  try {
    await new Promise((resolve) => setTimeout(resolve, ms));
  } finally {
    server.resume();
  }
}

/** Times `wait` from `since` (performance.now()). */
async function timed<T>(since: number, wait: Promise<T>): Promise<[T, number]> {
  const value = await wait;
  return [value, Math.round(performance.now() - since)];
}

const runFrames = (client: TestClient, runId: string) => client.frames.filter((f) => f.run_id === runId && typeof f.seq === 'number');

/** A shared store as the run manager sees it: a lease, contact the test sets, sweeps it records. */
class ContactStore extends LocalRunStore {
  readonly leaseMs = 300;
  contact = { breaks: 0, ok: true };
  readonly sweptAt: number[] = [];

  readonly #clock: ManualClock;

  constructor(clock: ManualClock) {
    super();
    this.#clock = clock;
  }

  override async renewLeases(): Promise<void> {}

  override async claimLostRuns(): Promise<LostRun[]> {
    this.sweptAt.push(this.#clock.now());
    return [];
  }
}

const idleAgent: Agent = {
  async *run() {
    yield { type: 'answer', text: 'never used' };
  },
};

describe('the lost-run sweep decision', () => {
  it('judges leases only after a whole lease of unbroken contact, and then does (any breaks, any outages)', async () => {
    const STEP_MS = 25;
    const STEPS = 120;
    const SWEEP_MS = 50;
    const contactEvent = fc.record({ step: fc.integer({ min: 0, max: STEPS - 1 }), kind: fc.constantFrom('break', 'down', 'up') });
    await fc.assert(
      fc.asyncProperty(fc.array(contactEvent, { maxLength: 12 }), async (events) => {
        const clock = new ManualClock(0);
        const store = new ContactStore(clock);
        const runs = new RunManager({
          engine: new MemoryEngine({ clock }),
          agent: idleAgent,
          clock,
          threadPolicy: 'enqueue',
          runTimeoutMs: 10_000,
          store,
          lostRunSweepMs: SWEEP_MS,
        });
        // When contact was broken (a break counted, or down from then on), on the same clock: the
        // sweeps due at that very moment already ran (in the advance that got there).
        const disturbedAt: number[] = [];
        for (let step = 0; step < STEPS; step++) {
          for (const event of events.filter((e) => e.step === step)) {
            const { breaks, ok } = store.contact;
            // As the engine counts them: an outage (ok false) is a break, counted by the time it ends,
            // so a sweeper that samples between sweeps cannot miss one that fell between them.
            if (event.kind === 'break') store.contact = { breaks: breaks + 1, ok };
            else if (event.kind === 'down') store.contact = { breaks, ok: false };
            else store.contact = { breaks: ok ? breaks : breaks + 1, ok: true };
            if (store.contact.breaks !== breaks) disturbedAt.push(clock.now());
          }
          if (!store.contact.ok) disturbedAt.push(clock.now());
          await clock.advance(STEP_MS);
        }
        await runs.close();
        for (const at of store.sweptAt) {
          const lastBreak = Math.max(0, ...disturbedAt.filter((d) => d < at));
          expect(at - lastBreak, `sweep at ${at} after contact broken at ${lastBreak}`).toBeGreaterThanOrEqual(store.leaseMs);
        }
        // Liveness: a lease (and two sweep intervals) of unbroken contact at the end brings a sweep.
        const quietFrom = Math.max(0, ...disturbedAt.map((d) => d + STEP_MS));
        if (STEPS * STEP_MS - quietFrom >= store.leaseMs + 2 * SWEEP_MS) {
          expect(
            store.sweptAt.some((at) => at > quietFrom),
            `a sweep after ${quietFrom}`,
          ).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
  });
});

describe('readiness and waits while redis is stalled', () => {
  it('/readyz turns 503 within the 1 s probe deadline, an ack and an upgrade under way end 1013 within the command deadline, and all recovers', async () => {
    const server = (redis = await RedisServer.start());
    const backend = createRedisBackend({ url: server.url, keyPrefix: 'stall', commandTimeoutMs: COMMAND_TIMEOUT_MS, onError: noop });
    const { engine, runStore, presence } = backend;
    const env = await startGateway({ engine, runStore, presence, drainTimeoutMs: 1000 });
    cleanups.push(() => backend.close());
    cleanups.push(() => env.stop());
    const readyz = `http://127.0.0.1:${env.port}/readyz`;
    const a = await env.ready('sam');
    const epoch = a.frames[0]!.epoch as string;
    const warmUp = await a.message('m0', 't0', 'what is 1+1?');
    expect((await a.runEvents(warmUp.run_id)).map((e) => e.type)).toEqual(demoRunTypes('what is 1+1?'));
    await waitStatus(readyz, 200);

    server.pause();
    const stalledAt = performance.now();
    // Both start before readiness can know: an upgrade (accepted, then its setup waits on Redis)
    // and a message on an open connection (its ack waits on Redis).
    const late = await env.connect('sam');
    a.send({ type: 'user_message', id: 'm-stall', thread_id: 't1', text: 'what is 6*7?' });
    const ackEnded = timed(stalledAt, a.closed);
    const upgradeEnded = timed(stalledAt, late.closed);

    const [, notReadyAfter] = await timed(stalledAt, waitStatus(readyz, 503, 5000));
    expect(notReadyAfter, 'ms from SIGSTOP to /readyz 503').toBeLessThan(4000);
    const refused = await tryUpgrade(env.url, { protocols: ['agentwire.v1', `jwt.${await env.token('sam')}`] });
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('1');

    const [ackOutcome, ackWaited] = await within(ackEnded, 'the ack during the stall to end', COMMAND_TIMEOUT_MS + 3000);
    expect(ackOutcome).toEqual({ code: 1013, reason: 'engine_unavailable' });
    const [upgradeOutcome, upgradeWaited] = await within(upgradeEnded, 'the upgrade under way to end', COMMAND_TIMEOUT_MS + 3000);
    expect(upgradeOutcome).toEqual({ code: 1013, reason: 'engine_unavailable' });
    expect(late.frames.some((f) => f.type === 'connection_ready')).toBe(false);

    server.resume();
    const resumedAt = performance.now();
    const [, readyAfter] = await timed(resumedAt, waitStatus(readyz, 200, 5000));
    expect(readyAfter, 'ms from SIGCONT to /readyz 200').toBeLessThan(3000);
    console.info(
      `redis stall: /readyz 503 after ${notReadyAfter} ms; ack closed 1013 after ${ackWaited} ms; ` +
        `upgrade under way closed 1013 after ${upgradeWaited} ms; /readyz 200 ${readyAfter} ms after SIGCONT`,
    );

    // The message's enqueue timed out but was applied once Redis went on: in doubt, like a
    // dropped link, so this node settles it and runs it; the resent id is its duplicate.
    const b = await env.ready('sam', { lastSeq: 6, epoch });
    expect(b.frames[0]).toMatchObject({ epoch, resumed: true });
    const again = await b.message('m-stall', 't1', 'what is 6*7?');
    expect(again).toMatchObject({ type: 'ack', thread_id: 't1' });
    const events = await b.runEvents(again.run_id as string, 10_000);
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('what is 6*7?'));
    expect(events.at(-1)!.text).toContain('42');
    expect(seqProblem(b.events(), 6)).toBeNull();
    expect(env.gateway.isReady).toBe(true);
  });
});

describe('run leases across a stall of twice the lease', () => {
  it('ends no run of a live node with run_lost, and still ends the run of a node that died with run_lost', async () => {
    const cluster = await TestCluster.start(3, {
      // The default command deadline (2 s) outlasts the stall: every command is answered late,
      // none times out, so the leases written during the stall have lapsed when they land.
      env: { AGENTWIRE_RUN_LEASE_MS: String(LEASE_MS), AGENTWIRE_RUN_SWEEP_MS: '50' },
    });
    redis = cluster.redis;
    cleanups.push(() => cluster.stop());
    const node = (name: string): GatewayNode => cluster.nodes.find((n) => n.name === name)!;
    const [n1, n2, n3] = [node('n1'), node('n2'), node('n3')];

    const u1 = await cluster.ready(n1, 'u1');
    const u2 = await cluster.ready(n2, 'u2');
    const u3 = await cluster.ready(n3, 'u3');
    const u3Watcher = await cluster.ready(n1, 'u3');
    const hang1 = await u1.message('h1', 't1', '/hang');
    const hang2 = await u2.message('h2', 't1', '/hang');
    const hang3 = await u3.message('h3', 't1', '/hang');
    for (const [client, ack] of [
      [u1, hang1],
      [u2, hang2],
      [u3Watcher, hang3],
    ] as const) {
      expect(ack).toMatchObject({ type: 'ack', status: 'started' });
      await client.waitFor((f) => f.type === 'agent_thinking' && f.run_id === ack.run_id, 5000, `${ack.run_id} under way`);
    }
    // A run whose appends fall into the stall (they time out and are retried as in doubt).
    const slow2 = await u2.message('s2', 't2', '/slow 300 what is 2+3*4?');
    expect(slow2).toMatchObject({ type: 'ack', status: 'started' });

    // n3 dies without renewing its lease; then redis stalls for twice the lease. Messages to n1
    // reach Redis during the stall: their enqueues (each giving n1 a new run and its lease) are
    // applied once it ends, with a lease that lapsed meanwhile.
    await n3.child.kill();
    const stalled = stall(cluster.redis, 2 * LEASE_MS);
    const inStall = [0, 1, 2].map((i) => u1.message(`m-${i}`, `t-in-stall-${i}`, `/slow 150 what is ${i}+${i}?`, 10_000));
    await stalled;
    await Promise.all([n1, n2].map((n) => waitReady(n, 10_000)));

    // The dead node's run is still recovered: it ends run_lost, once.
    const lost = await u3Watcher.waitFor((f) => f.run_id === hang3.run_id && isTerminal(f), 15_000, 'the dead node run to end');
    expect(lost).toMatchObject({ type: 'agent_error', code: 'run_lost' });

    // The live nodes' runs were never presumed lost: they still run, and a cancel ends each once.
    for (const [client, ack] of [
      [u1, hang1],
      [u2, hang2],
    ] as const) {
      client.send({ type: 'cancel', id: `c-${ack.run_id}`, run_id: ack.run_id });
      const reply = await client.waitFor((f) => f.id === `c-${ack.run_id}` || f.ref === `c-${ack.run_id}`, 5000, 'the cancel reply');
      expect(reply, `cancel of the run on ${client === u1 ? 'n1' : 'n2'}`).toMatchObject({ type: 'ack', status: 'cancelling' });
      const events = await client.runEvents(ack.run_id as string, 5000);
      expect(events.filter(isTerminal)).toEqual([expect.objectContaining({ type: 'agent_completed', status: 'cancelled' })]);
    }
    // The messages of the stall were acked once Redis answered, and their runs went on on n1 to
    // their end, not run_lost.
    for (const [i, acked] of inStall.entries()) {
      const ack = await acked;
      expect(ack).toMatchObject({ type: 'ack', status: 'started' });
      const events = await u1.runEvents(ack.run_id as string, 10_000);
      expect(
        events.map((e) => e.type),
        `the run of m-${i}`,
      ).toEqual(demoRunTypes(`what is ${i}+${i}?`));
      expect(events.at(-1)).toMatchObject({ status: 'completed', text: `${i}+${i} = ${2 * i}` });
    }
    const slowEvents = await u2.runEvents(slow2.run_id as string, 10_000);
    expect(slowEvents.map((e) => e.type)).toEqual(demoRunTypes(slowEvents[0]!.text));
    expect(slowEvents.at(-1)).toMatchObject({ status: 'completed', text: '2+3*4 = 14' });

    const everyFrame: Frame[] = [...u1.frames, ...u2.frames, ...u3Watcher.frames];
    expect(everyFrame.filter((f) => f.code === 'run_lost').map((f) => f.run_id)).toEqual([hang3.run_id]);
    for (const client of [u1, u2]) {
      expect(seqProblem(client.events(), 0)).toBeNull();
      expect(client.closeCode).toBeNull();
    }
    expect(runFrames(u3Watcher, hang3.run_id as string).filter(isTerminal)).toHaveLength(1);
  });
});

describe('SIGTERM of `agentwire serve` whatever the state of redis', () => {
  it('exits 0 within the drain timeout when redis has been unreachable since start', async () => {
    const closedPort = await freePort();
    const child = children.spawn(['serve'], {
      PORT: '0',
      AGENTWIRE_JWT_SECRET: CLUSTER_SECRET,
      AGENTWIRE_REDIS_URL: `redis://127.0.0.1:${closedPort}`,
      AGENTWIRE_DRAIN_TIMEOUT_MS: String(DRAIN_TIMEOUT_MS),
      AGENTWIRE_LOG_LEVEL: 'error',
    });
    const [, port] = await child.waitForStdout(/^agentwire listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws$/m);
    await waitStatus(`http://127.0.0.1:${port}/readyz`, 503);

    const signalledAt = performance.now();
    child.signal('SIGTERM');
    const [exit, took] = await timed(signalledAt, child.waitExit(DRAIN_TIMEOUT_MS + EXIT_SLACK_MS + 5000));
    expect(exit).toEqual({ code: 0, signal: null });
    expect(took, 'ms from SIGTERM to exit, redis unreachable').toBeLessThan(DRAIN_TIMEOUT_MS + EXIT_SLACK_MS);
    console.info(`SIGTERM with redis unreachable since start: exit 0 after ${took} ms`);
  });

  it('exits 0 within the drain timeout while redis is stalled, with a run in flight', async () => {
    const server = (redis = await RedisServer.start());
    const child = children.spawn(['serve'], {
      PORT: '0',
      AGENTWIRE_JWT_SECRET: CLUSTER_SECRET,
      AGENTWIRE_REDIS_URL: server.url,
      AGENTWIRE_DRAIN_TIMEOUT_MS: String(DRAIN_TIMEOUT_MS),
      AGENTWIRE_LOG_LEVEL: 'error',
    });
    const [, url, port] = await child.waitForStdout(/^agentwire listening on (ws:\/\/127\.0\.0\.1:(\d+)\/ws)$/m);
    await waitReady({ httpUrl: `http://127.0.0.1:${port}` });
    const client = new TestClient(url!, { token: (await signToken(CLUSTER_SECRET, { sub: 'ann', ttlSec: 600 })).token });
    cleanups.push(() => client.close());
    await client.ready();
    const ack = await client.message('m1', 't1', '/hang');
    await client.waitFor((f) => f.type === 'agent_thinking' && f.run_id === ack.run_id);

    server.pause();
    const signalledAt = performance.now();
    child.signal('SIGTERM');
    const [exit, took] = await timed(signalledAt, child.waitExit(DRAIN_TIMEOUT_MS + EXIT_SLACK_MS + 5000));
    expect(exit).toEqual({ code: 0, signal: null });
    expect(took, 'ms from SIGTERM to exit, redis stalled').toBeLessThan(DRAIN_TIMEOUT_MS + EXIT_SLACK_MS);
    console.info(`SIGTERM with redis stalled and a run in flight: exit 0 after ${took} ms`);
  });
});
