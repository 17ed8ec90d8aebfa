import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import { createRedisBackend, type RedisBackend } from '../../src/redis/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { GatedAgent } from '../helpers/gatedAgent.js';
import { historyUser, httpCall } from '../helpers/historyHttp.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { Waiters } from '../helpers/waitFor.js';
import type { Frame, TestClient } from '../helpers/wsClient.js';
import { MACHINE_REDIS, deleteKeysUnder } from '../helpers/machineRedis.js';

// The PostgreSQL history store on two gateways that share the machine's Redis (a key prefix of
// this run's own) and one database of this run's own (docs/DEPLOYMENT.md, "PostgreSQL"): each
// node archives what it appended, and the thread is read whole from either node.

const PREFIX = `pgr-${randomUUID().slice(0, 8)}`;
const noop = () => {};

let database: { url: string; drop: () => Promise<void> };
let admin: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase();
  admin = new pg.Pool({ connectionString: database.url, max: 2 });
  // Dropping the database WITH (FORCE) may end a connection the pool is still closing.
  admin.on('error', noop);
});

afterAll(async () => {
  await admin?.end();
  await database?.drop();
  // The run's keys: they would expire with retention, but a test leaves nothing behind.
  await deleteKeysUnder(PREFIX);
});

interface Node {
  readonly gateway: TestGateway;
  readonly store: PostgresHistoryStore;
}

interface Cluster {
  readonly agent: GatedAgent;
  readonly nodes: readonly [Node, Node];
  /** Notified after every archive step of either store. */
  readonly waiters: Waiters;
  stop(): Promise<void>;
}

let cluster: Cluster | undefined;

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/** Two gateways on one Redis, each with a PostgreSQL history store of its own on the one database. */
async function startCluster(holeGraceMs: number): Promise<Cluster> {
  const agent = new GatedAgent();
  const waiters = new Waiters();
  const backends: RedisBackend[] = [];
  const nodes: Node[] = [];
  for (const name of ['a', 'b']) {
    const backend = createRedisBackend({
      url: MACHINE_REDIS,
      keyPrefix: PREFIX,
      retentionMs: 600_000,
      nodeId: `${PREFIX}-${name}`,
      leaseMs: 60_000,
      onError: noop,
    });
    backends.push(backend);
    const store = new PostgresHistoryStore({ url: database.url, engine: backend.engine, batchEvents: 8, holeGraceMs, onChange: () => waiters.notify() });
    await store.ready();
    const { engine, runStore, threadMarks } = backend;
    nodes.push({ gateway: await startGateway({ agent, engine, runStore, threadMarks, history: store }), store });
  }
  return {
    agent,
    nodes: [nodes[0]!, nodes[1]!],
    waiters,
    async stop() {
      await Promise.all(nodes.map((node) => node.gateway.stop()));
      await Promise.all(nodes.map((node) => node.store.close()));
      await Promise.all(backends.map((backend) => backend.close()));
    },
  };
}

async function archivedSeqs(userId: string): Promise<number[]> {
  const { rows } = await admin.query<{ seq: string }>('SELECT seq FROM agentwire_events WHERE user_id = $1 ORDER BY seq', [userId]);
  return rows.map((row) => Number(row.seq));
}

async function say(client: TestClient, threadId: string, text: string): Promise<string> {
  const ack = await client.message(randomUUID(), threadId, text);
  expect(ack.type).toBe('ack');
  return ack.run_id as string;
}

/**
 * A streamed run on each node, their fragments pushed in turns so that the user's log
 * interleaves the two nodes' appends: every event of one node's run lies between the other's.
 * `watcher` sees all of the user's events. Returns the user's newest seq.
 */
async function interleavedRuns(agent: GatedAgent, onA: TestClient, onB: TestClient, watcher: TestClient): Promise<number> {
  const runs = [await say(onA, 'ta', '/gated on a'), await say(onB, 'tb', '/gated on b')];
  const threads = ['ta', 'tb'];
  for (let i = 0; i < 3; i++) {
    for (const [k, threadId] of threads.entries()) {
      agent.push(threadId, { type: 'text_delta', text: `${threadId}${i} ` });
      await watcher.waitForCount((f) => f.run_id === runs[k] && f.type === 'agent_text_delta', i + 1);
    }
  }
  for (const threadId of threads) agent.finish(threadId, `${threadId}0 ${threadId}1 ${threadId}2 `);
  const ends = await Promise.all(runs.map((runId) => watcher.runEvents(runId)));
  return Math.max(...ends.map((events) => events.at(-1)!.seq as number));
}

function seqsOf(events: readonly Frame[], threadId: string): number[] {
  return events.filter((e) => e.thread_id === threadId).map((e) => e.seq as number);
}

describe('PostgreSQL history on two gateways that share a Redis', () => {
  it('each node archives what it appended, nothing twice, and either node reads the thread whole', async () => {
    // A hole the other node leaves is never filled from the log within the test: only that node's own writes fill it.
    cluster = await startCluster(600_000);
    const [a, b] = cluster.nodes;
    const alice = await historyUser(a.gateway, 'alice');
    const onB = await b.gateway.ready(alice.id);
    const newest = await interleavedRuns(cluster.agent, alice.client, onB, alice.client);
    const events = alice.client.events();
    const ownA = seqsOf(events, 'ta');
    const ownB = seqsOf(events, 'tb');
    expect(ownA.length + ownB.length).toBe(newest);
    // Interleaved: neither node's appends are one block of seqs.
    expect(Math.max(...ownA)).toBeGreaterThan(Math.min(...ownB));
    expect(Math.max(...ownB)).toBeGreaterThan(Math.min(...ownA));

    await cluster.waiters.until(() => (a.store.stats.archived + b.store.stats.archived >= newest ? true : undefined), 10_000, 'both nodes archived');
    expect(await archivedSeqs(alice.id)).toEqual(Array.from({ length: newest }, (_, i) => i + 1));
    expect(a.store.stats).toMatchObject({ archived: ownA.length, dropped: 0, lost: 0, caughtUp: 0, failedBatches: 0 });
    expect(b.store.stats).toMatchObject({ archived: ownB.length, dropped: 0, lost: 0, caughtUp: 0, failedBatches: 0 });

    for (const node of [a, b]) {
      const threads = await httpCall(node.gateway.port, 'GET', '/v1/threads', { token: alice.token });
      expect(threads.body.threads.map((t: { thread_id: string }) => t.thread_id).sort()).toEqual(['ta', 'tb']);
      for (const threadId of ['ta', 'tb']) {
        const page = await httpCall(node.gateway.port, 'GET', `/v1/threads/${threadId}/messages`, { token: alice.token });
        expect(page.status).toBe(200);
        // Up to the user's newest event: the holes the other node's appends left are archived by it.
        expect(page.body.last_seq).toBe(newest);
        expect(page.body.messages.at(-1)).toMatchObject({ status: 'completed', text: `${threadId}0 ${threadId}1 ${threadId}2 ` });
      }
    }
  });

  it('a node that never archives what it appended (it died with its queue) leaves holes the other node fills from the log', async () => {
    cluster = await startCluster(50);
    const [a, b] = cluster.nodes;
    // Node b's archive loses everything it is handed, as a node killed before its batches.
    b.store.record = noop;
    const alice = await historyUser(a.gateway, 'alice');
    const onB = await b.gateway.ready(alice.id);
    await interleavedRuns(cluster.agent, alice.client, onB, alice.client);
    const ownB = seqsOf(alice.client.events(), 'tb');
    // Node a finds the holes when it archives its next event after them.
    const after = await alice.client.runEvents(await say(alice.client, 'tc', 'after'));
    const newest = after.at(-1)!.seq as number;

    // Node a's count includes what it caught up.
    await cluster.waiters.until(() => (a.store.stats.archived >= newest ? true : undefined), 10_000, 'node a filled the holes');
    expect(await archivedSeqs(alice.id)).toEqual(Array.from({ length: newest }, (_, i) => i + 1));
    expect(a.store.stats).toMatchObject({ archived: newest, caughtUp: ownB.length, lost: 0, failedBatches: 0 });
    expect(b.store.stats.archived).toBe(0);
    const page = await httpCall(b.gateway.port, 'GET', '/v1/threads/tb/messages', { token: alice.token });
    expect(page.body).toMatchObject({ last_seq: newest });
    expect(page.body.messages.at(-1)).toMatchObject({ status: 'completed', text: 'tb0 tb1 tb2 ' });
  });
});
