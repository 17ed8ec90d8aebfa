import pg from 'pg';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import { migrate } from '../../src/postgres/migrations.js';
import { backendsBlockedBy, createTestDatabase } from '../helpers/postgres.js';
import { Waiters, within } from '../helpers/waitFor.js';

// The history indexes built concurrently in the background after start-up, against the machine's
// PostgreSQL 15, one fresh database per test.

const INDEX = 'agentwire_events_by_thread';
/** What the store runs to delete a thread's events (store.ts, deleteThread). */
const DELETE_THREAD_EVENTS = 'DELETE FROM agentwire_events WHERE user_id = $1 AND thread_id = $2';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A fresh database and a pool on it (a pool's 'error' when the database is dropped is expected). */
async function freshDatabase(): Promise<{ url: string; pool: pg.Pool }> {
  const database = await createTestDatabase();
  const pool = new pg.Pool({ connectionString: database.url, max: 4 });
  pool.on('error', () => {});
  cleanups.push(async () => {
    await pool.end();
    await database.drop();
  });
  return { url: database.url, pool };
}

/** A pino logger at info whose messages the test reads. */
function captureLogger(): { logger: Logger; messages: string[] } {
  const messages: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void messages.push((JSON.parse(line) as { msg: string }).msg) });
  return { logger, messages };
}

/** A store on `url` that is ready and available (its index build may go on). */
async function startStore(url: string, logger?: Logger): Promise<PostgresHistoryStore> {
  const engine = new MemoryEngine({ retentionEvents: 1000 });
  const waiters = new Waiters();
  const store = new PostgresHistoryStore({ url, engine, logger, onChange: () => waiters.notify() });
  cleanups.push(async () => {
    await store.close();
    await engine.close();
  });
  await within(store.ready(), 'store ready');
  await waiters.until(() => store.available, 5000, 'store available');
  return store;
}

/** The thread index: its oid, validity and definition; undefined while there is none. */
async function threadIndex(pool: pg.Pool): Promise<{ oid: number; valid: boolean; definition: string } | undefined> {
  const { rows } = await pool.query<{ oid: number; valid: boolean; definition: string }>(
    `SELECT i.indexrelid::int AS oid, i.indisvalid AS valid, pg_get_indexdef(i.indexrelid) AS definition
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1`,
    [INDEX],
  );
  expect(rows.length).toBeLessThanOrEqual(1);
  return rows[0];
}

async function recordedVersions(pool: pg.Pool): Promise<number[]> {
  const { rows } = await pool.query<{ version: number }>('SELECT version FROM agentwire_schema_migrations ORDER BY version');
  return rows.map((row) => row.version);
}

/**
 * A connection in a transaction that wrote to agentwire_events and stays open until `end()`: a
 * concurrent index build waits for it before it goes on.
 */
async function openWriter(url: string): Promise<{ pid: number; end: () => Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  await client.query('BEGIN');
  await client.query(`INSERT INTO agentwire_events VALUES ('writer', 1, 1, 't', 'r', 'agent_text_delta', '{}')`);
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  let ended = false;
  const end = async () => {
    if (ended) return;
    ended = true;
    await client.query('ROLLBACK');
    await client.end();
  };
  cleanups.push(end);
  return { pid: rows[0]!.pid, end };
}

/** Waits until a `CREATE INDEX CONCURRENTLY` is waiting for backend `pid`; returns the waiter's pid. */
async function buildWaitingFor(pool: pg.Pool, pid: number): Promise<number> {
  const blocked = await backendsBlockedBy(pool, pid, { timeoutMs: 10_000 });
  const build = blocked.find((backend) => /CREATE INDEX CONCURRENTLY/i.test(backend.query));
  expect(build, `a concurrent index build among ${JSON.stringify(blocked)}`).toBeDefined();
  return build!.pid;
}

describe('the thread index (built concurrently after start-up)', () => {
  it('is built and valid after start-up, not as a schema version (older nodes keep working), and deleting a thread uses it', async () => {
    const { url, pool } = await freshDatabase();
    const store = await startStore(url);
    expect(await within(store.indexesBuilt(), 'index build')).toEqual([INDEX]);
    expect(await threadIndex(pool)).toMatchObject({ valid: true, definition: expect.stringContaining('(user_id, thread_id, epoch_id, seq)') });
    expect(await recordedVersions(pool)).toEqual([1, 2]);
    // A heavy user: 20 000 events over 100 threads; the deletion of one is an index lookup, not a
    // scan of the user's events.
    await pool.query(`INSERT INTO agentwire_events (user_id, epoch_id, seq, thread_id, run_id, type, event)
      SELECT 'heavy', 1, s, 'thread-' || (s / 20 % 100), 'run-' || (s / 20), 'agent_text_delta', '{}' FROM generate_series(1, 20000) s`);
    await pool.query('ANALYZE agentwire_events');
    const { rows } = await pool.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${DELETE_THREAD_EVENTS.replace('$1', `'heavy'`).replace('$2', `'thread-7'`)}`);
    const plan = rows.map((row) => row['QUERY PLAN']).join('\n');
    // An index scan or a bitmap one, on this index with both columns as its condition.
    expect(plan).toMatch(
      /Index Scan (using|on) agentwire_events_by_thread .*\n\s+Index Cond: \(\(user_id = 'heavy'::text\) AND \(thread_id = 'thread-7'::text\)\)/,
    );
  });

  it('an invalid index left by an interrupted concurrent build is dropped and built again at the next start', async () => {
    const { url, pool } = await freshDatabase();
    await migrate(pool);
    // A build cancelled while it waits for a writer leaves its index behind, invalid.
    const writer = await openWriter(url);
    const builder = new pg.Client({ connectionString: url });
    await builder.connect();
    cleanups.push(() => builder.end());
    // Settled at once into its outcome: its failure comes before the test awaits it.
    const build = builder.query(`CREATE INDEX CONCURRENTLY ${INDEX} ON agentwire_events (user_id, thread_id)`).then(
      () => 'built',
      (error: Error) => error.message,
    );
    const buildPid = await buildWaitingFor(pool, writer.pid);
    await pool.query('SELECT pg_cancel_backend($1)', [buildPid]);
    expect(await build).toMatch(/canceling statement/);
    await writer.end();
    const interrupted = await threadIndex(pool);
    expect(interrupted).toMatchObject({ valid: false });

    const { logger, messages } = captureLogger();
    const store = await startStore(url, logger);
    expect(await within(store.indexesBuilt(), 'index build')).toEqual([INDEX]);
    const rebuilt = await threadIndex(pool);
    expect(rebuilt).toMatchObject({ valid: true, definition: expect.stringContaining('(user_id, thread_id, epoch_id, seq)') });
    expect(rebuilt!.oid).not.toBe(interrupted!.oid);
    expect(await recordedVersions(pool)).toEqual([1, 2]);
    expect(messages).toContain('postgres: dropping an invalid index an interrupted build left');
  });

  it('a valid index already there is kept', async () => {
    const { url, pool } = await freshDatabase();
    await migrate(pool);
    await pool.query(`CREATE INDEX ${INDEX} ON agentwire_events (user_id, thread_id, epoch_id, seq)`);
    const before = await threadIndex(pool);
    const store = await startStore(url);
    expect(await within(store.indexesBuilt(), 'index build')).toEqual([]);
    expect(await threadIndex(pool)).toEqual(before);
    expect(await recordedVersions(pool)).toEqual([1, 2]);
  });

  it('two stores starting on a fresh database at once both come up, and one index is built', async () => {
    const { url, pool } = await freshDatabase();
    const loggers = [captureLogger(), captureLogger()];
    const stores = await Promise.all(loggers.map(({ logger }) => startStore(url, logger)));
    const built = await within(Promise.all(stores.map((store) => store.indexesBuilt())), 'index builds');
    expect(built.flat()).toEqual([INDEX]);
    expect(await threadIndex(pool)).toMatchObject({ valid: true });
    expect(await recordedVersions(pool)).toEqual([1, 2]);
    for (const { messages } of loggers) expect(messages.filter((message) => /failed/.test(message))).toEqual([]);
  });

  it('a node starting while another builds the index comes up without waiting for the build and leaves it alone', async () => {
    const { url, pool } = await freshDatabase();
    await migrate(pool);
    // The first node's build waits for this writer: it is still building while the second starts.
    const writer = await openWriter(url);
    const first = await startStore(url);
    await buildWaitingFor(pool, writer.pid);
    const building = await threadIndex(pool);
    expect(building).toMatchObject({ valid: false });

    const { logger, messages } = captureLogger();
    const second = await startStore(url, logger);
    expect(await within(second.indexesBuilt(), 'the second node’s index build')).toEqual([]);
    expect(messages).toContain('postgres: another node is building the history indexes');
    expect(await threadIndex(pool)).toEqual(building);

    await writer.end();
    expect(await within(first.indexesBuilt(), 'the first node’s index build')).toEqual([INDEX]);
    expect(await threadIndex(pool)).toEqual({ ...building, valid: true });
    expect(await recordedVersions(pool)).toEqual([1, 2]);
  });

  it('a build that fails is logged, the node stays available, and the next start builds it', async () => {
    const { url, pool } = await freshDatabase();
    await migrate(pool);
    const writer = await openWriter(url);
    const { logger, messages } = captureLogger();
    const first = await startStore(url, logger);
    // Cancelled by an operator (or ended by any error) while it waits for the writer.
    await pool.query('SELECT pg_cancel_backend($1)', [await buildWaitingFor(pool, writer.pid)]);
    expect(await within(first.indexesBuilt(), 'the failed build')).toEqual([]);
    expect(messages).toContain('postgres: building an index failed; history works without it (slower), and the next start builds it again');
    expect(first.available).toBe(true);
    expect(await threadIndex(pool)).toMatchObject({ valid: false });
    expect(await recordedVersions(pool)).toEqual([1, 2]);

    await writer.end();
    const next = await startStore(url);
    expect(await within(next.indexesBuilt(), 'the next start’s build')).toEqual([INDEX]);
    expect(await threadIndex(pool)).toMatchObject({ valid: true });
  });

  it('a lock_timeout set on the database does not cut the build short while it waits for a writer', async () => {
    // A concurrent build waits for older transactions as lock waits, which a lock_timeout set
    // on the database (or role) cancelled: every start left an invalid index and none was built.
    const { url, pool } = await freshDatabase();
    await migrate(pool);
    await pool.query(`ALTER DATABASE ${new URL(url).pathname.slice(1)} SET lock_timeout = '20ms'`);
    const writer = await openWriter(url);
    const { logger, messages } = captureLogger();
    const first = await startStore(url, logger);
    let buildEnded = false;
    void first.indexesBuilt().then(() => (buildEnded = true));
    const blocked = await backendsBlockedBy(pool, writer.pid, { settled: () => buildEnded, timeoutMs: 10_000 });
    const build = blocked.find((backend) => /CREATE INDEX CONCURRENTLY/i.test(backend.query));
    expect(build, `a concurrent index build among ${JSON.stringify(blocked)} (${messages.join('; ')})`).toBeDefined();
    // Polled until it has waited ten times the lock timeout: it is still there, waiting.
    for (;;) {
      const { rows } = await pool.query<{ waited: boolean }>(
        `SELECT clock_timestamp() - query_start > interval '200 milliseconds' AS waited FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`,
        [build!.pid],
      );
      expect(rows, `the build waiting (${messages.join('; ')})`).toHaveLength(1);
      if (rows[0]!.waited) break;
    }
    await writer.end();
    expect(await within(first.indexesBuilt(), 'the build')).toEqual([INDEX]);
    expect(await threadIndex(pool)).toMatchObject({ valid: true });
  });

  it('a node closed during its build leaves the build to the server, and the next start keeps what it built', async () => {
    const { url, pool } = await freshDatabase();
    await migrate(pool);
    const writer = await openWriter(url);
    const first = await startStore(url);
    const buildPid = await buildWaitingFor(pool, writer.pid);
    await first.close();
    expect(await first.indexesBuilt()).toEqual([]);
    await writer.end();
    // The build's backend goes on without its client and ends after the build.
    for (const deadline = performance.now() + 10_000; ;) {
      const { rowCount } = await pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [buildPid]);
      if (rowCount === 0) break;
      if (performance.now() > deadline) throw new Error(`backend ${buildPid} still runs`);
    }
    const built = await threadIndex(pool);
    expect(built).toMatchObject({ valid: true });
    expect(await recordedVersions(pool)).toEqual([1, 2]);

    const next = await startStore(url);
    expect(await within(next.indexesBuilt(), 'the next start')).toEqual([]);
    expect(await threadIndex(pool)).toEqual(built);
  });
});
