import type { EventBody } from '@agentwire/protocol';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import { PostgresServer } from '../helpers/postgres.js';
import { Waiters } from '../helpers/waitFor.js';

// A PostgreSQL of the test's own, stopped and started again while the log keeps being appended:
// the archive catches up from the log as far as retention reaches, counts the rest as lost, and
// writes nothing twice.

const RETENTION = 40;
const QUEUE = 10;

let server: PostgresServer;

beforeAll(async () => {
  server = await PostgresServer.start();
}, 60_000);

afterAll(async () => {
  await server?.stop();
});

let n = 0;
function run(threadId: string): EventBody[] {
  const runId = `r${++n}`;
  const base = { run_id: runId, thread_id: threadId, ts: new Date(Date.UTC(2026, 11, 4, 12, 0, n)).toISOString() };
  return [
    { ...base, type: 'agent_started', message_id: `m${n}`, text: `question ${n}` },
    ...Array.from({ length: 9 }, (_, i) => ({ ...base, type: 'agent_text_delta' as const, text: `${i} ` })),
    { ...base, type: 'agent_completed', status: 'completed', text: Array.from({ length: 9 }, (_, i) => `${i} `).join('') },
  ];
}

describe('PostgreSQL outage', () => {
  it('keeps taking events while PostgreSQL is down, is unavailable meanwhile, catches up after, and counts what retention lost', async () => {
    const engine = new MemoryEngine({ retentionEvents: RETENTION });
    const waiters = new Waiters(() => JSON.stringify(store.stats));
    const store = new PostgresHistoryStore({
      url: server.url,
      engine,
      queueEvents: QUEUE,
      batchEvents: 20,
      holeGraceMs: 20,
      probeIntervalMs: 50,
      // One writer, so that the queue bound below is the whole queue.
      poolSize: 2,
      onChange: () => waiters.notify(),
    });
    const admin = () => new pg.Client({ connectionString: server.url });
    const append = async (events: EventBody[]) => {
      const entries = await engine.append('u', events);
      store.record('u', entries);
    };
    const archived = async () => {
      const client = admin();
      await client.connect();
      try {
        const { rows } = await client.query<{ seq: string }>('SELECT seq FROM agentwire_events WHERE user_id = $1 ORDER BY seq', ['u']);
        return rows.map((row) => Number(row.seq));
      } finally {
        await client.end();
      }
    };
    const outage = async (events: number) => {
      await server.stopProcess();
      await waiters.until(() => !store.available, 5000, 'unavailable while PostgreSQL is down');
      // Live traffic goes on: appends and record() neither fail nor wait.
      for (let i = 0; i < events / 11; i++) await append(run('t1'));
      expect(store.available).toBe(false);
      await server.startProcess();
      const back = performance.now();
      await waiters.until(() => store.available, 10_000, 'available again');
      await store.idle();
      return performance.now() - back;
    };
    try {
      await store.ready();
      await waiters.until(() => store.available, 5000, 'available');
      await append(run('t1'));
      await store.idle();
      expect(await archived()).toEqual(range(1, 11));

      // An outage shorter than retention: everything is caught up, nothing lost.
      const first = await outage(22);
      // One of the first run's 11 did not fit the queue of 10 either (and was caught up at once).
      expect(store.stats.dropped).toBe(1 + 22 - QUEUE);
      expect(await archived()).toEqual(range(1, 33));
      expect(store.stats.lost).toBe(0);
      console.info(`catch-up after a restart (22 events, 12 from the log): ${first.toFixed(0)} ms`);

      // Longer than retention: the queue's 10 and the log's newest 40 are archived; 38 are lost.
      const second = await outage(88);
      const head = await engine.head('u');
      expect(head.lastSeq).toBe(121);
      const lost = range(34 + QUEUE, head.lastSeq - RETENTION);
      expect(await archived()).toEqual(range(1, head.lastSeq).filter((seq) => !lost.includes(seq)));
      expect(store.stats.lost).toBe(lost.length);
      console.info(`catch-up after a restart (88 events, ${lost.length} lost): ${second.toFixed(0)} ms`);

      // The archive mark moved past the loss: the messages route answers up to the head.
      const page = (await store.messages('u', 't1', { limit: 200 }))!;
      expect(page.lastSeq).toBe(head.lastSeq);
      expect(page.epoch).toBe(head.epoch);
    } finally {
      await store.close();
      await engine.close();
    }
  }, 60_000);
});

describe('PostgreSQL restart mid-transaction', () => {
  it('survives connections dying under the archive transactions, and archives everything afterwards', async () => {
    const engine = new MemoryEngine({ retentionEvents: 10_000 });
    const waiters = new Waiters(() => JSON.stringify(store.stats));
    const store = new PostgresHistoryStore({
      url: server.url,
      engine,
      batchEvents: 11,
      holeGraceMs: 20,
      probeIntervalMs: 50,
      onChange: () => waiters.notify(),
    });
    try {
      await store.ready();
      await waiters.until(() => store.available, 5000, 'available');
      for (let i = 0; i < 50; i++) store.record(`busy${i % 8}`, await engine.append(`busy${i % 8}`, run('t1')));
      // Transactions are in flight now: the fast shutdown kills their connections.
      await waiters.until(() => store.stats.archived > 0, 5000, 'archiving under way');
      await server.stopProcess();
      await server.startProcess();
      await waiters.until(() => store.available, 10_000, 'available again');
      await store.idle();
      let total = 0;
      for (let i = 0; i < 8; i++) {
        const head = await engine.head(`busy${i}`);
        const page = (await store.messages(`busy${i}`, 't1', { limit: 200 }))!;
        expect(page.lastSeq).toBe(head.lastSeq);
        total += head.lastSeq;
      }
      expect(total).toBe(550);
      expect(store.stats.lost).toBe(0);
    } finally {
      await store.close();
      await engine.close();
    }
  }, 60_000);
});

describe('PostgreSQL stall', () => {
  it('is unavailable while PostgreSQL answers nothing, and archives what came meanwhile once it answers again', async () => {
    const engine = new MemoryEngine({ retentionEvents: 1000 });
    const waiters = new Waiters(() => JSON.stringify(store.stats));
    const store = new PostgresHistoryStore({
      url: server.url,
      engine,
      statementTimeoutMs: 500,
      holeGraceMs: 20,
      probeIntervalMs: 50,
      onChange: () => waiters.notify(),
    });
    try {
      await store.ready();
      await waiters.until(() => store.available, 5000, 'available');
      const first = await engine.append('stalled', run('t9'));
      store.record('stalled', first);
      await store.idle();
      server.pause();
      try {
        const during = await engine.append('stalled', run('t9'));
        store.record('stalled', during);
        // No probe answers: unavailable once one has been outstanding for more than 1 s.
        await waiters.until(() => !store.available, 10_000, 'unavailable during the stall');
      } finally {
        server.resume();
      }
      await waiters.until(() => store.available, 10_000, 'available after the stall');
      await store.idle();
      const head = await engine.head('stalled');
      const page = (await store.messages('stalled', 't9', { limit: 50 }))!;
      expect(page.lastSeq).toBe(head.lastSeq);
      expect(page.items).toHaveLength(4);
      expect(store.stats.lost).toBe(0);
    } finally {
      await store.close();
      await engine.close();
    }
  }, 60_000);
});

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
