/**
 * The archive phase of `npm run bench` (--phases archive; issue 10 item 7): the PostgreSQL
 * history store against one node's maximum event rate, and `GET /v1/threads/{id}/messages` on a
 * table of 1M events.
 *
 * Per repetition, on a database of its own (CREATE DATABASE with a random name on
 * AGENTWIRE_BENCH_POSTGRES_URL, default the machine's postgres://postgres@127.0.0.1:5432/postgres;
 * dropped at the end):
 * 1. Archive throughput: a gateway (bench/servers/gateway.ts with BENCH_DATABASE_URL: in-memory
 *    engine, PostgreSQL history store as `agentwire serve` wires it) appends a synthetic log
 *    (`archiveEvents` events: users × 10 threads × 25 runs of 20 events: start, thinking, tool
 *    call and result, 15 answer deltas, end; round-robin over the users as a busy node's appends
 *    are) to its engine and records it in its store, as fast as the write-behind archive takes it
 *    (the appender waits while more than 50 000 events are queued). Events/s = events archived /
 *    time until the archive is idle; CPU per event of the gateway process and of the PostgreSQL
 *    backends (from /proc, when PostgreSQL runs on this machine). The ratio is against the
 *    delivered events per second of the events phase of the same run (the node's max rate).
 * 2. The table is then grown to `tableEvents` by copying what the archive wrote under new user
 *    ids (INSERT … SELECT per table: fast, and exactly the rows the archiver makes), analyzed, and
 *    `GET /v1/threads/{id}/messages` (newest page, default limit 50) is timed through the
 *    gateway's HTTP server for random threads of random users: one request at a time, then
 *    `concurrency` clients at once. The newest run of each user's first thread is still
 *    streaming, so those answers fold it from its events.
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import pg from 'pg';
import { RunStamp, stampEvent, type EventBody } from '@agentwire/protocol';
import { signToken } from '../packages/agentwire/src/auth/index.js';
import type { MemoryEngine } from '../packages/agentwire/src/engine/memoryEngine.js';
import type { PostgresHistoryStore } from '../packages/agentwire/src/postgres/index.js';
import { BENCH_SECRET, percentile, spread, type Spread } from './common.js';
import type { StartedServer } from './nodeGroup.js';

export interface ArchiveSizes {
  /** Events the archive writes in the throughput measurement. */
  readonly archiveEvents: number;
  /** Events in the table the messages route is timed on. */
  readonly tableEvents: number;
  /** Sequential requests; the concurrent measurement makes as many. */
  readonly queries: number;
  readonly concurrency: number;
}

export function archiveSizes(quick: boolean, overrides: Partial<ArchiveSizes> = {}): ArchiveSizes {
  const base: ArchiveSizes = quick
    ? { archiveEvents: 10_000, tableEvents: 50_000, queries: 200, concurrency: 4 }
    : { archiveEvents: 200_000, tableEvents: 1_000_000, queries: 1000, concurrency: 4 };
  return { ...base, ...overrides };
}

export interface ArchivePhaseContext {
  readonly reps: number;
  readonly quick: boolean;
  readonly sizes?: Partial<ArchiveSizes>;
  /** Starts bench/servers/gateway.ts with these environment variables. */
  readonly startServer: (name: string, env: Record<string, string>) => Promise<StartedServer>;
  readonly stopServer: (server: StartedServer) => Promise<void>;
  readonly log: (line: string) => void;
  /** The PostgreSQL server the phase makes its database on (default AGENTWIRE_BENCH_POSTGRES_URL or the machine's). */
  readonly postgresUrl?: string;
}

export interface ArchiveRepResult {
  rep: number;
  /** The repetition's database (dropped at its end). */
  database: string;
  archived: number;
  eventsPerSec: number;
  gatewayCpuPerEventUs: number;
  /** NaN when PostgreSQL's backends are not readable on this machine. */
  postgresCpuPerEventUs: number;
  tableEvents: number;
  seedSeconds: number;
  sequentialP50: number;
  sequentialP99: number;
  concurrentP50: number;
  concurrentP99: number;
  failures: string[];
}

// ------------------------------------------------------------------ the synthetic log (in the gateway)

const EVENTS_PER_RUN = 20;
const RUNS_PER_THREAD = 25;
const THREADS_PER_USER = 10;
const EVENTS_PER_USER = EVENTS_PER_RUN * RUNS_PER_THREAD * THREADS_PER_USER;
/** The appender waits for the archive beyond this many queued events. */
const MAX_QUEUED = 50_000;

export interface ArchiveFeed {
  readonly users: number;
}

export interface ArchiveFeedResult {
  readonly appended: number;
  readonly archived: number;
  readonly seconds: number;
  readonly cpuUs: number;
  readonly lost: number;
  readonly failedBatches: number;
}

function runEvents(threadId: string, runId: string, index: number, finished: boolean): EventBody[] {
  const ts = new Date(Date.UTC(2026, 0, 1) + index * 1000).toISOString();
  // Stamped as the run manager stamps them (stampEvent; deltas from the run's RunStamp), so the
  // engine encodes them as it does a run's: the append's cost is part of what this phase weighs.
  const stamp = { run_id: runId, thread_id: threadId, ts };
  const run = new RunStamp(runId, threadId);
  const deltas = Array.from({ length: 15 }, (_, i) => `word${i} `);
  const events: EventBody[] = [
    stampEvent({ type: 'agent_started', message_id: `m-${runId}`, text: `What is the answer to question ${index}?` }, stamp),
    stampEvent({ type: 'agent_thinking', text: 'Counting the words of the question.' }, stamp),
    stampEvent({ type: 'tool_executing', call_id: `c-${runId}`, tool: 'word_count', args: { text: 'What is the answer' } }, stamp),
    stampEvent({ type: 'tool_completed', call_id: `c-${runId}`, tool: 'word_count', ok: true, result: 4 }, stamp),
    ...deltas.map((text) => run.delta('agent_text_delta', text, ts)),
  ];
  if (finished) events.push(stampEvent({ type: 'agent_completed', status: 'completed', text: deltas.join('') }, stamp));
  return events;
}

/**
 * Until nothing is queued, being written or behind. idle() also resolves while PostgreSQL counts
 * as unavailable (a probe slower than 1 s, on a loaded machine), so it is asked again.
 */
async function drained(store: PostgresHistoryStore): Promise<void> {
  for (;;) {
    await store.idle();
    const { queued, writing, behind } = store.stats;
    if (queued + writing + behind === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Runs in the gateway process: appends the synthetic log and waits until the archive holds it. */
export async function feedArchive(engine: MemoryEngine, store: PostgresHistoryStore, feed: ArchiveFeed): Promise<ArchiveFeedResult> {
  const before = store.stats;
  const start = performance.now();
  const cpuBefore = process.cpuUsage();
  let appended = 0;
  for (let run = 0; run < RUNS_PER_THREAD; run++) {
    for (let thread = 0; thread < THREADS_PER_USER; thread++) {
      for (let user = 0; user < feed.users; user++) {
        // The newest run of each user's first thread is still streaming (folded on read).
        const finished = !(thread === 0 && run === RUNS_PER_THREAD - 1);
        const entries = await engine.append(`u${user}`, runEvents(`t${thread}`, `u${user}-t${thread}-r${run}`, run * THREADS_PER_USER + thread, finished));
        store.record(`u${user}`, entries);
        appended += entries.length;
        if (store.stats.queued > MAX_QUEUED) await drained(store);
      }
    }
  }
  await drained(store);
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const after = store.stats;
  return {
    appended,
    archived: after.archived - before.archived,
    seconds,
    cpuUs: cpu.user + cpu.system,
    lost: after.lost - before.lost,
    failedBatches: after.failedBatches - before.failedBatches,
  };
}

// ------------------------------------------------------------------ the phase (in bench/run.ts)

const MACHINE_POSTGRES = process.env.AGENTWIRE_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds of this database's PostgreSQL backends by pid (empty when /proc does not show them). */
async function backendCpu(db: pg.Client): Promise<Map<number, number>> {
  const { rows } = await db.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
  const cpu = new Map<number, number>();
  for (const { pid } of rows) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      cpu.set(pid, (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND);
    } catch {
      // PostgreSQL on another machine: only the gateway's CPU is reported.
    }
  }
  return cpu;
}

/**
 * Copies every archived user `copies` times under new ids (`c<k>-<user>`), table by table, with
 * their own epoch ids: the table grows by exactly the rows the archiver wrote.
 */
export async function growTable(db: pg.Client, copies: number): Promise<void> {
  if (copies <= 0) return;
  const { rows } = await db.query<{ max: string }>('SELECT max(epoch_id) AS max FROM agentwire_epochs');
  const stride = Number(rows[0]!.max);
  const series = `generate_series(1, ${copies}) AS k`;
  await db.query(`INSERT INTO agentwire_epochs (epoch_id, user_id, epoch) OVERRIDING SYSTEM VALUE
    SELECT epoch_id + k * ${stride}, 'c' || k || '-' || user_id, epoch FROM agentwire_epochs, ${series}`);
  await db.query(`SELECT setval(pg_get_serial_sequence('agentwire_epochs', 'epoch_id'), (SELECT max(epoch_id) FROM agentwire_epochs))`);
  await db.query(`INSERT INTO agentwire_events
    SELECT 'c' || k || '-' || user_id, epoch_id + k * ${stride}, seq, thread_id, run_id, type, event FROM agentwire_events, ${series}`);
  await db.query(`INSERT INTO agentwire_runs
    SELECT 'c' || k || '-' || user_id, thread_id, run_id, epoch_id + k * ${stride}, start_seq, message_id, user_text, created_at,
           final_epoch_id + k * ${stride}, final_seq, answer FROM agentwire_runs, ${series}`);
  await db.query(`INSERT INTO agentwire_threads
    SELECT 'c' || k || '-' || user_id, thread_id, title, title_epoch_id + k * ${stride}, title_seq, renamed, created_at, updated_at,
           last_run_id, last_run_status, last_epoch_id + k * ${stride}, last_seq FROM agentwire_threads, ${series}`);
  await db.query(`INSERT INTO agentwire_archive_marks
    SELECT 'c' || k || '-' || user_id, epoch_id + k * ${stride}, seq FROM agentwire_archive_marks, ${series}`);
}

interface Timed {
  readonly p50: number;
  readonly p99: number;
}

/** Times `count` GETs of `path(i)`, `concurrency` at a time, each answered 200. */
async function timeGets(
  port: number,
  tokens: Map<string, string>,
  count: number,
  concurrency: number,
  pick: (i: number) => { user: string; path: string },
): Promise<Timed> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const times: number[] = [];
  let next = 0;
  const get = (user: string, path: string) =>
    new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, agent, headers: { authorization: `Bearer ${tokens.get(user)}` } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`GET ${path}: ${res.statusCode} ${Buffer.concat(chunks).toString().slice(0, 200)}`));
          const body = JSON.parse(Buffer.concat(chunks).toString()) as { messages?: unknown[] };
          if (!Array.isArray(body.messages) || body.messages.length === 0) return reject(new Error(`GET ${path}: no messages`));
          resolve();
        });
      });
      req.on('error', reject);
      req.end();
    });
  const client = async () => {
    while (next < count) {
      const { user, path } = pick(next++);
      const start = performance.now();
      await get(user, path);
      times.push(performance.now() - start);
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, client));
  } finally {
    agent.destroy();
  }
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

async function measureRep(context: ArchivePhaseContext, sizes: ArchiveSizes, rep: number): Promise<ArchiveRepResult> {
  const name = `agentwire_bench_${Math.random().toString(36).slice(2, 10)}`;
  const server = context.postgresUrl ?? MACHINE_POSTGRES;
  const admin = new pg.Client({ connectionString: server });
  await admin.connect();
  const url = new URL(server);
  url.pathname = `/${name}`;
  const result: ArchiveRepResult = {
    rep,
    database: name,
    archived: 0,
    eventsPerSec: Number.NaN,
    gatewayCpuPerEventUs: Number.NaN,
    postgresCpuPerEventUs: Number.NaN,
    tableEvents: 0,
    seedSeconds: Number.NaN,
    sequentialP50: Number.NaN,
    sequentialP99: Number.NaN,
    concurrentP50: Number.NaN,
    concurrentP99: Number.NaN,
    failures: [],
  };
  let gateway: StartedServer | null = null;
  const db = new pg.Client({ connectionString: url.toString() });
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    await db.connect();
    gateway = await context.startServer(`archive gateway r${rep}`, { BENCH_DATABASE_URL: url.toString() });
    const users = Math.max(1, Math.round(sizes.archiveEvents / EVENTS_PER_USER));
    const cpuBefore = await backendCpu(db);
    const fed = await gateway.ipc.call<ArchiveFeedResult>('archive', { users } satisfies ArchiveFeed, 600_000);
    const cpuAfter = await backendCpu(db);
    let backendSeconds = 0;
    for (const [pid, seconds] of cpuAfter) backendSeconds += seconds - (cpuBefore.get(pid) ?? 0);
    result.archived = fed.archived;
    result.eventsPerSec = fed.archived / fed.seconds;
    result.gatewayCpuPerEventUs = fed.cpuUs / fed.archived;
    result.postgresCpuPerEventUs = cpuAfter.size > 0 ? (backendSeconds * 1e6) / fed.archived : Number.NaN;
    if (fed.archived !== fed.appended) result.failures.push(`archive: ${fed.appended} appended, ${fed.archived} archived`);
    if (fed.lost > 0 || fed.failedBatches > 0) result.failures.push(`archive: ${fed.lost} lost, ${fed.failedBatches} failed batches`);
    context.log(
      `archive r${rep}: ${fed.archived} events of ${users} users in ${fed.seconds.toFixed(1)} s = ${Math.round(result.eventsPerSec)} events/s; ` +
        `CPU per event: gateway ${result.gatewayCpuPerEventUs.toFixed(1)} µs (appending included), PostgreSQL ${result.postgresCpuPerEventUs.toFixed(1)} µs`,
    );

    const seedStart = performance.now();
    const copies = Math.max(0, Math.round(sizes.tableEvents / Math.max(1, fed.archived)) - 1);
    await growTable(db, copies);
    await db.query('VACUUM ANALYZE');
    result.seedSeconds = (performance.now() - seedStart) / 1000;
    const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM agentwire_events');
    result.tableEvents = Number(rows[0]!.n);
    const allUsers = [
      ...Array.from({ length: users }, (_, u) => `u${u}`),
      ...Array.from({ length: copies * users }, (_, i) => `c${Math.floor(i / users) + 1}-u${i % users}`),
    ];
    const tokens = new Map<string, string>();
    for (const user of allUsers) tokens.set(user, (await signToken(BENCH_SECRET, { sub: user, ttlSec: 3600 })).token);
    // Deterministic spread over users and threads (primes), every request a different thread.
    const pick = (i: number) => ({
      user: allUsers[(i * 7919) % allUsers.length]!,
      path: `/v1/threads/t${(i * 104_729) % THREADS_PER_USER}/messages`,
    });
    // Warm-up: the route's code and the connections' prepared statements.
    await timeGets(gateway.port, tokens, Math.min(200, sizes.queries), sizes.concurrency, (i) => pick(i + 1_000_003));
    const sequential = await timeGets(gateway.port, tokens, sizes.queries, 1, pick);
    const concurrent = await timeGets(gateway.port, tokens, sizes.queries, sizes.concurrency, (i) => pick(i + sizes.queries));
    Object.assign(result, {
      sequentialP50: sequential.p50,
      sequentialP99: sequential.p99,
      concurrentP50: concurrent.p50,
      concurrentP99: concurrent.p99,
    });
    context.log(
      `archive r${rep}: GET messages on ${result.tableEvents} events (seeded in ${result.seedSeconds.toFixed(1)} s): ` +
        `sequential p50/p99 ${sequential.p50.toFixed(2)}/${sequential.p99.toFixed(2)} ms, ` +
        `${sizes.concurrency} concurrent p50/p99 ${concurrent.p50.toFixed(2)}/${concurrent.p99.toFixed(2)} ms`,
    );
  } catch (error) {
    result.failures.push(`archive: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    if (gateway) await context.stopServer(gateway);
    await db.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
    await admin.end();
  }
  return result;
}

export async function measureArchivePhase(context: ArchivePhaseContext): Promise<ArchiveRepResult[]> {
  const sizes = archiveSizes(context.quick, context.sizes);
  const results: ArchiveRepResult[] = [];
  for (let rep = 1; rep <= context.reps; rep++) results.push(await measureRep(context, sizes, rep));
  return results;
}

type Fmt = (s: Spread | null, digits: number) => string;

/**
 * The phase's table. `node` is the events phase's gateway in the same run: its delivered events
 * per second (per repetition) and the connections each user had, so that events appended (and
 * archived) per second = delivered / connections per user.
 */
export function renderArchiveTable(results: ArchiveRepResult[], node: { deliveredPerSec: readonly number[]; connsPerUser: number }, fmt: Fmt): string {
  const of = (pick: (r: ArchiveRepResult) => number) => spread(results.map(pick));
  const delivered = node.deliveredPerSec.length > 0 ? spread(node.deliveredPerSec) : null;
  const appended = delivered ? spread(node.deliveredPerSec.map((rate) => rate / node.connsPerUser)) : null;
  const ratioTo = (rate: Spread | null) => (rate ? spread(results.map((r) => r.eventsPerSec / rate.median)) : null);
  const verdict = (value: number | undefined, pass: (m: number) => boolean) =>
    value === undefined || !Number.isFinite(value) ? 'n/a' : pass(value) ? 'PASS' : 'MISS';
  const toAppended = ratioTo(appended);
  const rows: string[][] = [
    [
      'archive: events archived per second',
      'events/s',
      fmt(
        of((r) => r.eventsPerSec),
        0,
      ),
      '-',
      'info',
    ],
    ['node max: events delivered per second (events phase)', 'events/s', fmt(delivered, 0), '-', 'info'],
    [`node max: events appended per second (delivered / ${node.connsPerUser} conns per user)`, 'events/s', fmt(appended, 0), '-', 'info'],
    ['archive / node max appended rate', '×', fmt(toAppended, 2), '>= 1.0', verdict(toAppended?.median, (m) => m >= 1)],
    ['archive / node max delivered rate', '×', fmt(ratioTo(delivered), 2), '-', 'info'],
    [
      'gateway CPU per archived event (appending included)',
      'µs',
      fmt(
        of((r) => r.gatewayCpuPerEventUs),
        2,
      ),
      '-',
      'info',
    ],
    [
      'PostgreSQL backend CPU per archived event',
      'µs',
      fmt(
        of((r) => r.postgresCpuPerEventUs),
        2,
      ),
      '-',
      'info',
    ],
    [
      `GET messages p50, ${fmt(
        of((r) => r.tableEvents),
        0,
      )} events, sequential`,
      'ms',
      fmt(
        of((r) => r.sequentialP50),
        2,
      ),
      '-',
      'info',
    ],
    [
      'GET messages p99, sequential',
      'ms',
      fmt(
        of((r) => r.sequentialP99),
        2,
      ),
      '< 20 ms',
      verdict(of((r) => r.sequentialP99).median, (m) => m < 20),
    ],
    [
      'GET messages p50, concurrent',
      'ms',
      fmt(
        of((r) => r.concurrentP50),
        2,
      ),
      '-',
      'info',
    ],
    [
      'GET messages p99, concurrent',
      'ms',
      fmt(
        of((r) => r.concurrentP99),
        2,
      ),
      '< 20 ms',
      verdict(of((r) => r.concurrentP99).median, (m) => m < 20),
    ],
  ];
  const header = ['metric', 'unit', 'PostgreSQL archive', 'target', 'result'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}
