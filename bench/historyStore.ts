/**
 * `node --import tsx bench/historyStore.ts [--events <n>] [--requests <n>]`: CPU per request of
 * the log-folded history store (the default one) for one user whose retained log holds
 * `--events` events (default 10 000: the default retention), in process, on the memory engine:
 * the thread list, a messages page, and a run start's conversation lookup (20 turns), each with
 * nothing appended since the previous request and with one run (10 events) appended before
 * each request (a user who keeps chatting). Prints CPU µs per request, median of 5 rounds.
 */
import type { EventBody } from '../packages/protocol/src/index.js';
import { createLogHistoryStore, MemoryEngine } from '../packages/agentwire/src/index.js';

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
