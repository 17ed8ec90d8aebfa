import type { EventBody, LogEntry } from '@agentwire/protocol';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import { InvalidCursorError } from '../../src/history/types.js';
import { migrate } from '../../src/postgres/migrations.js';
import type { AssistantMessageView, MessageView } from '../../src/history/types.js';
import { backendsBlockedBy, createTestDatabase } from '../helpers/postgres.js';
import { Waiters } from '../helpers/waitFor.js';

// The PostgreSQL history store against the machine's PostgreSQL 15, one fresh database per run.

let database: { url: string; drop: () => Promise<void> };
let admin: pg.Pool;
const stores: PostgresHistoryStore[] = [];
const engines: MemoryEngine[] = [];

/**
 * A pool of the test's own. Its database is dropped WITH (FORCE) right after `end()`, which can
 * terminate a connection the pool is still closing: that FATAL (57P01) is expected, and without a
 * listener the pool's 'error' event would be an uncaught exception (a CI sim saw one).
 */
function testPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => {});
  return pool;
}

beforeAll(async () => {
  database = await createTestDatabase();
  admin = testPool(database.url, 2);
});

afterAll(async () => {
  await admin?.end();
  await database?.drop();
});

afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close()));
  await Promise.all(engines.splice(0).map((engine) => engine.close()));
});

let clockTick = Date.parse('2026-12-04T10:00:00.000Z');
const ts = () => new Date(clockTick++).toISOString();

/** A run's events as the run manager makes them: start, thinking, a tool call, streamed answer, end. */
function runEvents(threadId: string, runId: string, text: string, answer: string[]): EventBody[] {
  const base = { run_id: runId, thread_id: threadId };
  return [
    { ...base, ts: ts(), type: 'agent_started', message_id: `m-${runId}`, text },
    { ...base, ts: ts(), type: 'agent_thinking_delta', text: 'let me ' },
    { ...base, ts: ts(), type: 'agent_thinking_delta', text: 'count' },
    { ...base, ts: ts(), type: 'tool_executing', call_id: `c-${runId}`, tool: 'word_count', args: { text } },
    { ...base, ts: ts(), type: 'tool_completed', call_id: `c-${runId}`, tool: 'word_count', ok: true, result: 2 },
    ...answer.map((part) => ({ ...base, ts: ts(), type: 'agent_text_delta' as const, text: part })),
    { ...base, ts: ts(), type: 'agent_completed', status: 'completed', text: answer.join('') },
  ];
}

interface Setup {
  store: PostgresHistoryStore;
  engine: MemoryEngine;
  waiters: Waiters;
  /** Appends to the log and hands the entries to the store, as the gateway does. */
  append: (userId: string, events: EventBody[]) => Promise<LogEntry[]>;
}

async function setup(options: { retentionEvents?: number; queueEvents?: number; holeGraceMs?: number; batchEvents?: number } = {}): Promise<Setup> {
  const engine = new MemoryEngine({ retentionEvents: options.retentionEvents ?? 10_000 });
  const waiters = new Waiters();
  const store = new PostgresHistoryStore({
    url: database.url,
    engine,
    batchEvents: options.batchEvents ?? 50,
    queueEvents: options.queueEvents ?? 10_000,
    holeGraceMs: options.holeGraceMs ?? 20,
    onChange: () => waiters.notify(),
  });
  engines.push(engine);
  stores.push(store);
  await store.ready();
  await waiters.until(() => store.available, 5000, 'store available');
  return {
    store,
    engine,
    waiters,
    append: async (userId, events) => {
      const entries = await engine.append(userId, events);
      store.record(userId, entries);
      return entries;
    },
  };
}

async function archivedSeqs(userId: string): Promise<number[]> {
  const { rows } = await admin.query<{ seq: string }>('SELECT seq FROM agentwire_events WHERE user_id = $1 ORDER BY seq', [userId]);
  return rows.map((row) => Number(row.seq));
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('migrations', () => {
  it('two nodes starting at once migrate once, under the lock, and a restart finds nothing to do', async () => {
    const fresh = await createTestDatabase();
    const pools = [0, 1, 2].map(() => testPool(fresh.url, 1));
    try {
      const applied = await Promise.all(pools.map((pool) => migrate(pool)));
      expect(applied.flat()).toEqual([1, 2]);
      const { rows } = await pools[0]!.query('SELECT version FROM agentwire_schema_migrations ORDER BY version');
      expect(rows).toEqual([{ version: 1 }, { version: 2 }]);
      expect(await migrate(pools[1]!)).toEqual([]);
    } finally {
      await Promise.all(pools.map((pool) => pool.end()));
      await fresh.drop();
    }
  });

  it('refuses a database whose schema is newer than this build', async () => {
    const fresh = await createTestDatabase();
    const pool = testPool(fresh.url, 1);
    try {
      await migrate(pool);
      await pool.query(`INSERT INTO agentwire_schema_migrations (version, name) VALUES (99, 'future')`);
      await expect(migrate(pool)).rejects.toThrow(/newer than this agentwire/);
    } finally {
      await pool.end();
      await fresh.drop();
    }
  });
});

describe('archive and history', () => {
  it('archives write-behind and answers the history routes per user', async () => {
    const { store, engine, append } = await setup();
    await append('alice', runEvents('t1', 'r1', 'hello there', ['Two ', 'words.']));
    await append('alice', runEvents('t2', 'r2', 'x'.repeat(100), ['ok']));
    await append('alice', runEvents('t1', 'r3', 'and again', ['Two ', 'more.']));
    await append('bob', runEvents('t1', 'rb', 'bob here', ['hi']));
    await store.idle();

    const threads = await store.listThreads('alice', { limit: 20 });
    expect(threads.items.map((t) => t.threadId)).toEqual(['t1', 't2']);
    expect(threads.items[0]).toMatchObject({ title: 'hello there', lastRun: { runId: 'r3', status: 'completed' } });
    expect(threads.items[1]!.title).toBe('x'.repeat(80));
    const firstPage = await store.listThreads('alice', { limit: 1 });
    expect(firstPage.items.map((t) => t.threadId)).toEqual(['t1']);
    const secondPage = await store.listThreads('alice', { limit: 1, cursor: firstPage.nextCursor! });
    expect(secondPage).toMatchObject({ items: [{ threadId: 't2' }], nextCursor: null });

    const page = (await store.messages('alice', 't1', { limit: 50 }))!;
    const head = await engine.head('alice');
    expect({ epoch: page.epoch, lastSeq: page.lastSeq }).toEqual({ epoch: head.epoch, lastSeq: head.lastSeq });
    expect(page.items.map((m) => [m.role, m.text])).toEqual([
      ['user', 'hello there'],
      ['assistant', 'Two words.'],
      ['user', 'and again'],
      ['assistant', 'Two more.'],
    ]);
    expect(page.items[1]).toMatchObject({
      id: 'r1',
      status: 'completed',
      thinking: ['let me count'],
      toolCalls: [{ callId: 'c-r1', tool: 'word_count', args: { text: 'hello there' }, ok: true, result: 2 }],
      error: null,
    });

    // Pages go towards older messages, oldest first within a page.
    const seen: MessageView[][] = [];
    let cursor: string | undefined;
    do {
      const next = (await store.messages('alice', 't1', { limit: 3, ...(cursor ? { cursor } : {}) }))!;
      seen.unshift([...next.items]);
      cursor = next.nextCursor ?? undefined;
    } while (cursor);
    expect(seen.flat().map((m) => m.id)).toEqual(page.items.map((m) => m.id));

    // Per-user isolation: bob's t1 is his own, and alice's t2 does not exist for bob.
    expect((await store.messages('bob', 't1', { limit: 50 }))!.items.map((m) => m.text)).toEqual(['bob here', 'hi']);
    expect(await store.messages('bob', 't2', { limit: 50 })).toBeNull();
    expect(await store.renameThread('bob', 't2', 'mine')).toBeNull();
    expect(await store.deleteThread('bob', 't2')).toBe(false);

    await expect(store.messages('alice', 't1', { limit: 5, cursor: 'not-a-cursor' })).rejects.toBeInstanceOf(InvalidCursorError);
    await expect(store.listThreads('alice', { limit: 5, cursor: Buffer.from('[1,2]').toString('base64url') })).rejects.toBeInstanceOf(InvalidCursorError);
  });

  it('renames, gives agents the earlier turns, and deletes a thread for good', async () => {
    const { store, append } = await setup();
    await append('carol', runEvents('t1', 'r1', 'first', ['one']));
    await append('carol', runEvents('t1', 'r2', 'second', ['two']));
    const third = await append('carol', runEvents('t1', 'r3', 'third', ['three']));
    await store.idle();

    expect(await store.renameThread('carol', 't1', 'Renamed')).toMatchObject({ threadId: 't1', title: 'Renamed' });
    await append('carol', runEvents('t1', 'r4', 'fourth', ['four']));
    await store.idle();
    expect((await store.listThreads('carol', { limit: 5 })).items[0]!.title).toBe('Renamed');

    const turns = await store.conversation('carol', 't1', 3, 'r3');
    expect(turns).toEqual([
      { role: 'assistant', text: 'one', toolCalls: [expect.objectContaining({ tool: 'word_count', ok: true })] },
      { role: 'user', text: 'second' },
      { role: 'assistant', text: 'two', toolCalls: [expect.objectContaining({ tool: 'word_count' })] },
    ]);
    expect((await store.conversation('carol', 't1', 100)).filter((t) => t.role === 'user').map((t) => t.text)).toEqual(['first', 'second', 'third', 'fourth']);

    expect(await store.deleteThread('carol', 't1')).toBe(true);
    expect(await store.messages('carol', 't1', { limit: 50 })).toBeNull();
    expect((await store.listThreads('carol', { limit: 5 })).items).toEqual([]);
    const { rows } = await admin.query('SELECT count(*)::int AS n FROM agentwire_events WHERE user_id = $1', ['carol']);
    expect(rows[0].n).toBe(0);
    // Write-behind or catch-up handing the deleted thread's events again does not bring it back.
    store.record('carol', third);
    await store.idle();
    expect(await store.messages('carol', 't1', { limit: 50 })).toBeNull();
  });

  it('never writes an event twice, also when it is recorded twice', async () => {
    const { store, append } = await setup();
    const entries = await append('dave', runEvents('t1', 'r1', 'hi', ['a', 'b']));
    store.record('dave', entries);
    store.record('dave', entries.slice(2));
    await store.idle();
    expect(await archivedSeqs('dave')).toEqual(range(1, entries.length));
    // Written in one go, without a failed batch or a catch-up from the log.
    expect(store.stats).toMatchObject({ archived: entries.length, failedBatches: 0, caughtUp: 0 });
    const page = (await store.messages('dave', 't1', { limit: 50 }))!;
    expect((page.items[1] as AssistantMessageView).text).toBe('ab');
  });

  it("stores each event's JSON exactly as the log holds it: quotes, backslashes, escapes of NUL and lone surrogates, any script", async () => {
    const { store, append } = await setup();
    const text = 'a "quoted" \\ back\\slash \u0000 nul \ud800 lone \n newline é 😀 \u2028';
    const args = { nested: { list: [1, 'two', { three: null }], quote: '"' }, '"key"': '\\' };
    const events = runEvents('t1', 'r1', text, [text, '\\"']).map((e) => (e.type === 'tool_executing' ? { ...e, args } : e));
    const entries = await append('zoe', events);
    await store.idle();
    const { rows } = await admin.query<{ event: string }>('SELECT event FROM agentwire_events WHERE user_id = $1 ORDER BY seq', ['zoe']);
    expect(rows.map((row) => row.event)).toEqual(entries.map((entry) => entry.json));
    expect(store.stats).toMatchObject({ archived: entries.length, failedBatches: 0 });
  });

  it('archives events whose ids hold unpaired surrogates (from a hostile log) with U+FFFD, without failing the batch of other users', async () => {
    const { store, append } = await setup();
    const hostile = await append('yan', runEvents('t\udc00x', 'r\ud800y', 'hi', ['a']));
    const fine = await append('xia', runEvents('t1', 'r1', 'hi', ['b']));
    await store.idle();
    expect(await archivedSeqs('yan')).toEqual(range(1, hostile.length));
    expect(await archivedSeqs('xia')).toEqual(range(1, fine.length));
    expect(store.stats).toMatchObject({ failedBatches: 0 });
    const { rows } = await admin.query<{ thread_id: string; run_id: string }>('SELECT DISTINCT thread_id, run_id FROM agentwire_events WHERE user_id = $1', [
      'yan',
    ]);
    expect(rows).toEqual([{ thread_id: 't\uFFFDx', run_id: 'r\uFFFDy' }]);
  });

  it('skips events whose thread or run id holds U+0000 (from a hostile log: PostgreSQL cannot hold it), without failing the batch of other users', async () => {
    const { store, append } = await setup();
    await append('ulla', runEvents('t\u0000x', 'r1', 'hi', ['a']));
    await append('ulla', runEvents('t2', 'r\u0000y', 'hi', ['a']));
    const fine = await append('vic', runEvents('t1', 'r1', 'hi', ['b']));
    await store.idle();
    expect(await archivedSeqs('ulla')).toEqual([]);
    expect(await archivedSeqs('vic')).toEqual(range(1, fine.length));
    expect(store.stats).toMatchObject({ failedBatches: 0 });
  });

  it("skips an event nested deeper than PostgreSQL's JSON parser takes (from a hostile log), without failing the batch of other users", async () => {
    const { store, engine, append } = await setup();
    const entries = await engine.append('wil', runEvents('t1', 'r1', 'hi', ['a']));
    // The log's second entry as a hostile log could hold it: the same event, nested 20,000 deep.
    const deep = `${entries[1]!.json.slice(0, -1)},"extra":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    store.record(
      'wil',
      entries.map((entry, i) => (i === 1 ? { ...entry, json: deep } : entry)),
    );
    const fine = await append('xan', runEvents('t1', 'r1', 'hi', ['b']));
    await store.idle();
    expect(await archivedSeqs('wil')).toEqual(range(1, entries.length).filter((seq) => seq !== 2));
    expect(await archivedSeqs('xan')).toEqual(range(1, fine.length));
    expect(store.stats).toMatchObject({ failedBatches: 0 });
  });

  it('answers a streaming run as far as it is archived, and the seam gives exactly the rest', async () => {
    const { store, engine, append } = await setup();
    const events = runEvents('t1', 'r1', 'stream it', ['The ', 'answer ', 'is ', 'long.']);
    const cut = 7; // started, 2 thinking, tool call and result, 2 deltas
    await append('erin', events.slice(0, cut));
    await store.idle();
    const page = (await store.messages('erin', 't1', { limit: 50 }))!;
    const answer = page.items[1] as AssistantMessageView;
    expect(answer).toMatchObject({ status: 'running', text: 'The answer ', completedAt: null });
    expect(page.lastSeq).toBe(cut);
    await append('erin', events.slice(cut));
    const rest = await engine.read('erin', page.lastSeq + 1, Number.MAX_SAFE_INTEGER);
    const resumed =
      answer.text +
      rest
        .filter((e) => e.type === 'agent_text_delta')
        .map((e) => JSON.parse(e.json).text)
        .join('');
    expect(resumed).toBe('The answer is long.');
  });

  it('answers only up to the newest seq before a hole, and moves on once the hole is archived', async () => {
    const { store, engine, waiters } = await setup({ holeGraceMs: 600_000 });
    const entries = await engine.append('fay', runEvents('t1', 'r1', 'holes', ['a', 'b', 'c']));
    // Another node's events (seq 3..4) are not archived yet: the answer stops before them.
    store.record('fay', [...entries.slice(0, 2), ...entries.slice(4)]);
    await waiters.until(() => store.stats.archived === entries.length - 2, 5000, 'archived around the hole');
    const before = (await store.messages('fay', 't1', { limit: 50 }))!;
    expect(before.lastSeq).toBe(2);
    expect(before.items[1]).toMatchObject({ status: 'running', text: '', thinking: ['let me '] });
    // The other node's write lands: the mark walks over everything archived after it.
    store.record('fay', entries.slice(2, 4));
    await waiters.until(() => store.stats.archived === entries.length, 5000, 'hole archived');
    const after = (await store.messages('fay', 't1', { limit: 50 }))!;
    expect(after.lastSeq).toBe(entries.length);
    expect(after.items[1]).toMatchObject({ status: 'completed', text: 'abc' });
    expect(await archivedSeqs('fay')).toEqual(range(1, entries.length));
  });

  it('fills a hole nobody else fills from the log after the grace', async () => {
    const { store, engine } = await setup({ holeGraceMs: 20 });
    const entries = await engine.append('hal', runEvents('t1', 'r1', 'holes', ['a', 'b', 'c']));
    store.record('hal', [...entries.slice(0, 2), ...entries.slice(4)]);
    await store.idle();
    expect(await archivedSeqs('hal')).toEqual(range(1, entries.length));
    expect((await store.messages('hal', 't1', { limit: 50 }))!.lastSeq).toBe(entries.length);
    expect(store.stats).toMatchObject({ lost: 0, caughtUp: 2 });
  });

  it('catches a backlog up from the log at most 2000 entries a read, however large its batches may be', async () => {
    const { store, engine, append } = await setup({ batchEvents: 5000, queueEvents: 1, holeGraceMs: 0 });
    const reads: number[] = [];
    const read = engine.read.bind(engine);
    engine.read = (userId, from, to) => {
      reads.push(to - from + 1);
      return read(userId, from, to);
    };
    const base = { run_id: 'r1', thread_id: 't1' };
    const events: EventBody[] = [{ ...base, ts: ts(), type: 'agent_started', message_id: 'm1', text: 'hi' }];
    for (let i = 0; i < 4500; i++) events.push({ ...base, ts: ts(), type: 'agent_thinking', text: `step ${i}` });
    await append('ike', events);
    await store.idle();
    expect(await archivedSeqs('ike')).toEqual(range(1, events.length));
    expect(store.stats.dropped).toBeGreaterThan(0);
    expect(Math.max(...reads)).toBeLessThanOrEqual(2000);
  });

  it('drops and counts what does not fit the queue, and archives it from the log', async () => {
    const { store, append } = await setup({ queueEvents: 3 });
    let total = 0;
    for (let run = 0; run < 5; run++) total += (await append('gus', runEvents('t1', `r${run}`, `q${run}`, ['x', 'y']))).length;
    await store.idle();
    expect(store.stats.dropped).toBeGreaterThan(0);
    expect(await archivedSeqs('gus')).toEqual(range(1, total));
    expect(store.stats.lost).toBe(0);
    const page = (await store.messages('gus', 't1', { limit: 50 }))!;
    expect(page.items).toHaveLength(10);
    expect(page.lastSeq).toBe(total);
  });
});

describe('thread deletion against the archive', () => {
  /** The user's rows in every table a deletion erases, and whether the thread's tombstone is there. */
  async function rowsOf(userId: string, threadId: string): Promise<Record<string, number>> {
    const { rows } = await admin.query<Record<string, number>>(
      `SELECT (SELECT count(*)::int FROM agentwire_events WHERE user_id = $1 AND thread_id = $2) AS events,
              (SELECT count(*)::int FROM agentwire_runs WHERE user_id = $1 AND thread_id = $2) AS runs,
              (SELECT count(*)::int FROM agentwire_threads WHERE user_id = $1 AND thread_id = $2) AS threads,
              (SELECT count(*)::int FROM agentwire_deleted_threads WHERE user_id = $1 AND thread_id = $2) AS tombstones`,
      [userId, threadId],
    );
    return rows[0]!;
  }

  it("erases a thread of the user's first archive batch while that batch is in flight: the deletion waits for it", async () => {
    const { store, append } = await setup();
    // An uncommitted row of the same thread, from a connection of the test's own, holds the
    // batch at its thread upsert: its events are inserted (the tombstone check passed) and its
    // newly created mark row is not committed yet.
    const holder = new pg.Client({ connectionString: database.url });
    await holder.connect();
    let deleted: boolean;
    let waiting: unknown[];
    try {
      await holder.query('BEGIN');
      await holder.query(
        `INSERT INTO agentwire_threads (user_id, thread_id, title, title_epoch_id, title_seq, created_at, updated_at,
                                        last_run_id, last_run_status, last_epoch_id, last_seq)
         VALUES ('ivy', 't1', 'held', 0, 0, now(), now(), 'r0', 'running', 0, 0)`,
      );
      const { rows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await append('ivy', runEvents('t1', 'r1', 'delete me', ['gone']));
      const [batch, ...others] = await backendsBlockedBy(admin, rows[0]!.pid);
      expect(others).toEqual([]);
      expect(batch!.query).toMatch(/INSERT INTO agentwire_threads/);

      let settled = false;
      const deletion = store.deleteThread('ivy', 't1').finally(() => (settled = true));
      // Either the deletion waits for the batch (it must), or it ends without waiting: the race,
      // where its SELECT … FOR UPDATE finds no committed mark row, it erases nothing, and the
      // batch commits the thread after it.
      waiting = await backendsBlockedBy(admin, batch!.pid, { settled: () => settled });
      await holder.query('ROLLBACK');
      deleted = await deletion;
      await store.idle();
    } finally {
      await holder.end();
    }
    expect(store.stats).toMatchObject({ failedBatches: 0, lost: 0 });
    // The batch committed, and the deleted thread is not back:
    expect(await rowsOf('ivy', 't1')).toEqual({ events: 0, runs: 0, threads: 0, tombstones: 1 });
    expect((await store.listThreads('ivy', { limit: 5 })).items).toEqual([]);
    expect(await store.messages('ivy', 't1', { limit: 50 })).toBeNull();
    // the deletion waited for the batch and erased what it wrote.
    expect({ waitedForTheBatch: waiting.length, deleted }).toEqual({ waitedForTheBatch: 1, deleted: true });
  });

  // Event times are the gateways' clocks, the tombstone's deleted_at was the database server's:
  // a gateway ahead of the database had the deleted thread's late write-behind archived after the
  // deletion (the thread came back), one behind had the thread's next events dropped.
  it('a deletion covers the thread’s events by log position, whatever the times stamped on them', async () => {
    const { store, engine, append } = await setup();
    const hour = 3_600_000;
    const stamped = (events: EventBody[], offsetMs: number) => events.map((event) => ({ ...event, ts: new Date(Date.now() + offsetMs).toISOString() }));
    // Appended an hour "ahead", handed to the archive only after the deletion (write-behind lag).
    const late = await engine.append('kim', stamped(runEvents('t1', 'r1', 'deleted words', ['gone']), hour));
    expect(await store.deleteThread('kim', 't1')).toBe(false);
    store.record('kim', late);
    await store.idle();
    expect(await rowsOf('kim', 't1')).toMatchObject({ events: 0, runs: 0, threads: 0 });
    // Said after the deletion, stamped an hour "behind": the thread's history again.
    await append('kim', stamped(runEvents('t1', 'r2', 'new words', ['kept']), -hour));
    await store.idle();
    expect(store.stats).toMatchObject({ failedBatches: 0, lost: 0 });
    expect((await store.listThreads('kim', { limit: 5 })).items.map((t) => [t.threadId, t.title])).toEqual([['t1', 'new words']]);
    expect((await store.messages('kim', 't1', { limit: 50 }))!.items.map((m) => m.text)).toEqual(['new words', 'kept']);
  });

  it('a deletion before the user is archived leaves a mark of nothing archived, which write-behind and catch-up move on from', async () => {
    const { store, engine, append } = await setup({ queueEvents: 3 });
    expect(await store.deleteThread('jay', 't0')).toBe(false);
    const { rows } = await admin.query('SELECT epoch_id::int, seq::int FROM agentwire_archive_marks WHERE user_id = $1', ['jay']);
    expect(rows).toEqual([{ epoch_id: 0, seq: 0 }]);
    let total = 0;
    for (let run = 0; run < 3; run++) total += (await append('jay', runEvents('t1', `r${run}`, `q${run}`, ['x', 'y']))).length;
    await store.idle();
    // Some did not fit the queue: archived by catch-up from the log, from seq 1.
    expect(store.stats.dropped).toBeGreaterThan(0);
    expect(store.stats.lost).toBe(0);
    expect(await archivedSeqs('jay')).toEqual(range(1, total));
    const page = (await store.messages('jay', 't1', { limit: 50 }))!;
    const head = await engine.head('jay');
    expect({ epoch: page.epoch, lastSeq: page.lastSeq }).toEqual({ epoch: head.epoch, lastSeq: total });
    expect(page.items.filter((m) => m.role === 'assistant').map((m) => (m as AssistantMessageView).status)).toEqual(['completed', 'completed', 'completed']);
  });
});
