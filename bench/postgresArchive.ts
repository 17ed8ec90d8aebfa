/**
 * The PostgreSQL archive phase (issue 10, item 7), run on its own (it takes a minute or more,
 * outside CI's time budget):
 *
 *   node --import tsx bench/postgresArchive.ts [--events 1000000] [--batch 500] [--queries 2000] [--keep]
 *
 * 1. Archive throughput: the log of many users (runs of 20 events: start, thinking, tool call and
 *    result, 15 answer deltas, end) appended to a MemoryEngine and handed to the store's
 *    write-behind archive as fast as the archive takes them (the appender waits whenever more
 *    than 50 000 events are queued); events/s = events archived / time until the archive is idle.
 * 2. `GET …/messages` as the route runs it (`store.messages(user, thread, {limit: 50})`, the
 *    thread's newest page of 25 runs), for random threads of the table of `--events` events, one
 *    at a time: p50/p99/max. Also the second page (with a cursor) and the thread list.
 *
 * Uses a fresh database on AGENTWIRE_BENCH_POSTGRES_URL (default the machine's PostgreSQL,
 * postgres://postgres@127.0.0.1:5432/postgres) and drops it at the end (--keep: keeps it, for
 * EXPLAIN ANALYZE; its name is printed; --reuse <name> runs only the queries on a kept one).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { EventBody } from '@agentwire/protocol';
import { MemoryEngine } from '../packages/agentwire/src/engine/memoryEngine.js';
import { createLogger } from '../packages/agentwire/src/observability/logger.js';
import { PostgresHistoryStore } from '../packages/agentwire/src/postgres/index.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '1000000' },
    batch: { type: 'string', default: '500' },
    queries: { type: 'string', default: '2000' },
    keep: { type: 'boolean', default: false },
    reuse: { type: 'string' },
  },
});
const TOTAL = Number(values.events);
const EVENTS_PER_RUN = 20;
const RUNS_PER_THREAD = 25;
const THREADS_PER_USER = 10;
const USERS = Math.max(1, Math.ceil(TOTAL / (EVENTS_PER_RUN * RUNS_PER_THREAD * THREADS_PER_USER)));
const BASE = process.env.AGENTWIRE_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

function runEvents(threadId: string, runId: string, index: number, finished: boolean): EventBody[] {
  const ts = new Date(Date.UTC(2026, 0, 1) + index * 1000).toISOString();
  const base = { run_id: runId, thread_id: threadId, ts };
  const deltas = Array.from({ length: 15 }, (_, i) => `word${i} `);
  const events: EventBody[] = [
    { ...base, type: 'agent_started', message_id: `m-${runId}`, text: `What is the answer to question ${index}?` },
    { ...base, type: 'agent_thinking', text: 'Counting the words of the question.' },
    { ...base, type: 'tool_executing', call_id: `c-${runId}`, tool: 'word_count', args: { text: 'What is the answer' } },
    { ...base, type: 'tool_completed', call_id: `c-${runId}`, tool: 'word_count', ok: true, result: 4 },
    ...deltas.map((text) => ({ ...base, type: 'agent_text_delta' as const, text })),
  ];
  if (finished) events.push({ ...base, type: 'agent_completed', status: 'completed', text: deltas.join('') });
  return events;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function timed(label: string, count: number, query: (i: number) => Promise<unknown>): Promise<void> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await query(i);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  const f = (n: number) => n.toFixed(2);
  console.log(`${label}: p50 ${f(percentile(times, 50))} ms, p99 ${f(percentile(times, 99))} ms, max ${f(times.at(-1)!)} ms (${count} queries)`);
}

async function main(): Promise<void> {
  const name = values.reuse ?? `agentwire_bench_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: BASE });
  await admin.connect();
  if (!values.reuse) await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(BASE);
  url.pathname = `/${name}`;
  const engine = new MemoryEngine({ retentionEvents: 100_000 });
  const store = new PostgresHistoryStore({ url: url.toString(), engine, batchEvents: Number(values.batch), logger: createLogger('warn') });
  try {
    await store.ready();
    if (!values.reuse) await archive(engine, store, url.toString());
    await measureQueries(store);
  } finally {
    await store.close();
    await engine.close();
    if (values.keep || values.reuse) console.log(`kept database ${name}`);
    else await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

async function archive(engine: MemoryEngine, store: PostgresHistoryStore, url: string): Promise<void> {
  console.log(`archive: ${USERS} users x ${THREADS_PER_USER} threads x ${RUNS_PER_THREAD} runs x ~${EVENTS_PER_RUN} events, batch ${values.batch}`);
  const start = performance.now();
  const cpuBefore = process.cpuUsage();
  let appended = 0;
  // Round-robin over users, so batches mix users as a busy node's do.
  for (let run = 0; run < RUNS_PER_THREAD; run++) {
    for (let thread = 0; thread < THREADS_PER_USER; thread++) {
      for (let user = 0; user < USERS; user++) {
        // The newest run of each user's first thread is still streaming (folded on read).
        const finished = !(thread === 0 && run === RUNS_PER_THREAD - 1);
        const events = runEvents(`t${thread}`, `u${user}-t${thread}-r${run}`, run * THREADS_PER_USER + thread, finished);
        const entries = await engine.append(`u${user}`, events);
        store.record(`u${user}`, entries);
        appended += entries.length;
        if (store.stats.queued > 50_000) await store.idle();
      }
    }
  }
  await store.idle();
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  // CPU of the PostgreSQL backends serving this database (alive since the start: the pool keeps
  // them); with other load on the machine, CPU per event says more than wall time.
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  const { rows: backends } = await db.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
  const ticksPerSecond = 100;
  let backendSeconds = 0;
  for (const { pid } of backends) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      backendSeconds += (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
    } catch {
      // Not on this machine (a remote PostgreSQL): only the gateway's CPU is reported.
    }
  }
  const stats = store.stats;
  console.log(
    `archive: ${appended} events in ${seconds.toFixed(1)} s = ${Math.round(stats.archived / seconds)} events/s archived` +
      ` (dropped ${stats.dropped}, caught up ${stats.caughtUp}, lost ${stats.lost}, failed batches ${stats.failedBatches})`,
  );
  const nodeUs = (cpu.user + cpu.system) / stats.archived;
  const pgUs = (backendSeconds * 1e6) / stats.archived;
  console.log(
    `archive CPU per event: gateway process ${nodeUs.toFixed(1)} us (appending included), PostgreSQL backends ${pgUs.toFixed(1)} us` +
      ` (${backends.length} backends) => ${Math.round(1e6 / pgUs)} events/s per PostgreSQL core`,
  );
  const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM agentwire_events');
  await db.query('VACUUM ANALYZE');
  await db.end();
  console.log(`table: ${rows[0]!.n} events`);
}

async function measureQueries(store: PostgresHistoryStore): Promise<void> {
  const queries = Number(values.queries);
  const pick = (i: number) => ({ user: `u${(i * 7919) % USERS}`, thread: `t${(i * 104729) % THREADS_PER_USER}` });
  await timed('GET messages (newest page, limit 50)', queries, async (i) => {
    const { user, thread } = pick(i);
    const page = await store.messages(user, thread, { limit: 50 });
    if (!page || page.items.length === 0) throw new Error(`no messages for ${user}/${thread}`);
  });
  await timed('GET messages (second page, limit 20)', Math.floor(queries / 2), async (i) => {
    const { user, thread } = pick(i);
    const first = await store.messages(user, thread, { limit: 20 });
    await store.messages(user, thread, { limit: 20, cursor: first!.nextCursor! });
  });
  await timed('GET threads (limit 20)', Math.floor(queries / 2), (i) => store.listThreads(pick(i).user, { limit: 20 }));
}

await main();
