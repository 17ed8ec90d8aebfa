import type { ClientBase, Pool } from 'pg';
import type { Logger } from '../observability/logger.js';
import { withClient } from './client.js';

/** One schema change; `version`s rise by 1 and a released migration never changes. */
interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/**
 * An index built by `CREATE INDEX CONCURRENTLY` (writes go on while it builds) in the background
 * after start-up (`buildIndexes`). Not a schema version: queries work without it, only slower, so
 * an older agentwire works with it as without it, and a recorded version would make that older
 * node refuse the database (a rollback, or an old node restarting mid-rollout) for an index
 * alone. Each start looks it up in the catalog instead. A migration must not lock its table:
 * waiting for a build in progress on another node, it would deadlock with that build's wait for
 * its transaction.
 */
interface BackgroundIndex {
  readonly name: string;
  /** What follows `CREATE INDEX CONCURRENTLY <name>`. */
  readonly on: string;
}

/**
 * The history schema (see docs/DEPLOYMENT.md "PostgreSQL"):
 * - `agentwire_events`: every archived event as sent on the wire, once per (user, epoch, seq).
 * - `agentwire_epochs`: a user's log epochs, numbered in the order they were first archived, so
 *   events order by (epoch_id, seq) across a log that was lost and began again at seq 1.
 * - `agentwire_runs`: one row per started run (the user message and its position); the run's
 *   folded answer is stored once its terminal event is covered by the user's archive mark, so a
 *   page of finished runs is read without folding their deltas again.
 * - `agentwire_threads`: one row per thread for the thread list (title, times, last run).
 * - `agentwire_archive_marks`: per user, the newest (epoch, seq) up to which every event is
 *   archived (or known lost): the `epoch`/`last_seq` seam of the messages route. Also the lock
 *   that serialises a user's archive batches and thread deletions; (0, 0) (nothing archived) when
 *   a deletion created it.
 * - `agentwire_deleted_threads`: events of a deleted thread up to its deletion, and any event of
 *   the runs the deletion ended (`run_ids`), are not archived again (write-behind and catch-up
 *   may still hold some). Since version 2 "up to its deletion" is a log position within the
 *   epoch of the deletion (`epoch`, `seq`: the user's log head then); events of another epoch
 *   (the log was lost in between), and every event against a version 1 row, compare times.
 * - `agentwire_events_by_thread` (BACKGROUND_INDEXES, built after start-up, not a version).
 */
const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'history archive',
    sql: `
      CREATE TABLE agentwire_epochs (
        epoch_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id text NOT NULL,
        epoch text NOT NULL,
        UNIQUE (user_id, epoch)
      );
      CREATE TABLE agentwire_events (
        user_id text NOT NULL,
        epoch_id bigint NOT NULL,
        seq bigint NOT NULL,
        thread_id text NOT NULL,
        run_id text NOT NULL,
        type text NOT NULL,
        event text NOT NULL,
        PRIMARY KEY (user_id, epoch_id, seq)
      );
      CREATE TABLE agentwire_runs (
        user_id text NOT NULL,
        thread_id text NOT NULL,
        run_id text NOT NULL,
        epoch_id bigint NOT NULL,
        start_seq bigint NOT NULL,
        message_id text NOT NULL,
        user_text text NOT NULL,
        created_at timestamptz NOT NULL,
        final_epoch_id bigint,
        final_seq bigint,
        answer jsonb,
        PRIMARY KEY (user_id, thread_id, run_id)
      );
      CREATE INDEX agentwire_runs_by_position ON agentwire_runs (user_id, thread_id, epoch_id, start_seq);
      CREATE TABLE agentwire_threads (
        user_id text NOT NULL,
        thread_id text NOT NULL,
        title text NOT NULL,
        title_epoch_id bigint NOT NULL,
        title_seq bigint NOT NULL,
        renamed boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        last_run_id text NOT NULL,
        last_run_status text NOT NULL,
        last_epoch_id bigint NOT NULL,
        last_seq bigint NOT NULL,
        PRIMARY KEY (user_id, thread_id)
      );
      CREATE INDEX agentwire_threads_by_update ON agentwire_threads (user_id, updated_at DESC, thread_id DESC);
      CREATE TABLE agentwire_archive_marks (
        user_id text PRIMARY KEY,
        epoch_id bigint NOT NULL,
        seq bigint NOT NULL
      );
      CREATE TABLE agentwire_deleted_threads (
        user_id text NOT NULL,
        thread_id text NOT NULL,
        deleted_at timestamptz NOT NULL,
        run_ids text[] NOT NULL DEFAULT '{}',
        PRIMARY KEY (user_id, thread_id)
      );
    `,
  },
  {
    // A tombstone compared event times (the gateways' clocks) with deleted_at (the database
    // server's): with a gateway behind the database, a thread id used again right after its
    // deletion was never archived; with one ahead, late events of the deleted thread were.
    version: 2,
    name: 'deleted threads by log position',
    sql: `
      ALTER TABLE agentwire_deleted_threads ADD COLUMN epoch text, ADD COLUMN seq bigint;
    `,
  },
];

/**
 * A thread's events in log order: deleting a thread (else a scan of all its user's events) and
 * reading a run's events between its start and the next run's start on its thread (else every
 * thread's events in that range).
 */
const BACKGROUND_INDEXES: readonly BackgroundIndex[] = [{ name: 'agentwire_events_by_thread', on: 'ON agentwire_events (user_id, thread_id, epoch_id, seq)' }];

/** The key of the advisory lock every node takes around migrating (a fixed number of agentwire's). */
const MIGRATION_LOCK = '7020302738838757733';
/**
 * The key of the advisory lock of the node building indexes: another one, so a node starting
 * meanwhile migrates without waiting for a build (the build would wait for its snapshot: a deadlock).
 */
const INDEX_BUILD_LOCK = '7020302738838757734';

/** The newest schema version this build knows. */
export const SCHEMA_VERSION = MIGRATIONS.at(-1)!.version;

/**
 * Brings the schema to SCHEMA_VERSION (its background indexes are `buildIndexes`'s): under a
 * session advisory lock, so nodes starting at once migrate one after the other (the later
 * ones find nothing to do); each migration and its row in `agentwire_schema_migrations` commit
 * together, so a crash leaves no half-applied version. Returns the versions this call applied. A
 * database newer than this build is refused.
 */
export function migrate(pool: Pool): Promise<number[]> {
  return withClient(pool, async (client) => {
    // Session-level: a failure closes the connection (withClient), which also ends the lock.
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    // Created under the lock: two concurrent CREATE TABLE IF NOT EXISTS can both fail on pg_type.
    await client.query(`CREATE TABLE IF NOT EXISTS agentwire_schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ version: number }>('SELECT version FROM agentwire_schema_migrations');
    const applied = new Set(rows.map((row) => row.version));
    const newest = Math.max(0, ...applied);
    if (newest > SCHEMA_VERSION) {
      throw new Error(`the database schema is version ${newest}, newer than this agentwire (${SCHEMA_VERSION}); upgrade agentwire`);
    }
    const done: number[] = [];
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      await client.query('BEGIN');
      try {
        await client.query(migration.sql);
        await client.query('INSERT INTO agentwire_schema_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK');
        throw error;
      }
      done.push(migration.version);
    }
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
    return done;
  });
}

/** The background indexes that are missing or invalid. */
async function pendingIndexes(client: ClientBase): Promise<BackgroundIndex[]> {
  const pending: BackgroundIndex[] = [];
  for (const index of BACKGROUND_INDEXES) if ((await indexValidity(client, index.name)) !== true) pending.push(index);
  return pending;
}

/**
 * Builds the background indexes that are missing or invalid (after `migrate`, on `client`: a
 * connection of its own, as this sets its session's timeouts and holds a session lock; close it
 * on failure). Outside any transaction, as `CREATE INDEX CONCURRENTLY` must be; it waits for every
 * transaction that writes the table or has an older snapshot, so it holds no migration lock a
 * starting node waits on. Only the node that takes the build lock builds; the others go on
 * without. An invalid index (a build that crashed or was cancelled) is dropped and built again; a
 * valid one is kept, however it was made. Returns the names of the indexes it built; rejects on a
 * failed build, which the next start tries again.
 */
export async function buildIndexes(client: ClientBase, logger: Logger): Promise<string[]> {
  if ((await pendingIndexes(client)).length === 0) return [];
  const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [INDEX_BUILD_LOCK]);
  if (!rows[0]!.locked) {
    logger.info('postgres: another node is building the history indexes');
    return [];
  }
  // A build takes as long as the table needs, not a query's deadline; and it waits for older
  // transactions as lock waits, which a lock_timeout set on the database or role would cancel.
  await client.query('SET statement_timeout = 0; SET lock_timeout = 0');
  const built: string[] = [];
  // Again under the lock: the node that held it may have built them meanwhile.
  for (const index of await pendingIndexes(client)) {
    const started = performance.now();
    if ((await indexValidity(client, index.name)) === false) {
      logger.warn({ index: index.name }, 'postgres: dropping an invalid index an interrupted build left');
      await client.query(`DROP INDEX CONCURRENTLY ${index.name}`);
    }
    logger.info({ index: index.name }, 'postgres: building an index in the background (CREATE INDEX CONCURRENTLY); the node serves meanwhile');
    await client.query(`CREATE INDEX CONCURRENTLY ${index.name} ${index.on}`);
    logger.info({ index: index.name, durationMs: Math.round(performance.now() - started) }, 'postgres: index ready');
    built.push(index.name);
  }
  await client.query('SELECT pg_advisory_unlock($1)', [INDEX_BUILD_LOCK]);
  return built;
}

/** Whether the index is valid (usable by queries); undefined when there is none. */
async function indexValidity(client: ClientBase, index: string): Promise<boolean | undefined> {
  const { rows } = await client.query<{ valid: boolean }>('SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass($1)', [index]);
  return rows[0]?.valid;
}
