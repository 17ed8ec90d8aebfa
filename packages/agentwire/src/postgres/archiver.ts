import type { Pool, PoolClient, QueryConfig } from 'pg';
import { systemClock, type Clock, type DurableEvent, type LogEntry, type TimerHandle } from '@agentwire/protocol';
import type { EventEngine } from '../engine/types.js';
import type { Logger } from '../observability/logger.js';
import { cutTitle, parseEvent } from '../history/fold.js';
import { foldRun, statusAfter } from './runFold.js';
import { inTransaction } from './client.js';
import type { ArchiveStats } from './stats.js';
import { nestsDeeperThan, storableJson, storableText } from './storable.js';
import { ARCHIVE_CATCH_UP_READ_EVENTS } from '../config/settings.js';

/** Bounds of the write-behind archive. */
export interface ArchiverLimits {
  /** Most events written in one transaction. */
  readonly batchEvents: number;
  /** Events waiting in memory; beyond it (or `queueBytes`) new ones are dropped and caught up from the log. */
  readonly queueEvents: number;
  readonly queueBytes: number;
  /** (user, epoch) pairs remembered as behind; beyond it a drop is counted as lost. */
  readonly maxBehind: number;
  /** A hole left by another node's slower archive is filled from the log after this long. */
  readonly holeGraceMs: number;
}

interface Queued {
  readonly userId: string;
  readonly epoch: string;
  readonly entry: LogEntry;
  readonly bytes: number;
}

/** "This user's log epoch has events up to `to` that may not be archived": caught up from the log. */
interface Behind {
  readonly userId: string;
  readonly epoch: string;
  to: number;
  dueAt: number;
}

/** Events of one user's epoch in one batch, and the range a catch-up read covers in full. */
interface UserBatch {
  readonly userId: string;
  readonly epoch: string;
  readonly entries: LogEntry[];
  /** Every seq in it was looked at (archived, or known gone from the log). */
  covered?: { readonly from: number; readonly to: number };
}

/** Per queued event, what the queue's byte bound charges on top of its JSON. */
const ENTRY_OVERHEAD_BYTES = 96;
const TERMINAL_TYPES = ['agent_completed', 'agent_error'];
/** PostgreSQL's SQLSTATE for a duplicate key. */
const UNIQUE_VIOLATION = '23505';
/** Epoch ids remembered per process (they never change once assigned). */
const MAX_CACHED_EPOCHS = 100_000;
/** Archived seqs one watermark step looks at beyond the mark. */
const MARK_WALK = 1000;

/**
 * Write-behind archiving of the user logs into PostgreSQL: `record` queues what this node appended
 * and returns at once; one flusher writes batches (one transaction each; batches form while the
 * previous one is in flight), idempotent on (user, epoch, seq). What cannot be written (queue full,
 * PostgreSQL down, a failed transaction) is remembered per (user, epoch) as "behind up to seq N"
 * and read back from the engine's log later, as far as its retention reaches; anything no longer
 * there and not archived by any node is counted as lost.
 *
 * Per user, `agentwire_archive_marks` holds the newest seq up to which every event is archived (or
 * known lost): the messages route answers exactly up to it, and a run's folded answer is stored
 * once the mark covers its terminal event.
 */
export class Archiver {
  readonly stats: ArchiveStats = { archived: 0, dropped: 0, lost: 0, caughtUp: 0, failedBatches: 0 };
  readonly #pool: Pool;
  readonly #engine: Pick<EventEngine, 'read' | 'head'>;
  readonly #limits: ArchiverLimits;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #isAvailable: () => boolean;
  readonly #onFailure: () => void;
  readonly #onStep: () => void;
  #queue: Queued[] = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #writing = 0;
  readonly #behind = new Map<string, Behind>();
  readonly #epochIds = new Map<string, number>();
  #running = false;
  #closed = false;
  #wakeTimer: TimerHandle | null = null;
  #idleWaiters: Array<() => void> = [];

  constructor(options: {
    pool: Pool;
    engine: Pick<EventEngine, 'read' | 'head'>;
    limits: ArchiverLimits;
    logger: Logger;
    clock?: Clock;
    isAvailable: () => boolean;
    onFailure: () => void;
    /** Called after every batch and catch-up step. */
    onStep?: () => void;
  }) {
    this.#pool = options.pool;
    this.#engine = options.engine;
    this.#limits = options.limits;
    this.#logger = options.logger;
    this.#clock = options.clock ?? systemClock;
    this.#isAvailable = options.isAvailable;
    this.#onFailure = options.onFailure;
    this.#onStep = options.onStep ?? (() => undefined);
  }

  /** Events waiting in memory. */
  get queued(): number {
    return this.#queue.length - this.#queueHead;
  }

  /** Events of the write-behind batch being written. */
  get writing(): number {
    return this.#writing;
  }

  /** (user, epoch) pairs waiting for a catch-up from the log. */
  get behind(): number {
    return this.#behind.size;
  }

  record(userId: string, entries: readonly LogEntry[]): void {
    if (this.#closed) return;
    for (const entry of entries) {
      // Entries without an epoch (never from append) cannot be placed in the archive.
      if (entry.epoch === undefined) continue;
      const bytes = entry.json.length + userId.length + ENTRY_OVERHEAD_BYTES;
      if (this.queued >= this.#limits.queueEvents || this.#queuedBytes + bytes > this.#limits.queueBytes) {
        this.stats.dropped++;
        this.#markBehind(userId, entry.epoch, entry.seq, 0);
        continue;
      }
      this.#queue.push({ userId, epoch: entry.epoch, entry, bytes });
      this.#queuedBytes += bytes;
    }
    this.kick();
  }

  /** Starts the flusher unless it runs (called on new events and when PostgreSQL is back). */
  kick(): void {
    if (this.#running || this.#closed || !this.#isAvailable()) return;
    this.#running = true;
    void this.#flush().finally(() => {
      this.#running = false;
      this.#settle();
    });
  }

  /** Resolves once nothing is queued and no catch-up is due (or PostgreSQL is unavailable). */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stops archiving; waits for the batch in flight. What is still queued is caught up by a later start from the log. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#wakeTimer) this.#clock.clearTimeout(this.#wakeTimer);
    while (this.#running) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  #isIdle(): boolean {
    if (this.#running) return false;
    if (this.#closed || !this.#isAvailable()) return true;
    return this.queued === 0 && this.#behind.size === 0;
  }

  #settle(): void {
    if (this.queued > 0 && this.#isAvailable() && !this.#closed) return this.kick();
    this.#scheduleWake();
    if (this.#isIdle() || this.#closed) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Wakes the flusher when the earliest catch-up falls due. */
  #scheduleWake(): void {
    if (this.#wakeTimer) this.#clock.clearTimeout(this.#wakeTimer);
    this.#wakeTimer = null;
    if (this.#closed || this.#behind.size === 0) return;
    let earliest = Infinity;
    for (const behind of this.#behind.values()) earliest = Math.min(earliest, behind.dueAt);
    this.#wakeTimer = this.#clock.setTimeout(
      () => {
        this.#wakeTimer = null;
        this.kick();
      },
      Math.max(0, earliest - this.#clock.now()),
    );
    (this.#wakeTimer as { unref?: () => void }).unref?.();
  }

  #markBehind(userId: string, epoch: string, toSeq: number, delayMs: number): void {
    const key = `${userId}\u0000${epoch}`;
    const known = this.#behind.get(key);
    const dueAt = this.#clock.now() + delayMs;
    if (known) {
      known.to = Math.max(known.to, toSeq);
      known.dueAt = Math.min(known.dueAt, dueAt);
    } else if (this.#behind.size >= this.#limits.maxBehind) {
      this.stats.lost++;
      this.#logger.warn({ userId, seq: toSeq }, 'archive: too many users behind; an event may never be archived');
    } else {
      this.#behind.set(key, { userId, epoch, to: toSeq, dueAt });
    }
  }

  async #flush(): Promise<void> {
    while (!this.#closed && this.#isAvailable()) {
      if (this.queued > 0) {
        await this.#writeQueued();
      } else {
        const due = this.#dueCatchUp();
        if (!due) return;
        await this.#catchUp(due);
      }
      this.#onStep();
    }
  }

  #dueCatchUp(): Behind | undefined {
    const now = this.#clock.now();
    for (const behind of this.#behind.values()) if (behind.dueAt <= now) return behind;
    return undefined;
  }

  async #writeQueued(): Promise<void> {
    const end = Math.min(this.#queue.length, this.#queueHead + this.#limits.batchEvents);
    const taken = this.#queue.slice(this.#queueHead, end);
    this.#queueHead = end;
    for (const item of taken) this.#queuedBytes -= item.bytes;
    if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
    const groups = new Map<string, UserBatch>();
    for (const { userId, epoch, entry } of taken) {
      const key = `${userId}\u0000${epoch}`;
      let group = groups.get(key);
      if (!group) groups.set(key, (group = { userId, epoch, entries: [] }));
      group.entries.push(entry);
    }
    this.#writing = taken.length;
    try {
      await this.#write([...groups.values()]);
    } finally {
      this.#writing = 0;
    }
  }

  /** Reads one chunk of a behind range back from the log and archives it. */
  async #catchUp(behind: Behind): Promise<void> {
    const key = `${behind.userId}\u0000${behind.epoch}`;
    const { userId, epoch } = behind;
    try {
      const epochId = await this.#epochId(userId, epoch);
      const { rows } = await this.#pool.query<{ epoch_id: string; seq: string }>('SELECT epoch_id, seq FROM agentwire_archive_marks WHERE user_id = $1', [
        userId,
      ]);
      const markEpoch = rows[0] ? Number(rows[0].epoch_id) : 0;
      if (markEpoch > epochId) {
        // A newer epoch is archived already: this one's log is gone; count what never arrived.
        await this.#countLost(userId, epochId, epoch, 1, behind.to);
        this.#behind.delete(key);
        return;
      }
      const from = markEpoch === epochId ? Number(rows[0]!.seq) + 1 : 1;
      const head = await this.#engine.head(userId);
      if (from > behind.to || (head.epoch === epoch && from > head.lastSeq)) {
        this.#behind.delete(key);
        return;
      }
      if (head.epoch !== epoch) {
        // The log began again under a new epoch: what this one's range lacks is lost.
        if ((await this.#write([{ userId, epoch, entries: [], covered: { from, to: behind.to } }])) === null) {
          behind.dueAt = this.#clock.now() + this.#limits.holeGraceMs;
          return;
        }
        await this.#countLost(userId, epochId, epoch, from, behind.to);
        this.#behind.delete(key);
        return;
      }
      const to = Math.min(behind.to, head.lastSeq, from + Math.min(this.#limits.batchEvents, ARCHIVE_CATCH_UP_READ_EVENTS) - 1);
      const entries = await this.#engine.read(userId, from, to);
      const written = await this.#write([{ userId, epoch, entries, covered: { from, to } }]);
      if (written === null) {
        behind.dueAt = this.#clock.now() + this.#limits.holeGraceMs;
        return;
      }
      this.stats.caughtUp += written;
      if (entries.length < to - from + 1) {
        // Gone from the log (older than its retention): lost unless another node archived them.
        const present = new Set(entries.map((entry) => entry.seq));
        const missing: number[] = [];
        for (let seq = from; seq <= to; seq++) if (!present.has(seq)) missing.push(seq);
        await this.#countLost(userId, epochId, epoch, from, to, missing);
      }
      if (to >= behind.to) this.#behind.delete(key);
    } catch (error) {
      behind.dueAt = this.#clock.now() + this.#limits.holeGraceMs;
      this.#logger.warn({ err: error, userId }, 'archive: catch-up from the log failed; will retry');
      this.#onFailure();
    }
  }

  /** Counts the seqs of a range (or the listed ones) that no node archived. */
  async #countLost(userId: string, epochId: number, epoch: string, from: number, to: number, seqs?: number[]): Promise<void> {
    const { rows } = await this.#pool.query<{ n: string }>(
      seqs
        ? 'SELECT count(*) AS n FROM agentwire_events WHERE user_id = $1 AND epoch_id = $2 AND seq = ANY($3::bigint[])'
        : 'SELECT count(*) AS n FROM agentwire_events WHERE user_id = $1 AND epoch_id = $2 AND seq BETWEEN $3 AND $4',
      seqs ? [userId, epochId, seqs] : [userId, epochId, from, to],
    );
    const lost = (seqs ? seqs.length : to - from + 1) - Number(rows[0]!.n);
    if (lost <= 0) return;
    this.stats.lost += lost;
    this.#logger.warn({ userId, epoch, from, to, lost }, 'archive: events left the log before they were archived; their history is lost');
  }

  async #epochId(userId: string, epoch: string): Promise<number> {
    const db = this.#pool;
    const key = `${userId}\u0000${epoch}`;
    const known = this.#epochIds.get(key);
    if (known !== undefined) return known;
    await db.query('INSERT INTO agentwire_epochs (user_id, epoch) VALUES ($1, $2) ON CONFLICT DO NOTHING', [userId, epoch]);
    const { rows } = await db.query<{ epoch_id: string }>('SELECT epoch_id FROM agentwire_epochs WHERE user_id = $1 AND epoch = $2', [userId, epoch]);
    const id = Number(rows[0]!.epoch_id);
    if (this.#epochIds.size >= MAX_CACHED_EPOCHS) this.#epochIds.clear();
    this.#epochIds.set(key, id);
    return id;
  }

  /**
   * Writes one batch in one transaction; on failure its events are remembered as behind (caught
   * up from the log once PostgreSQL answers again). Resolves with the number of events it added,
   * null when it failed.
   */
  async #write(batches: UserBatch[]): Promise<number | null> {
    try {
      // Outside the transaction: an epoch id is cached, so it must never be rolled back.
      const epochIds = new Map<UserBatch, number>();
      for (const batch of batches) epochIds.set(batch, await this.#epochId(batch.userId, batch.epoch));
      const transaction = (mayHoldArchived: boolean) =>
        inTransaction(this.#pool, async (client) => {
          // The users' mark rows are created and locked first: a thread deletion does the same
          // (store.ts, deleteThread; also before a user's first batch commits), so a batch sees
          // its tombstone, or the deletion sees (and erases) what the batch wrote.
          const marks = await lockMarks(client, batches, epochIds);
          const { inserted, seen } = await insertEvents(client, batches, epochIds, mayHoldArchived);
          await updateRunsAndThreads(client, inserted);
          const advanced = await advanceMarks(client, epochIds, marks);
          await finalizeRuns(client, advanced, seen);
          return { inserted, advanced };
        });
      // Write-behind events reach the archive once, so their insert skips the check for archived
      // ones (a third of its cost); a batch that meets one anyway (another node's catch-up, a
      // commit whose answer was lost) is written again with the check. Catch-up always checks.
      const catchingUp = batches.some((batch) => batch.covered);
      const { inserted, advanced } = await transaction(catchingUp).catch((error: unknown) => {
        if (catchingUp || (error as { code?: unknown }).code !== UNIQUE_VIOLATION) throw error;
        return transaction(true);
      });
      this.stats.archived += inserted.length;
      for (const step of advanced) {
        // A seq this batch holds is beyond the mark: an earlier event is missing (another node's
        // archive is slower, or it died with a queue): fill the hole from the log after a grace.
        if (step.newestWritten > step.to) this.#markBehind(step.userId, step.epoch, step.newestWritten, this.#limits.holeGraceMs);
      }
      return inserted.length;
    } catch (error) {
      this.stats.failedBatches++;
      for (const batch of batches) {
        const newest = Math.max(batch.covered?.to ?? 0, ...batch.entries.map((entry) => entry.seq));
        if (newest > 0) this.#markBehind(batch.userId, batch.epoch, newest, this.#limits.holeGraceMs);
      }
      this.#logger.warn({ err: error }, 'archive: a batch could not be written; it will be caught up from the log');
      this.#onFailure();
      return null;
    }
  }
}

/** An event of a batch and its position. */
interface BatchEvent {
  readonly userId: string;
  readonly epochId: number;
  readonly seq: number;
  readonly event: DurableEvent;
  readonly ts: string;
  /** `ts` in ms since the epoch. */
  readonly tsMs: number;
}

/** A string id that a `text` column holds as it is. */
function storableId(id: unknown): id is string {
  return typeof id === 'string' && !id.includes('\u0000');
}

/** A batch's events by `${userId}\u0000${epochId}`, then by seq (null: not an archivable event). */
type SeenEvents = Map<string, Map<number, BatchEvent | null>>;

/**
 * Inserts a batch's events in one statement. Resolves with the events it added (not archived
 * before) and every event the batch held, archived before or not (what the mark may move over).
 */
async function insertEvents(
  client: PoolClient,
  batches: readonly UserBatch[],
  epochIds: Map<UserBatch, number>,
  mayHoldArchived: boolean,
): Promise<{ inserted: BatchEvent[]; seen: SeenEvents }> {
  const users: string[] = [];
  const epochs: number[] = [];
  const seqs: number[] = [];
  const threads: string[] = [];
  const runs: string[] = [];
  const types: string[] = [];
  const jsons: string[] = [];
  const times: string[] = [];
  const seen: SeenEvents = new Map();
  for (const batch of batches) {
    const epochId = epochIds.get(batch)!;
    const key = `${batch.userId}\u0000${epochId}`;
    let bySeq = seen.get(key);
    if (!bySeq) seen.set(key, (bySeq = new Map<number, BatchEvent | null>()));
    for (const entry of batch.entries) {
      const event = parseEvent(entry.json);
      // Ids a `text` column cannot hold (U+0000), or nesting PostgreSQL's JSON parser cannot take,
      // make an event no archivable one, as a malformed one is (never the gateway's own events,
      // only a hostile log's): they would fail the whole batch, and every catch-up after it, for
      // every user in it.
      if (!event || !storableId(event.thread_id) || !storableId(event.run_id) || nestsDeeperThan(entry.json)) {
        bySeq.set(entry.seq, null);
        continue;
      }
      const stamped = typeof event.ts === 'string' ? Date.parse(event.ts) : Number.NaN;
      const tsMs = Number.isFinite(stamped) ? stamped : entry.appendedAt;
      const ts = Number.isFinite(stamped) ? event.ts : new Date(entry.appendedAt).toISOString();
      bySeq.set(entry.seq, { userId: batch.userId, epochId, seq: entry.seq, event, ts, tsMs });
      users.push(batch.userId);
      epochs.push(epochId);
      seqs.push(entry.seq);
      threads.push(event.thread_id);
      runs.push(event.run_id);
      types.push(event.type);
      jsons.push(entry.json);
      times.push(ts);
    }
  }
  if (users.length === 0) return { inserted: [], seen };
  const { rows } = await client.query<{ user_id: string; epoch_id: string; seq: string }>(
    prepared(
      mayHoldArchived ? 'insert_events' : 'insert_new_events',
      `INSERT INTO agentwire_events (user_id, epoch_id, seq, thread_id, run_id, type, event)
     SELECT e.u, e.ep, e.s, e.t, e.r, e.ty, e.ev
       FROM (SELECT u, ep::bigint AS ep, s::bigint AS s, t, r, ty, ev::text AS ev, ts::timestamptz AS ts
               FROM ROWS FROM (json_array_elements_text($1::json), json_array_elements_text($2::json),
                               json_array_elements_text($3::json), json_array_elements_text($4::json),
                               json_array_elements_text($5::json), json_array_elements_text($6::json),
                               json_array_elements($7::json), json_array_elements_text($8::json))
                 AS x(u, ep, s, t, r, ty, ev, ts)) AS e
      WHERE NOT EXISTS (
        SELECT 1 FROM agentwire_deleted_threads d
         WHERE d.user_id = e.u AND d.thread_id = e.t
           AND (e.r = ANY (d.run_ids)
                OR CASE WHEN d.epoch = (SELECT x.epoch FROM agentwire_epochs x WHERE x.epoch_id = e.ep) THEN e.s <= d.seq
                        ELSE e.ts <= d.deleted_at END))
     ${mayHoldArchived ? 'ON CONFLICT DO NOTHING' : ''}
     RETURNING user_id, epoch_id, seq`,
      // Columns go as JSON arrays, not PostgreSQL arrays: node-postgres writes an array literal in
      // JavaScript, escaping every element with two regular expressions (about a fifth of the
      // archive's CPU), where JSON.stringify is native (storableJson: a \u0000 or an unpaired
      // surrogate, which json_array_elements_text refuses, becomes U+FFFD). The events go as an
      // array of their own text: each is a JSON object (parseEvent), and a json value's text is
      // kept exactly, escapes included.
      [...[users, epochs, seqs, threads, runs, types].map(storableJson), `[${jsons.join(',')}]`, storableJson(times)],
    ),
  );
  const inserted = rows.map((row) => seen.get(`${row.user_id}\u0000${row.epoch_id}`)!.get(Number(row.seq))!);
  return { inserted, seen };
}

/**
 * A statement prepared once per connection: every batch runs the same few, so PostgreSQL plans
 * them once per connection rather than on every batch.
 */
function prepared(name: string, text: string, values: unknown[]): QueryConfig {
  return { name: `agentwire_archive_${name}`, text, values };
}

/** Position order of (epoch_id, seq). */
function before(a: { epochId: number; seq: number }, b: { epochId: number; seq: number }): boolean {
  return a.epochId < b.epochId || (a.epochId === b.epochId && a.seq < b.seq);
}

interface ThreadChange {
  readonly userId: string;
  readonly threadId: string;
  /** The batch's earliest and latest event of the thread by `ts`. */
  first: BatchEvent;
  last: BatchEvent;
  /** The earliest run start in the batch: creates the thread and may give its title. */
  start?: { epochId: number; seq: number; text: string; ts: string };
  /** The newest event that says what the thread's last run is doing. */
  status?: { epochId: number; seq: number; runId: string; status: string };
}

/** Run rows for new `agent_started` events; thread rows (created by a run start, then kept current). */
async function updateRunsAndThreads(client: PoolClient, inserted: readonly BatchEvent[]): Promise<void> {
  const starts = inserted.filter((item) => item.event.type === 'agent_started');
  if (starts.length > 0) {
    await client.query(
      prepared(
        'insert_runs',
        `INSERT INTO agentwire_runs (user_id, thread_id, run_id, epoch_id, start_seq, message_id, user_text, created_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::timestamptz[])
       ON CONFLICT DO NOTHING`,
        [
          starts.map((s) => s.userId),
          starts.map((s) => s.event.thread_id),
          starts.map((s) => s.event.run_id),
          starts.map((s) => s.epochId),
          starts.map((s) => s.seq),
          starts.map((s) => (s.event.type === 'agent_started' ? storableText(String(s.event.message_id)) : '')),
          starts.map((s) => (s.event.type === 'agent_started' ? storableText(String(s.event.text)) : '')),
          starts.map((s) => s.ts),
        ],
      ),
    );
  }
  const changes = new Map<string, ThreadChange>();
  for (const item of inserted) {
    const key = `${item.userId}\u0000${item.event.thread_id}`;
    let change = changes.get(key);
    if (!change) changes.set(key, (change = { userId: item.userId, threadId: item.event.thread_id, first: item, last: item }));
    if (item.tsMs < change.first.tsMs) change.first = item;
    if (item.tsMs > change.last.tsMs) change.last = item;
    if (item.event.type === 'agent_started' && (!change.start || before(item, change.start))) {
      change.start = { epochId: item.epochId, seq: item.seq, text: String(item.event.text), ts: item.ts };
    }
    const status = statusAfter(item.event);
    if (status && (!change.status || before(change.status, item))) {
      change.status = { epochId: item.epochId, seq: item.seq, runId: item.event.run_id, status };
    }
  }
  const created = [...changes.values()].filter((change) => change.start);
  if (created.length > 0) {
    await client.query(
      prepared(
        'upsert_threads',
        `INSERT INTO agentwire_threads AS t (user_id, thread_id, title, title_epoch_id, title_seq, created_at, updated_at,
                                           last_run_id, last_run_status, last_epoch_id, last_seq)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[], $7::timestamptz[],
                            $8::text[], $9::text[], $10::bigint[], $11::bigint[])
       ON CONFLICT (user_id, thread_id) DO UPDATE SET
         title = CASE WHEN NOT t.renamed AND (excluded.title_epoch_id, excluded.title_seq) < (t.title_epoch_id, t.title_seq)
                      THEN excluded.title ELSE t.title END,
         title_epoch_id = CASE WHEN (excluded.title_epoch_id, excluded.title_seq) < (t.title_epoch_id, t.title_seq)
                               THEN excluded.title_epoch_id ELSE t.title_epoch_id END,
         title_seq = CASE WHEN (excluded.title_epoch_id, excluded.title_seq) < (t.title_epoch_id, t.title_seq)
                          THEN excluded.title_seq ELSE t.title_seq END,
         created_at = least(t.created_at, excluded.created_at),
         updated_at = greatest(t.updated_at, excluded.updated_at),
         last_run_id = CASE WHEN (excluded.last_epoch_id, excluded.last_seq) > (t.last_epoch_id, t.last_seq)
                            THEN excluded.last_run_id ELSE t.last_run_id END,
         last_run_status = CASE WHEN (excluded.last_epoch_id, excluded.last_seq) > (t.last_epoch_id, t.last_seq)
                                THEN excluded.last_run_status ELSE t.last_run_status END,
         last_seq = CASE WHEN (excluded.last_epoch_id, excluded.last_seq) > (t.last_epoch_id, t.last_seq)
                         THEN excluded.last_seq ELSE t.last_seq END,
         last_epoch_id = CASE WHEN (excluded.last_epoch_id, excluded.last_seq) > (t.last_epoch_id, t.last_seq)
                              THEN excluded.last_epoch_id ELSE t.last_epoch_id END`,
        [
          created.map((c) => c.userId),
          created.map((c) => c.threadId),
          created.map((c) => storableText(cutTitle(c.start!.text))),
          created.map((c) => c.start!.epochId),
          created.map((c) => c.start!.seq),
          created.map((c) => c.first.ts),
          created.map((c) => c.last.ts),
          created.map((c) => c.status!.runId),
          created.map((c) => c.status!.status),
          created.map((c) => c.status!.epochId),
          created.map((c) => c.status!.seq),
        ],
      ),
    );
  }
  const updated = [...changes.values()].filter((change) => !change.start);
  if (updated.length > 0) {
    await client.query(
      prepared(
        'update_threads',
        `UPDATE agentwire_threads AS t SET
         updated_at = greatest(t.updated_at, u.ts),
         last_run_id = CASE WHEN u.status IS NOT NULL AND (u.ep, u.s) > (t.last_epoch_id, t.last_seq) THEN u.run ELSE t.last_run_id END,
         last_run_status = CASE WHEN u.status IS NOT NULL AND (u.ep, u.s) > (t.last_epoch_id, t.last_seq) THEN u.status ELSE t.last_run_status END,
         last_seq = CASE WHEN u.status IS NOT NULL AND (u.ep, u.s) > (t.last_epoch_id, t.last_seq) THEN u.s ELSE t.last_seq END,
         last_epoch_id = CASE WHEN u.status IS NOT NULL AND (u.ep, u.s) > (t.last_epoch_id, t.last_seq) THEN u.ep ELSE t.last_epoch_id END
       FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS u(uid, tid, ts, run, status, ep, s)
       WHERE t.user_id = u.uid AND t.thread_id = u.tid`,
        [
          updated.map((c) => c.userId),
          updated.map((c) => c.threadId),
          updated.map((c) => c.last.ts),
          updated.map((c) => c.status?.runId ?? null),
          updated.map((c) => c.status?.status ?? null),
          updated.map((c) => c.status?.epochId ?? 0),
          updated.map((c) => c.status?.seq ?? 0),
        ],
      ),
    );
  }
}

/** How one user's archive mark moved in a transaction. */
interface MarkStep {
  readonly userId: string;
  readonly epoch: string;
  readonly epochId: number;
  /** The mark before (0 when the mark was in an older epoch) and after. */
  readonly from: number;
  readonly to: number;
  /** The newest seq of this epoch the batch held. */
  readonly newestWritten: number;
  /** The mark moved on to a newer epoch of the user's log. */
  readonly epochChanged: boolean;
}

/** The batch's users' archive marks, locked for the transaction (created where missing). */
interface LockedMarks {
  readonly byUser: Map<string, UserBatch[]>;
  readonly rows: ReadonlyArray<{ user_id: string; epoch_id: string; seq: string }>;
}

/**
 * Creates and locks the batch's users' mark rows, in user order so that two nodes writing for
 * the same users queue up instead of deadlocking (a deletion takes one user's row and nothing
 * before it, so it cannot close a cycle).
 */
async function lockMarks(client: PoolClient, batches: readonly UserBatch[], epochIds: Map<UserBatch, number>): Promise<LockedMarks> {
  const byUser = new Map<string, UserBatch[]>();
  for (const batch of batches) {
    const list = byUser.get(batch.userId) ?? [];
    list.push(batch);
    byUser.set(batch.userId, list);
  }
  const users = [...byUser.keys()].sort();
  await client.query(
    prepared(
      'insert_marks',
      `INSERT INTO agentwire_archive_marks (user_id, epoch_id, seq)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING`,
      [users, users.map((user) => epochIds.get(byUser.get(user)![0]!)!), users.map(() => 0)],
    ),
  );
  const { rows } = await client.query<{ user_id: string; epoch_id: string; seq: string }>(
    prepared('lock_marks', 'SELECT user_id, epoch_id, seq FROM agentwire_archive_marks WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE', [users]),
  );
  return { byUser, rows };
}

/**
 * Moves each user's mark (locked by lockMarks) over the seqs the batch covers and then over seqs
 * already archived (by this node or another) right after it.
 */
async function advanceMarks(client: PoolClient, epochIds: Map<UserBatch, number>, marks: LockedMarks): Promise<MarkStep[]> {
  const { byUser, rows } = marks;
  const steps: MarkStep[] = [];
  for (const row of rows) {
    const markEpoch = Number(row.epoch_id);
    let mark = Number(row.seq);
    // The newest epoch of the batch for this user; older ones only fill the archive.
    const batch = byUser.get(row.user_id)!.reduce((a, b) => (epochIds.get(b)! > epochIds.get(a)! ? b : a));
    const epochId = epochIds.get(batch)!;
    if (epochId < markEpoch) continue;
    const epochChanged = epochId > markEpoch;
    if (epochChanged) mark = 0;
    const from = mark;
    if (batch.covered && batch.covered.from <= mark + 1) mark = Math.max(mark, batch.covered.to);
    const seqs = batch.entries.map((entry) => entry.seq).sort((a, b) => a - b);
    for (const seq of seqs) if (seq === mark + 1) mark = seq;
    steps.push({
      userId: row.user_id,
      epoch: batch.epoch,
      epochId,
      from,
      to: mark,
      newestWritten: Math.max(seqs.at(-1) ?? 0, batch.covered?.to ?? 0),
      epochChanged,
    });
  }
  // Over what was archived beyond the mark already (another node's events, or before a hole was filled).
  let walking = steps.map((_, index) => index);
  while (walking.length > 0) {
    const { rows: next } = await client.query<{ user_id: string; seq: string }>(
      prepared(
        'walk_marks',
        `SELECT m.uid AS user_id, e.seq FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS m(uid, ep, s)
       CROSS JOIN LATERAL (SELECT seq FROM agentwire_events e
                            WHERE e.user_id = m.uid AND e.epoch_id = m.ep AND e.seq > m.s ORDER BY e.seq LIMIT ${MARK_WALK}) e`,
        [walking.map((i) => steps[i]!.userId), walking.map((i) => steps[i]!.epochId), walking.map((i) => steps[i]!.to)],
      ),
    );
    const found = new Map<string, number[]>();
    for (const row of next) {
      const list = found.get(row.user_id) ?? [];
      list.push(Number(row.seq));
      found.set(row.user_id, list);
    }
    const again: number[] = [];
    for (const index of walking) {
      const step = steps[index]!;
      const list = found.get(step.userId) ?? [];
      let to = step.to;
      for (const seq of list) if (seq === to + 1) to = seq;
      steps[index] = { ...step, to };
      if (list.length === MARK_WALK && to === list.at(-1)) again.push(index);
    }
    walking = again;
  }
  const moved = steps.filter((step) => step.to !== step.from || step.epochChanged);
  if (moved.length > 0) {
    await client.query(
      prepared(
        'move_marks',
        `UPDATE agentwire_archive_marks AS m SET epoch_id = u.ep, seq = u.s
       FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(uid, ep, s) WHERE m.user_id = u.uid`,
        [moved.map((s) => s.userId), moved.map((s) => s.epochId), moved.map((s) => s.to)],
      ),
    );
  }
  return steps;
}

/** A run whose terminal event a mark just passed. */
interface EndedRun {
  readonly userId: string;
  readonly threadId: string;
  readonly runId: string;
  /** Its terminal event's position. */
  readonly epochId: number;
  readonly seq: number;
  /** All of its events, when the batch held its whole span (else they are read back). */
  events?: DurableEvent[];
}

/**
 * Stores the folded answer of every run whose terminal event the marks just passed: all of the
 * run's events are archived then, so its fold never changes again. What the mark passed and the
 * runs' events are taken from the batch when it holds them (the common case: the mark moves over
 * the batch's own events), and read back by primary-key range otherwise.
 */
async function finalizeRuns(client: PoolClient, steps: readonly MarkStep[], seen: SeenEvents): Promise<void> {
  const moved = steps.filter((step) => step.to > step.from);
  if (moved.length === 0) return;
  const ended: EndedRun[] = [];
  const unseen: MarkStep[] = [];
  for (const step of moved) {
    const bySeq = seen.get(`${step.userId}\u0000${step.epochId}`);
    if (!bySeq || step.to - step.from > bySeq.size || !spans(bySeq, step.from + 1, step.to)) {
      unseen.push(step);
      continue;
    }
    for (let seq = step.from + 1; seq <= step.to; seq++) {
      const item = bySeq.get(seq);
      if (!item || !TERMINAL_TYPES.includes(item.event.type)) continue;
      const run: EndedRun = { userId: step.userId, threadId: item.event.thread_id, runId: item.event.run_id, epochId: step.epochId, seq };
      const events = runInBatch(bySeq, item);
      if (events) run.events = events;
      ended.push(run);
    }
  }
  if (unseen.length > 0) {
    const { rows } = await client.query<{ user_id: string; thread_id: string; run_id: string; epoch_id: string; seq: string }>(
      prepared(
        'ended_runs',
        `SELECT e.user_id, e.thread_id, e.run_id, e.epoch_id, e.seq
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS m(uid, ep, lo, hi)
         JOIN agentwire_events e ON e.user_id = m.uid AND e.epoch_id = m.ep AND e.seq > m.lo AND e.seq <= m.hi
        WHERE e.type = ANY($5::text[])`,
        [unseen.map((s) => s.userId), unseen.map((s) => s.epochId), unseen.map((s) => s.from), unseen.map((s) => s.to), TERMINAL_TYPES],
      ),
    );
    for (const row of rows) {
      ended.push({ userId: row.user_id, threadId: row.thread_id, runId: row.run_id, epochId: Number(row.epoch_id), seq: Number(row.seq) });
    }
  }
  const readBack = ended.filter((run) => !run.events);
  if (readBack.length > 0) {
    // From the run's start to its end, by the primary key: a user's runs interleave in the log,
    // so the range holds a few other runs' events at most.
    const { rows } = await client.query<{ user_id: string; thread_id: string; run_id: string; event: string }>(
      prepared(
        'run_events',
        `SELECT k.uid AS user_id, k.tid AS thread_id, k.rid AS run_id, e.event
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) WITH ORDINALITY AS k(uid, tid, rid, ep, s, n)
         JOIN agentwire_runs r ON r.user_id = k.uid AND r.thread_id = k.tid AND r.run_id = k.rid
         JOIN agentwire_events e ON e.user_id = k.uid AND (e.epoch_id, e.seq) >= (r.epoch_id, r.start_seq) AND (e.epoch_id, e.seq) <= (k.ep, k.s)
        WHERE e.thread_id = k.tid AND e.run_id = k.rid
        ORDER BY k.n, e.epoch_id, e.seq`,
        [
          readBack.map((r) => r.userId),
          readBack.map((r) => r.threadId),
          readBack.map((r) => r.runId),
          readBack.map((r) => r.epochId),
          readBack.map((r) => r.seq),
        ],
      ),
    );
    const byRun = new Map<string, DurableEvent[]>();
    for (const row of rows) {
      const event = parseEvent(row.event);
      if (!event) continue;
      const key = `${row.user_id}\u0000${row.thread_id}\u0000${row.run_id}`;
      const list = byRun.get(key) ?? [];
      list.push(event);
      byRun.set(key, list);
    }
    for (const run of readBack) run.events = byRun.get(`${run.userId}\u0000${run.threadId}\u0000${run.runId}`) ?? [];
  }
  const finals: Array<{ run: EndedRun; answer: string }> = [];
  for (const run of ended) {
    const started = run.events![0];
    if (!started || started.type !== 'agent_started') continue;
    const view = foldRun({ runId: run.runId, messageId: String(started.message_id), text: String(started.text), createdAt: started.ts }, run.events!);
    finals.push({ run, answer: storableJson(view.assistant) });
  }
  if (finals.length === 0) return;
  await client.query(
    prepared(
      'store_answers',
      `UPDATE agentwire_runs AS r SET final_epoch_id = u.ep, final_seq = u.s, answer = u.answer
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::jsonb[]) AS u(uid, tid, rid, ep, s, answer)
      WHERE r.user_id = u.uid AND r.thread_id = u.tid AND r.run_id = u.rid`,
      [
        finals.map((f) => f.run.userId),
        finals.map((f) => f.run.threadId),
        finals.map((f) => f.run.runId),
        finals.map((f) => f.run.epochId),
        finals.map((f) => f.run.seq),
        finals.map((f) => f.answer),
      ],
    ),
  );
}

/** True when the batch held every seq from `from` to `to`. */
function spans(bySeq: Map<number, BatchEvent | null>, from: number, to: number): boolean {
  for (let seq = from; seq <= to; seq++) if (!bySeq.has(seq)) return false;
  return true;
}

/**
 * The events of `terminal`'s run in log order, when the batch holds every seq from the run's
 * `agent_started` to it (so none of the run's events can be missing); else undefined.
 */
function runInBatch(bySeq: Map<number, BatchEvent | null>, terminal: BatchEvent): DurableEvent[] | undefined {
  const { thread_id: threadId, run_id: runId } = terminal.event;
  const events: DurableEvent[] = [];
  for (let seq = terminal.seq; bySeq.has(seq); seq--) {
    const item = bySeq.get(seq);
    if (!item || item.event.run_id !== runId || item.event.thread_id !== threadId) continue;
    events.push(item.event);
    if (item.event.type === 'agent_started') return events.reverse();
  }
  return undefined;
}
