/**
 * `node --import tsx bench/historyStore.ts [--events <n>] [--requests <n>]`: CPU per request of
 * the log-folded history store (the default one) for one user whose retained log holds
 * `--events` events (default 10 000: the default retention), in process, on the memory engine:
 * the thread list, a messages page, and a run start's conversation lookup (20 turns), each with
 * nothing appended since the previous request and with one run (10 events) appended before
 * each request (a user who keeps chatting). Prints CPU µs per request, median of 5 rounds.
 *
 * Then the run start's lookup in the shape of the bench's events phase, without sockets: the run
 * manager alone, 300 users with 10 runs each on one thread (`steps:8`), the bench agent reading
 * 0 and then 20 earlier turns; prints the extra CPU per run start (median of 7 paired rounds).
 */
import type { EventBody } from '../packages/protocol/src/index.js';
import { systemClock } from '../packages/protocol/src/index.js';
import { createLogHistoryStore, MemoryEngine } from '../packages/agentwire/src/index.js';
import { RunManager } from '../packages/agentwire/src/runs/runManager.js';
import { benchAgent } from './agent.js';

const argv = process.argv.slice(2);
function option(name: string, fallback: number): number {
  const i = argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(argv[i + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);
  return value;
}

const EVENTS = option('events', 10_000);
const REQUESTS = option('requests', 200);
const THREADS = 100;
const EVENTS_PER_RUN = 10;
const ROUNDS = 5;

let runCount = 0;
/** One completed run of 10 events: start, 8 streamed fragments, end; threads in turn. */
function nextRun(): EventBody[] {
  const n = runCount++;
  const base = { run_id: `run-${n}`, thread_id: `thread-${n % THREADS}`, ts: new Date(Date.UTC(2026, 0, 1) + n * 1000).toISOString() };
  const deltas: EventBody[] = Array.from({ length: EVENTS_PER_RUN - 2 }, (_, i) => ({
    ...base,
    type: 'agent_text_delta',
    text: `fragment ${i} of answer ${n}. `,
  }));
  return [
    { ...base, type: 'agent_started', message_id: `m-${n}`, text: `question ${n}: what about the thing we discussed?` },
    ...deltas,
    { ...base, type: 'agent_completed', status: 'completed', text: '' },
  ];
}

const engine = new MemoryEngine({ retentionEvents: EVENTS });
const store = createLogHistoryStore({ engine });
const USER = 'bench-user';
for (let i = 0; i < EVENTS / EVENTS_PER_RUN; i++) await engine.append(USER, nextRun());

const requests: Record<string, () => Promise<unknown>> = {
  'thread list (limit 20)': () => store.listThreads(USER, { limit: 20 }),
  'messages page (limit 50)': () => store.messages(USER, `thread-${(runCount - 1) % THREADS}`, { limit: 50 }),
  'conversation (20 turns)': () => store.conversation(USER, `thread-${runCount % THREADS}`, 20),
};

/** CPU µs per request over REQUESTS requests, with `appendEach` runs appended before each (not counted). */
async function measure(request: () => Promise<unknown>, appendEach: boolean): Promise<number> {
  let cpu = 0;
  for (let i = 0; i < REQUESTS; i++) {
    if (appendEach) await engine.append(USER, nextRun());
    const before = process.cpuUsage();
    await request();
    const used = process.cpuUsage(before);
    cpu += used.user + used.system;
  }
  return cpu / REQUESTS;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

process.stdout.write(
  `log-folded history store, one user with ${EVENTS} events (${THREADS} threads), ${REQUESTS} requests x ${ROUNDS} rounds, Node ${process.version}\n\n`,
);
process.stdout.write('| request | CPU µs/request, nothing appended since | CPU µs/request, a run appended before each |\n| --- | --- | --- |\n');
for (const [name, request] of Object.entries(requests)) {
  await request(); // warm: the first request of a user folds the whole log
  const idle: number[] = [];
  const appending: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    idle.push(await measure(request, false));
    appending.push(await measure(request, true));
  }
  process.stdout.write(`| ${name} | ${median(idle).toFixed(1)} | ${median(appending).toFixed(1)} |\n`);
}
await engine.close();

/** CPU µs per run of a run manager whose agent reads `turns` earlier turns (the events phase's shape). */
async function runCost(turns: number): Promise<number> {
  const users = 300;
  const runs = 10;
  const log = new MemoryEngine();
  let ended = 0;
  const manager = new RunManager({
    engine: log,
    history: createLogHistoryStore({ engine: log }),
    agent: { ...benchAgent, historyTurns: turns },
    clock: systemClock,
    threadPolicy: 'enqueue',
    runTimeoutMs: 60_000,
    onRunEnded: () => ended++,
  });
  const before = process.cpuUsage();
  for (let r = 0; r < runs; r++) {
    await Promise.all(Array.from({ length: users }, (_, u) => manager.submit(`user-${u}`, { id: `m-${u}-${r}`, threadId: 't1', text: 'steps:8' }, () => {})));
    while (ended < users * (r + 1)) await new Promise((resolve) => setImmediate(resolve));
  }
  const used = process.cpuUsage(before);
  await manager.close();
  return (used.user + used.system) / (users * runs);
}

await runCost(0); // warm
await runCost(20);
const extra: number[] = [];
const base: number[] = [];
for (let round = 0; round < 7; round++) {
  const without = await runCost(0);
  extra.push((await runCost(20)) - without);
  base.push(without);
}
process.stdout.write(
  `\nrun manager alone, 300 users x 10 runs on one thread: ${median(base).toFixed(1)} µs CPU per run reading 0 turns, ` +
    `+${median(extra).toFixed(1)} µs per run start reading 20 (median of 7 paired rounds)\n`,
);
