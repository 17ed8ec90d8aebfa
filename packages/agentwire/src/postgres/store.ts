import pg from 'pg';
import { systemClock, type Clock, type LogEntry, type TimerHandle } from '@agentwire/protocol';
import type { EventEngine } from '../engine/types.js';
import {
  InvalidCursorError,
  type ArchiveProgress,
  type AssistantMessageView,
  type ConversationTurn,
  type HistoryStore,
  type MessageView,
  type MessagesPage,
  type Page,
  type PageRequest,
  type RunStatus,
  type ThreadSummary,
} from '../history/types.js';
import { silentLogger, type Logger } from '../observability/logger.js';
import { Archiver } from './archiver.js';
import { inTransaction } from './client.js';
import type { ArchiveStats } from './stats.js';
import { buildIndexes, migrate } from './migrations.js';
import { cutCharacters, MAX_TITLE_CHARACTERS, parseEvent } from '../history/fold.js';
import { foldRun, type RunView } from './runFold.js';
import { storableText } from './storable.js';
import { THREAD_ID } from '../protocol/index.js';
import { DEFAULTS } from '../config/settings.js';

/** Most run ids a thread's tombstone keeps (runs a deletion ended; a user has at most a few going at once). */
const MAX_TOMBSTONE_RUNS = 256;

/** How `createPostgresHistoryStore` connects, archives and bounds itself (settings in README.md). */
export interface PostgresHistoryStoreOptions {
  /** `postgres://…` (AGENTWIRE_DATABASE_URL). */
  readonly url: string;
  /** The log that catch-up reads back from (`read`, `head`). */
  readonly engine: Pick<EventEngine, 'read' | 'head'>;
  /** Connections at most (AGENTWIRE_DATABASE_POOL_SIZE). Default 10. */
  readonly poolSize?: number;
  /** Deadline of every statement (AGENTWIRE_DATABASE_STATEMENT_TIMEOUT_MS). Default 5000. */
  readonly statementTimeoutMs?: number;
  /** Events per archive transaction (AGENTWIRE_ARCHIVE_BATCH_EVENTS). Default: the setting's. */
  readonly batchEvents?: number;
  /** Bounds of the archive queue (AGENTWIRE_ARCHIVE_QUEUE_EVENTS / _BYTES). Defaults 100000 and 64 MiB. */
  readonly queueEvents?: number;
  readonly queueBytes?: number;
  /** A hole another node's archive left is filled from the log after this long. Default 1000 ms. */
  readonly holeGraceMs?: number;
  /** How often PostgreSQL is probed. Default 500 ms. */
  readonly probeIntervalMs?: number;
  readonly logger?: Logger;
  readonly clock?: Clock;
  /** Called after every change of `available` and after every archive step (tests wait on it). */
  readonly onChange?: () => void;
}

/** A dependency that does not answer a probe within this is unreachable (PROTOCOL.md section 10). */
const PROBE_DEADLINE_MS = 1000;
/** Concurrent archive transactions at most (PostgreSQL overlaps their round trips and commits). */
const MAX_WRITERS = 4;

interface ThreadRow {
  thread_id: string;
  title: string;
  created_at: Date;
  updated_at: Date;
  last_run_id: string;
  last_run_status: string;
}

interface RunRow {
  /** The run's archived events, when the query fetched them for folding. */
  events?: string[] | null;
  run_id: string;
  epoch_id: string;
  start_seq: string;
  message_id: string;
  user_text: string;
  created_at: Date;
  final_epoch_id: string | null;
  final_seq: string | null;
  answer: AssistantMessageView | null;
}

/** The largest (epoch_id, seq): "up to the end of the log". */
const LOG_END = ['9223372036854775807', '9223372036854775807'] as const;

/** Position of a message: its run's start and 0 for the user's message, 1 for the answer. */
type Position = readonly [epochId: number, seq: number, part: 0 | 1];

/**
 * The PostgreSQL history store (AGENTWIRE_DATABASE_URL): the log archived write-behind by
 * `record`, read back by the history routes. Every query is per user (`WHERE user_id = $1`),
 * parameterized, and bounded by the statement timeout. `ready()` resolves once the schema is
 * migrated; until then, and while PostgreSQL does not answer its probe within 1 s, `available`
 * is false (the gateway's `/readyz` is 503) and live traffic goes on: archiving catches up from
 * the log when PostgreSQL is back. Indexes are built after that, in the background (`indexesBuilt`).
 */
export class PostgresHistoryStore implements HistoryStore {
  readonly #pool: pg.Pool;
  /** The log: a deletion reads its head (the position its tombstone covers). */
  readonly #engine: Pick<EventEngine, 'head'>;
  /** Write-behind writers, each for its share of the users, so transactions of different users overlap. */
  readonly #archivers: Archiver[];
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #onChange: () => void;
  readonly #ready: Promise<void>;
  readonly #indexesBuilt: Promise<string[]>;
  /** The connection building indexes, while it does. */
  #indexClient: pg.Client | null = null;
  #migrated = false;
  #probeOk = false;
  #probeSentAt: number | null = null;
  #probeTimer: TimerHandle | null = null;
  /** `available` as last logged and reported to `onChange`. */
  #reportedAvailable = false;
  #closed = false;

  constructor(options: PostgresHistoryStoreOptions) {
    const statementTimeoutMs = options.statementTimeoutMs ?? 5000;
    this.#logger = options.logger ?? silentLogger;
    this.#clock = options.clock ?? systemClock;
    this.#onChange = options.onChange ?? (() => undefined);
    this.#engine = options.engine;
    this.#pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      // The server ends a statement past the deadline; the client gives up on a stalled server.
      statement_timeout: statementTimeoutMs,
      query_timeout: statementTimeoutMs + 1000,
      // Also the wait for a free connection. The probe is judged by its own 1 s deadline
      // (`available`), so a busy pool delays writes without failing them.
      connectionTimeoutMillis: statementTimeoutMs,
      idleTimeoutMillis: 30_000,
      application_name: 'agentwire',
    });
    // An idle connection that breaks (PostgreSQL restarted) is reported here; the pool drops it.
    this.#pool.on('error', (error) => this.#logger.warn({ err: error }, 'postgres: an idle connection failed'));
    const poolSize = options.poolSize ?? 10;
    // One connection is left for the routes' reads; a user's events always go to the same writer.
    const writers = Math.max(1, Math.min(MAX_WRITERS, poolSize - 1));
    this.#archivers = Array.from(
      { length: writers },
      () =>
        new Archiver({
          pool: this.#pool,
          engine: options.engine,
          limits: {
            batchEvents: options.batchEvents ?? DEFAULTS.archiveBatchEvents,
            queueEvents: Math.max(1, Math.floor((options.queueEvents ?? 100_000) / writers)),
            queueBytes: Math.max(1, Math.floor((options.queueBytes ?? 64 * 1024 * 1024) / writers)),
            maxBehind: Math.ceil(100_000 / writers),
            holeGraceMs: options.holeGraceMs ?? 1000,
          },
          logger: this.#logger,
          clock: this.#clock,
          isAvailable: () => this.available,
          onFailure: () => void this.#probe(),
          onStep: () => this.#onChange(),
        }),
    );
    this.#ready = this.#migrateUntilDone();
    this.#indexesBuilt = this.#ready.then(
      () => this.#buildIndexes(options.url, statementTimeoutMs),
      () => [],
    );
    this.#probeTimer = this.#clock.setInterval(() => void this.#probe(), options.probeIntervalMs ?? 500);
  }

  /**
   * Resolves once the schema is migrated and a first probe answered (retrying while PostgreSQL is
   * unreachable); rejects on a schema it cannot use.
   */
  ready(): Promise<void> {
    return this.#ready;
  }

  /**
   * Resolves once this node's background index builds ended, with the indexes it built: none
   * when the database had them, another node was building them, or the build failed (logged;
   * the next start tries again). `available` does not wait for them.
   */
  indexesBuilt(): Promise<string[]> {
    return this.#indexesBuilt;
  }

  get available(): boolean {
    if (this.#closed || !this.#migrated || !this.#probeOk) return false;
    return this.#probeSentAt === null || this.#clock.now() - this.#probeSentAt <= PROBE_DEADLINE_MS;
  }

  /** What the archive did since start. */
  get stats(): Readonly<ArchiveStats> & { readonly queued: number; readonly writing: number; readonly behind: number } {
    const total = { archived: 0, dropped: 0, lost: 0, caughtUp: 0, failedBatches: 0, queued: 0, writing: 0, behind: 0 };
    for (const archiver of this.#archivers) {
      for (const key of ['archived', 'dropped', 'lost', 'caughtUp', 'failedBatches'] as const) total[key] += archiver.stats[key];
      total.queued += archiver.queued;
      total.writing += archiver.writing;
      total.behind += archiver.behind;
    }
    return total;
  }

  archiveProgress(): ArchiveProgress {
    const { archived, lost, failedBatches, dropped, queued, writing, behind } = this.stats;
    return { archived, lost, failedBatches, dropped, lag: queued + writing, behind };
  }

  /** Resolves once everything recorded so far is archived or caught up (or PostgreSQL is unavailable). */
  idle(): Promise<void> {
    return Promise.all(this.#archivers.map((archiver) => archiver.idle())).then(() => undefined);
  }

  record(userId: string, entries: readonly LogEntry[]): void {
    if (!archivable(userId)) return;
    this.#archivers[writerOf(userId, this.#archivers.length)]!.record(userId, entries);
  }

  async listThreads(userId: string, page: PageRequest): Promise<Page<ThreadSummary>> {
    if (!archivable(userId)) return { items: [], nextCursor: null };
    const after = page.cursor === undefined ? null : decodeCursor(page.cursor, isThreadCursor);
    const { rows } = await this.#pool.query<ThreadRow>({
      name: 'agentwire_threads_page',
      text: `SELECT thread_id, title, created_at, updated_at, last_run_id, last_run_status
         FROM agentwire_threads
        WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (updated_at, thread_id) < ($2::timestamptz, $3::text))
        ORDER BY updated_at DESC, thread_id DESC
        LIMIT $4`,
      values: [userId, after?.[0] ?? null, after?.[1] ?? null, page.limit + 1],
    });
    const items = rows.slice(0, page.limit).map(threadSummary);
    const last = rows.length > page.limit ? rows[page.limit - 1]! : undefined;
    return { items, nextCursor: last ? encodeCursor([last.updated_at.toISOString(), last.thread_id]) : null };
  }

  async messages(userId: string, threadId: string, page: PageRequest): Promise<MessagesPage | null> {
    if (!archivable(userId)) return null;
    const before = page.cursor === undefined ? null : decodeCursor(page.cursor, isPositionCursor);
    // The cursor's own run is fetched again (its user message may still be older): one more, so a
    // full fetch still means older runs may follow.
    const runsWanted = Math.ceil(page.limit / 2) + 1 + (before ? 1 : 0);
    // One round trip: the thread's existence, the user's archive mark, the page's runs, and the
    // events of those whose stored answer the mark does not cover (a run still streaming), each
    // up to the next run's start or the mark (see #runViews). The answer includes exactly the
    // events up to the mark: every one of them is archived, so a client that resumes from it
    // receives exactly the rest.
    const { rows } = await this.#pool.query<{ epoch: string | null; mark_epoch_id: string | null; mark_seq: string | null } & Partial<RunRow>>({
      name: 'agentwire_messages_page',
      text: `SELECT h.epoch, h.mark_epoch_id, h.mark_seq, r.*, f.events
         FROM (SELECT ep.epoch, m.epoch_id AS mark_epoch_id, m.seq AS mark_seq
                 FROM agentwire_threads t
                 LEFT JOIN agentwire_archive_marks m ON m.user_id = t.user_id
                 LEFT JOIN agentwire_epochs ep ON ep.epoch_id = m.epoch_id
                WHERE t.user_id = $1 AND t.thread_id = $2) h
         LEFT JOIN LATERAL (
           SELECT p.*, lag(p.epoch_id) OVER newest_first AS next_epoch_id, lag(p.start_seq) OVER newest_first AS next_seq
             FROM (SELECT run_id, epoch_id, start_seq, message_id, user_text, created_at, final_epoch_id, final_seq, answer
                     FROM agentwire_runs
                    WHERE user_id = $1 AND thread_id = $2
                      AND (epoch_id, start_seq) <= (coalesce(h.mark_epoch_id, 0), coalesce(h.mark_seq, 0))
                      AND ($3::bigint IS NULL OR (epoch_id, start_seq) <= ($3::bigint, $4::bigint))
                    ORDER BY epoch_id DESC, start_seq DESC
                    LIMIT $5) p
           WINDOW newest_first AS (ORDER BY p.epoch_id DESC, p.start_seq DESC)) r ON true
         LEFT JOIN LATERAL (
           SELECT array_agg(e.event ORDER BY e.epoch_id, e.seq) AS events
             FROM agentwire_events e
            WHERE NOT (r.answer IS NOT NULL AND r.final_seq IS NOT NULL AND (r.final_epoch_id, r.final_seq) <= (h.mark_epoch_id, h.mark_seq))
              AND e.user_id = $1
              AND (e.epoch_id, e.seq) >= (r.epoch_id, r.start_seq)
              AND (e.epoch_id, e.seq) <= (coalesce(r.next_epoch_id, h.mark_epoch_id), coalesce(r.next_seq, h.mark_seq))
              AND e.thread_id = $2 AND e.run_id = r.run_id) f ON true
        ORDER BY r.epoch_id DESC, r.start_seq DESC`,
      values: [userId, threadId, before?.[0] ?? null, before?.[1] ?? null, runsWanted],
    });
    const head = rows[0];
    if (!head) return null;
    const mark = { epochId: Number(head.mark_epoch_id ?? 0), seq: Number(head.mark_seq ?? 0) };
    const runs = rows.filter((row): row is typeof row & RunRow => row.run_id != null);
    const views = await this.#runViews(userId, threadId, runs, mark);
    // Newest first, strictly older than the cursor; then the page is turned oldest first.
    const newestFirst: Array<{ position: Position; message: MessageView }> = [];
    for (const run of runs) {
      const view = views.get(run.run_id)!;
      const epochId = Number(run.epoch_id);
      const seq = Number(run.start_seq);
      newestFirst.push({ position: [epochId, seq, 1], message: view.assistant }, { position: [epochId, seq, 0], message: view.user });
    }
    const older = before ? newestFirst.filter(({ position }) => comparePositions(position, before) < 0) : newestFirst;
    const taken = older.slice(0, page.limit);
    const more = older.length > page.limit || (runs.length === runsWanted && taken.length === page.limit);
    return {
      items: taken.map(({ message }) => message).reverse(),
      nextCursor: more && taken.length > 0 ? encodeCursor(taken.at(-1)!.position) : null,
      epoch: head.epoch ?? '',
      lastSeq: mark.seq,
    };
  }

  async renameThread(userId: string, threadId: string, title: string): Promise<ThreadSummary | null> {
    if (!archivable(userId)) return null;
    const { rows } = await this.#pool.query<ThreadRow>(
      `UPDATE agentwire_threads SET title = $3, renamed = true
        WHERE user_id = $1 AND thread_id = $2
        RETURNING thread_id, title, created_at, updated_at, last_run_id, last_run_status`,
      [userId, threadId, storableText(title)],
    );
    return rows[0] ? threadSummary(rows[0]) : null;
  }

  async deleteThread(userId: string, threadId: string, endingRunIds: readonly string[] = []): Promise<boolean> {
    if (!archivable(userId)) return false;
    // Where the user's log stands now: the thread's events up to it are the deleted ones. A log
    // position, not a time: event times are the gateways' clocks, now() is the database server's.
    // (Its epoch is not registered here: epoch ids are numbered in the order archived.)
    const head = await this.#engine.head(userId);
    return inTransaction(this.#pool, async (client) => {
      // The user's mark row is the lock archive batches take first (archiver.ts, lockMarks): a
      // batch in flight commits before the rows below are erased, a later one sees the tombstone.
      // Created as lockMarks does, so the user's first batch serialises too: while its own insert
      // of the row is uncommitted, a SELECT alone would find no row to wait for, but this insert
      // waits for that batch to end. A row made here is (0, 0), "nothing archived": a batch moves
      // it on to its epoch as from a mark of an older epoch, and catch-up reads from seq 1.
      await client.query('INSERT INTO agentwire_archive_marks (user_id, epoch_id, seq) VALUES ($1, 0, 0) ON CONFLICT DO NOTHING', [userId]);
      await client.query('SELECT 1 FROM agentwire_archive_marks WHERE user_id = $1 FOR UPDATE', [userId]);
      // The tombstone keeps write-behind and catch-up from archiving the thread's events again:
      // those up to the head read above (of another epoch: up to now), and any of the runs the
      // deletion ends (their last events come later). The ids it keeps are bounded: the newest
      // MAX_TOMBSTONE_RUNS.
      await client.query(
        `INSERT INTO agentwire_deleted_threads AS d (user_id, thread_id, deleted_at, run_ids, epoch, seq) VALUES ($1, $2, now(), $3, $4, $5)
         ON CONFLICT (user_id, thread_id) DO UPDATE SET deleted_at = now(),
           run_ids = (d.run_ids || EXCLUDED.run_ids)[greatest(1, cardinality(d.run_ids || EXCLUDED.run_ids) - ${MAX_TOMBSTONE_RUNS - 1}):],
           epoch = EXCLUDED.epoch,
           seq = CASE WHEN d.epoch = EXCLUDED.epoch THEN greatest(d.seq, EXCLUDED.seq) ELSE EXCLUDED.seq END`,
        [userId, threadId, endingRunIds.slice(-MAX_TOMBSTONE_RUNS).map(storableText), head.epoch, head.lastSeq],
      );
      const { rowCount } = await client.query('DELETE FROM agentwire_threads WHERE user_id = $1 AND thread_id = $2', [userId, threadId]);
      await client.query('DELETE FROM agentwire_runs WHERE user_id = $1 AND thread_id = $2', [userId, threadId]);
      await client.query('DELETE FROM agentwire_events WHERE user_id = $1 AND thread_id = $2', [userId, threadId]);
      return (rowCount ?? 0) > 0;
    });
  }

  async conversation(userId: string, threadId: string, maxTurns: number, beforeRunId?: string): Promise<ConversationTurn[]> {
    if (maxTurns <= 0 || !archivable(userId)) return [];
    const { rows: runs } = await this.#pool.query<RunRow>(
      `SELECT r.run_id, r.epoch_id, r.start_seq, r.message_id, r.user_text, r.created_at, r.final_epoch_id, r.final_seq, r.answer
         FROM agentwire_runs r
         LEFT JOIN agentwire_runs b ON b.user_id = r.user_id AND b.thread_id = r.thread_id AND b.run_id = $3
        WHERE r.user_id = $1 AND r.thread_id = $2 AND r.run_id IS DISTINCT FROM $3
          AND (b.run_id IS NULL OR (r.epoch_id, r.start_seq) < (b.epoch_id, b.start_seq))
        ORDER BY r.epoch_id DESC, r.start_seq DESC
        LIMIT $4`,
      [userId, threadId, beforeRunId ?? null, maxTurns],
    );
    const views = await this.#runViews(userId, threadId, runs, null);
    const turns: ConversationTurn[] = [];
    for (const run of [...runs].reverse()) {
      const view = views.get(run.run_id)!;
      turns.push({ role: 'user', text: view.user.text });
      const { text, toolCalls } = view.assistant;
      if (text !== '' || toolCalls.length > 0) turns.push({ role: 'assistant', text, ...(toolCalls.length > 0 ? { toolCalls } : {}) });
    }
    return turns.slice(-maxTurns);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#probeTimer) this.#clock.clearInterval(this.#probeTimer);
    // Its statement is not cancelled: the server finishes a build under way (a later start records
    // it) and ends the session after it, or leaves an invalid index that a later start builds again.
    const indexClient = this.#indexClient;
    this.#indexClient = null;
    await indexClient?.end();
    await Promise.all(this.#archivers.map((archiver) => archiver.close()));
    await this.#pool.end();
  }

  // The routes' queries are named: pg prepares each once per connection, so PostgreSQL plans
  // them once instead of on every request.

  /**
   * The runs' messages (`runs` newest first): a run whose folded answer the archive stored (and
   * that the mark covers) as stored; any other (running, or ended beyond the mark) folded from its
   * archived events up to the mark. Runs on one thread never overlap, so that is at most a few
   * runs of a page, and a run's events lie between its start and the next run's start: each is
   * read by a primary-key range of the user's log.
   */
  async #runViews(userId: string, threadId: string, runs: readonly RunRow[], mark: { epochId: number; seq: number } | null): Promise<Map<string, RunView>> {
    const views = new Map<string, RunView>();
    const toFold: Array<{ run: RunRow; until: readonly [string, string] }> = [];
    const end = mark ? ([String(mark.epochId), String(mark.seq)] as const) : LOG_END;
    runs.forEach((run, index) => {
      const stored = run.answer !== null && run.final_seq !== null;
      const covered = stored && (mark === null || comparePositions([Number(run.final_epoch_id), Number(run.final_seq), 0], [mark.epochId, mark.seq, 0]) <= 0);
      if (covered && isAssistantView(run.answer)) {
        views.set(run.run_id, { user: userView(run), assistant: run.answer });
        return;
      }
      if (Array.isArray(run.events)) {
        views.set(run.run_id, foldRunRow(run, run.events));
        return;
      }
      const next = runs[index - 1];
      toFold.push({ run, until: next ? [next.epoch_id, next.start_seq] : end });
    });
    if (toFold.length === 0) return views;
    const { rows } = await this.#pool.query<{ run_id: string; event: string }>({
      name: 'agentwire_run_events',
      text: `SELECT k.rid AS run_id, e.event
         FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) WITH ORDINALITY AS k(rid, ep, s, until_ep, until_s, n)
         CROSS JOIN LATERAL (
           SELECT event, epoch_id, seq FROM agentwire_events e
            WHERE e.user_id = $1 AND (e.epoch_id, e.seq) >= (k.ep, k.s) AND (e.epoch_id, e.seq) <= (k.until_ep, k.until_s)
              AND e.thread_id = $2 AND e.run_id = k.rid) e
        ORDER BY k.n, e.epoch_id, e.seq`,
      values: [
        userId,
        threadId,
        toFold.map(({ run }) => run.run_id),
        toFold.map(({ run }) => run.epoch_id),
        toFold.map(({ run }) => run.start_seq),
        toFold.map(({ until }) => until[0]),
        toFold.map(({ until }) => until[1]),
      ],
    });
    const events = new Map<string, string[]>();
    for (const row of rows) {
      const list = events.get(row.run_id) ?? [];
      list.push(row.event);
      events.set(row.run_id, list);
    }
    for (const { run } of toFold) views.set(run.run_id, foldRunRow(run, events.get(run.run_id) ?? []));
    return views;
  }

  async #migrateUntilDone(): Promise<void> {
    for (let attempt = 0; !this.#closed; attempt++) {
      try {
        const applied = await migrate(this.#pool);
        if (applied.length > 0) this.#logger.info({ versions: applied }, 'postgres: schema migrated');
        this.#migrated = true;
        await this.#probe();
        return;
      } catch (error) {
        if (!isConnectionError(error)) throw error;
        if (attempt % 10 === 0) this.#logger.warn({ err: error, attempt }, 'postgres: not reachable for migrations; retrying');
        await new Promise<void>((resolve) => this.#clock.setTimeout(resolve, Math.min(100 * 2 ** attempt, 2000)));
      }
    }
  }

  /**
   * Builds the schema's indexes on a connection of its own, not the pool's: a build can take
   * hours on a big table, and archiving and the routes keep their connections meanwhile.
   */
  async #buildIndexes(url: string, connectTimeoutMs: number): Promise<string[]> {
    if (this.#closed) return [];
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs, application_name: 'agentwire' });
    // A broken connection fails the statement in flight; without a listener it would end the process.
    client.on('error', () => undefined);
    this.#indexClient = client;
    try {
      await client.connect();
      return await buildIndexes(client, this.#logger);
    } catch (error) {
      if (this.#closed) this.#logger.info('postgres: closed while building an index; a later start finishes it');
      else this.#logger.error({ err: error }, 'postgres: building an index failed; history works without it (slower), and the next start builds it again');
      return [];
    } finally {
      // Unless close() ended it.
      if (this.#indexClient === client) {
        this.#indexClient = null;
        await client.end();
      }
    }
  }

  /**
   * One `SELECT 1` at a time; `available` turns false when it fails or is outstanding past 1 s
   * (a stall: checked on every tick while it is outstanding).
   */
  #probe(): Promise<void> {
    if (this.#closed || !this.#migrated) return Promise.resolve();
    if (this.#probeSentAt !== null) {
      this.#noticeAvailability();
      return Promise.resolve();
    }
    this.#probeSentAt = this.#clock.now();
    const done = (ok: boolean) => {
      this.#probeSentAt = null;
      this.#probeOk = ok;
      this.#noticeAvailability();
    };
    return this.#pool.query({ text: 'SELECT 1', query_timeout: PROBE_DEADLINE_MS } as pg.QueryConfig).then(
      () => done(true),
      () => done(false),
    );
  }

  /** Logs and reports a change of `available`; archiving resumes when it turns true. */
  #noticeAvailability(): void {
    const available = this.available;
    if (available === this.#reportedAvailable) return;
    this.#reportedAvailable = available;
    if (available) this.#logger.info('postgres: reachable; archiving resumes');
    else this.#logger.warn('postgres: unreachable or stalled; history is not archived until it is back (not ready)');
    if (available) for (const archiver of this.#archivers) archiver.kick();
    this.#onChange();
  }
}

/** The writer of a user: a stable hash of the id (FNV-1a). */
function writerOf(userId: string, writers: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) hash = Math.imul(hash ^ userId.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % writers;
}

function threadSummary(row: ThreadRow): ThreadSummary {
  return {
    threadId: row.thread_id,
    title: cutCharacters(row.title, MAX_TITLE_CHARACTERS),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    lastRun: { runId: row.last_run_id, status: isRunStatus(row.last_run_status) ? row.last_run_status : 'running' },
  };
}

/** A run's messages folded from its archived events (JSON, in log order). */
function foldRunRow(run: RunRow, events: readonly string[]): RunView {
  const start = { runId: run.run_id, messageId: run.message_id, text: run.user_text, createdAt: run.created_at.toISOString() };
  return foldRun(
    start,
    events.map(parseEvent).filter((event) => event !== null),
  );
}

function userView(run: RunRow): RunView['user'] {
  return { id: run.message_id, role: 'user', runId: run.run_id, text: run.user_text, createdAt: run.created_at.toISOString() };
}

const RUN_STATUSES: ReadonlySet<string> = new Set<RunStatus>(['queued', 'running', 'completed', 'cancelled', 'error']);
function isRunStatus(value: string): value is RunStatus {
  return RUN_STATUSES.has(value);
}

function isAssistantView(value: unknown): value is AssistantMessageView {
  return typeof value === 'object' && value !== null && (value as { role?: unknown }).role === 'assistant';
}

function comparePositions(a: Position, b: Position): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

// Cursors are base64url JSON of the last item's sort key; anything else is refused.
function encodeCursor(key: readonly unknown[]): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

function decodeCursor<T>(cursor: string, valid: (value: unknown) => value is T): T {
  if (cursor.length > 512) throw new InvalidCursorError();
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new InvalidCursorError();
  }
  if (!valid(value)) throw new InvalidCursorError();
  return value;
}

/**
 * A thread cursor is exactly what encodeCursor wrote: a time in toISOString's form, year 1..9999 (what
 * Date.parse accepts is far wider than what PostgreSQL does, e.g. "1" or "2026-02-30") and a
 * thread id; anything else would be a database error, not a 400.
 */
function isThreadCursor(value: unknown): value is [string, string] {
  if (!Array.isArray(value) || value.length !== 2 || typeof value[0] !== 'string' || typeof value[1] !== 'string') return false;
  const time = Date.parse(value[0]);
  return Number.isFinite(time) && /^(?!0000)\d{4}-/.test(value[0]) && new Date(time).toISOString() === value[0] && THREAD_ID.test(value[1]);
}

function isPositionCursor(value: unknown): value is Position {
  return Array.isArray(value) && value.length === 3 && value.every((n) => Number.isSafeInteger(n) && n >= 0) && (value[2] === 0 || value[2] === 1);
}

/** Errors that mean "PostgreSQL cannot be reached (yet)", worth retrying. */
function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (code.startsWith('08') || code === '57P01' || code === '57P03' || /^E[A-Z]+$/.test(code))) return true;
  const message = error instanceof Error ? error.message : '';
  return /timeout|terminated|connect/i.test(message);
}

/** The history store on PostgreSQL; call `ready()` before relying on `available`. */
export function createPostgresHistoryStore(options: PostgresHistoryStoreOptions): PostgresHistoryStore {
  return new PostgresHistoryStore(options);
}

/**
 * A `sub` may be any text, but a `text` column cannot hold U+0000, and U+FFFD in its place would
 * be another user: such a user's events are not archived (they cannot fail the batches of other
 * users' events), and their history routes answer as for a user with nothing archived.
 */
function archivable(userId: string): boolean {
  return !userId.includes('\u0000');
}
