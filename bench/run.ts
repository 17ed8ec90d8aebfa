/**
 * `npm run bench`: agentwire's gateway against a raw `ws` server, in the same run, on this
 * machine. Each server runs alone in its own child process (so process.cpuUsage and RSS are
 * the server's alone); the load generator is a third process; this process only orchestrates.
 *
 * Every repetition starts a fresh server of each kind and warms both up, then measures, for
 * both kinds back to back (alternating which goes first): idle RSS per ready connection,
 * connection setup rate and server CPU per connection (alternating batches; every connection
 * of the setup phase is a user of its own with a token of its own, so no verification can be
 * served from a cache; then the same batches against a gateway verifying RS256 and one
 * verifying ES256 with a PEM, reported as rates and as ratios to the raw server), time to
 * connection_ready (unloaded, alternating batches; and under a connect storm), and delivered
 * agent events per second with server CPU per event.
 *
 * Flags: --reps <n> (default 5), --quick (small sizes, for a fast sanity run),
 * --only gateway|raw, --phases rss,setup,ttr,events,redis,stream,upstream,archive (a subset; for profiling),
 * --profile (each server runs with --cpu-prof into bench/profiles/<kind>/),
 * --history-turns <n> (the events phase also measures a third server whose agent reads the
 * thread's last n turns at each run start, reported against the gateway whose agent reads none),
 * --json <file> (default bench/results/latest.json).
 *
 * The redis phase (bench/redisPhase.ts) runs after the others, with its own redis-server: the
 * gateway on the Redis engine on one and on two nodes next to the in-memory gateway.
 * --redis-autopipeline adds a one-node configuration with ioredis auto-pipelining (experiment);
 * --redis-users <n> sets the number of users of the redis phase (default 300); --redis-configs
 * memory-1,redis-1,redis-2,redis-1-ap picks its configurations (default the first three).
 *
 * The stream and upstream phases (bench/streamPhase.ts) run last: streamed delta events per
 * second through the gateway (memory and Redis engine) against the raw ws server pushing the same
 * frames, latency from an agent's fragment to its receipt at half that load against the flush
 * window; and an upstream HTTP agent against the same agent in process. --stream-users <n>,
 * --stream-runs <n> (runs per user of the max measurement) and --upstream-runs <n> set their sizes; --stream-configs raw,memory-1,redis-1 picks configurations;
 * --stream-paced-share <x> runs the paced step at that share of the max instead of half (its latency rows are then information, not goals);
 * --stream-paced-rate <n> runs it at n fragments delivered per second for every configuration (engines compared at one load; information too).
 *
 * The archive phase (bench/archivePhase.ts) runs after them, on a database of its own on the
 * machine's PostgreSQL: the write-behind archive's events per second against the events phase's
 * rate (the events phase runs whenever the archive phase does), and `GET …/messages` p50/p99 on
 * a table of 1M events. --archive-events <n> and --archive-table <n> set its sizes (default
 * 200 000 archived, table of 1 000 000), --archive-queries <n> the requests timed.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IpcClient, percentile, spread, type BenchAlgorithm, type ServerUsage, type Spread } from './common.js';
import type { ConnectResult, EventsResult } from './loadCore.js';
import { buildRedisRows, measureRedisPhase, renderRedisTable, type RedisRepResult } from './redisPhase.js';
import { redisServerVersion } from './redisServer.js';
import { archiveSizes, measureArchivePhase, renderArchiveTable, type ArchiveRepResult } from './archivePhase.js';
import {
  measureStreamPhase,
  measureUpstreamPhase,
  renderStreamTable,
  renderUpstreamTable,
  streamSizes,
  type BenchServerFile,
  type StreamRepResult,
  type UpstreamRepResult,
} from './streamPhase.js';

/** `history`: the gateway with an agent that reads earlier turns (--history-turns), events phase only. */
type Kind = 'raw' | 'gateway' | 'history';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const HERE = fileURLToPath(new URL('./', import.meta.url));

// ------------------------------------------------------------------ options

const argv = process.argv.slice(2);
function flag(name: string): boolean {
  return argv.includes(`--${name}`);
}
function option(name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
}

/**
 * The gateway servers run the compiled package (bench/servers/gateway.ts): a dist/ older than
 * a source would measure code that is not there any more.
 */
function requireFreshBuild(): void {
  const built = (path: string) => {
    try {
      return statSync(path).mtimeMs;
    } catch {
      return Number.NEGATIVE_INFINITY;
    }
  };
  for (const name of ['protocol', 'agentwire']) {
    const dist = built(`${ROOT}packages/${name}/dist/index.js`);
    const sources = readdirSync(`${ROOT}packages/${name}/src`, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile());
    const stale = sources.find((entry) => statSync(`${entry.parentPath}/${entry.name}`).mtimeMs > dist);
    if (dist === Number.NEGATIVE_INFINITY || stale) {
      process.stderr.write(
        `bench: packages/${name}/dist is ${stale ? `older than ${stale.name}` : 'missing'}; run \`npm run build\` first (the bench measures the compiled gateway, as \`npm start\` runs it)\n`,
      );
      process.exit(2);
    }
  }
}
requireFreshBuild();

const quick = flag('quick');
const reps = Number(option('reps') ?? (quick ? 1 : 5));
const only = option('only') as Kind | undefined;
const profile = flag('profile');
const jsonOut = option('json') ?? `${HERE}results/latest.json`;
const ALL_PHASES = ['rss', 'setup', 'ttr', 'events', 'redis', 'stream', 'upstream', 'archive'] as const;
/** Phases with their own configurations and servers, measured after the paired raw/gateway repetitions. */
const OWN_PHASES: readonly Phase[] = ['redis', 'stream', 'upstream', 'archive'];
type Phase = (typeof ALL_PHASES)[number];
const phases = new Set<Phase>((option('phases')?.split(',') ?? ALL_PHASES) as Phase[]);
for (const phase of phases) if (!ALL_PHASES.includes(phase)) throw new Error(`--phases: unknown phase ${phase}`);
// The archive's goal is a ratio to the node's max event rate, measured in the same run.
if (phases.has('archive')) phases.add('events');
if (!Number.isInteger(reps) || reps < 1 || reps > 9) throw new Error('--reps must be 1..9');
if (only !== undefined && only !== 'raw' && only !== 'gateway') throw new Error('--only must be gateway or raw');
const historyTurns = option('history-turns') === undefined ? null : Number(option('history-turns'));
if (historyTurns !== null && (!Number.isInteger(historyTurns) || historyTurns < 1 || historyTurns > 1000)) throw new Error('--history-turns must be 1..1000');

const SIZES = quick
  ? {
      warmConns: 50,
      rssConns: 200,
      setupConns: 200,
      setupBatches: 2,
      setupConcurrency: 50,
      unloadedConns: 50,
      unloadedBatches: 2,
      stormConns: 100,
      eventUsers: 20,
      connsPerUser: 2,
      runsPerUser: 3,
      steps: 8,
    }
  : {
      warmConns: 500,
      rssConns: 5000,
      setupConns: 2000,
      setupBatches: 4,
      setupConcurrency: 50,
      unloadedConns: 300,
      unloadedBatches: 3,
      stormConns: 1000,
      eventUsers: 300,
      connsPerUser: 2,
      runsPerUser: 10,
      steps: 8,
    };

const ARCHIVE_SIZE_OVERRIDES = {
  ...(option('archive-events') ? { archiveEvents: Number(option('archive-events')) } : {}),
  ...(option('archive-table') ? { tableEvents: Number(option('archive-table')) } : {}),
  ...(option('archive-queries') ? { queries: Number(option('archive-queries')) } : {}),
};

const pacedShare = option('stream-paced-share');
if (pacedShare !== undefined && !(Number(pacedShare) > 0 && Number(pacedShare) <= 1)) {
  throw new Error(`--stream-paced-share takes a share of the max above 0 and at most 1 (e.g. 0.25), not ${JSON.stringify(pacedShare)}`);
}

const pacedRate = option('stream-paced-rate');
if (pacedRate !== undefined && !(Number.isInteger(Number(pacedRate)) && Number(pacedRate) > 0)) {
  throw new Error(`--stream-paced-rate takes fragments delivered per second, a positive whole number (e.g. 18000), not ${JSON.stringify(pacedRate)}`);
}
if (pacedRate !== undefined && pacedShare !== undefined) throw new Error('--stream-paced-rate and --stream-paced-share exclude each other: give one');

const STREAM_SIZE_OVERRIDES = {
  ...(option('stream-users') ? { users: Number(option('stream-users')) } : {}),
  ...(option('stream-runs') ? { runsPerUser: Number(option('stream-runs')) } : {}),
  ...(pacedShare !== undefined ? { pacedShare: Number(pacedShare) } : {}),
  ...(pacedRate !== undefined ? { pacedRate: Number(pacedRate) } : {}),
  ...(option('upstream-runs') ? { upstreamRuns: Number(option('upstream-runs')) } : {}),
};

/** Whole-run watchdog: the bench never hangs. */
const WATCHDOG_MS = 30 * 60_000;

// ------------------------------------------------------------------ child processes

const children = new Set<ChildProcess>();

function killChildren(): void {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

interface Started {
  child: ChildProcess;
  ipc: IpcClient;
  port: number;
}

function startChild(
  name: string,
  file: string,
  extraExecArgv: string[],
  readyType: string,
  env: Record<string, string> = {},
): Promise<Started & { hello: Record<string, unknown> }> {
  const child = fork(file, [], {
    cwd: ROOT,
    // Without the root tsconfig's paths (workspace packages to their sources), tsx resolves
    // `agentwire` and `@agentwire/protocol` as Node does: to the packages' compiled dist/.
    env: { ...process.env, TSX_TSCONFIG_PATH: `${ROOT}tsconfig.base.json`, ...env },
    execArgv: ['--import', 'tsx', ...extraExecArgv],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const ipc = new IpcClient(name, child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s`)), 30_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited during start-up (code ${code}, signal ${signal})`));
    });
    const onMessage = (message: unknown) => {
      const hello = message as { type?: string; port?: number };
      if (hello?.type !== readyType) return;
      child.off('message', onMessage);
      clearTimeout(timer);
      resolve({ child, ipc, port: hello.port ?? 0, hello: hello as Record<string, unknown> });
    };
    child.on('message', onMessage);
  });
}

/** Asks the child to stop, then makes sure it is gone (by its pid). */
async function stopChild(started: Started): Promise<void> {
  const { child } = started;
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
  try {
    await started.ipc.call('stop', {}, 20_000);
  } catch {
    // fall through to the kill below
  }
  const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 10_000).unref());
  if ((await Promise.race([exited, timeout])) === 'timeout' && child.pid !== undefined) {
    process.kill(child.pid, 'SIGKILL');
    await exited;
  }
}

// ------------------------------------------------------------------ measurements

interface RepResult {
  kind: Kind;
  rep: number;
  rssBaseline: number;
  rssLoaded: number;
  heapBaseline: number;
  heapLoaded: number;
  rssConns: number;
  rssPerConnKiB: number;
  heapPerConnKiB: number;
  setupRate: number;
  cpuPerConnUs: number;
  /** Gateway only: the same setup batches against a gateway verifying RS256 / ES256 (PEM). */
  setupRateRs256: number;
  setupRateEs256: number;
  cpuPerConnRs256Us: number;
  cpuPerConnEs256Us: number;
  /** The system (kernel) part of cpuPerConnUs. */
  sysPerConnUs: number;
  unloadedP50: number;
  unloadedP99: number;
  stormP50: number;
  stormP99: number;
  stormWallMs: number;
  eventsPerSec: number;
  cpuPerEventUs: number;
  delivered: number;
  failures: number;
  failureSamples: string[];
}

/** One server under test within a repetition. */
interface Target {
  readonly kind: Kind;
  readonly server: Started;
  readonly url: string;
  readonly result: RepResult;
}

const cpuOf = (u: ServerUsage) => u.cpuUser + u.cpuSystem;

function users(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
}

/** Key pairs of this run for the RS256 / ES256 setup rates (PEM text, passed to the children by env). */
type BenchKeys = Record<'RS256' | 'ES256', { publicPem: string; privatePem: string }>;

function makeBenchKeys(): BenchKeys {
  const pems = ({ publicKey, privateKey }: ReturnType<typeof generateKeyPairSync>) => ({
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  });
  return {
    RS256: pems(generateKeyPairSync('rsa', { modulusLength: 2048 })),
    ES256: pems(generateKeyPairSync('ec', { namedCurve: 'prime256v1' })),
  };
}

async function startTarget(kind: Kind, rep: number, publicPem?: string): Promise<Target> {
  const file = kind === 'raw' ? `${HERE}servers/rawws.ts` : `${HERE}servers/gateway.ts`;
  const execArgv = ['--expose-gc'];
  if (profile) execArgv.push('--cpu-prof', `--cpu-prof-dir=${HERE}profiles/${kind}`);
  const env: Record<string, string> = {
    ...(publicPem ? { BENCH_JWT_PUBLIC_KEY: publicPem } : {}),
    ...(kind === 'history' ? { BENCH_HISTORY_TURNS: String(historyTurns) } : {}),
  };
  const server = await startChild(`${kind} server`, file, execArgv, 'listening', env);
  const nan = Number.NaN;
  return {
    kind,
    server,
    url: `ws://127.0.0.1:${server.port}/ws`,
    result: {
      kind,
      rep,
      rssBaseline: nan,
      rssLoaded: nan,
      heapBaseline: nan,
      heapLoaded: nan,
      rssConns: 0,
      rssPerConnKiB: nan,
      heapPerConnKiB: nan,
      setupRate: nan,
      cpuPerConnUs: nan,
      setupRateRs256: nan,
      setupRateEs256: nan,
      cpuPerConnRs256Us: nan,
      cpuPerConnEs256Us: nan,
      sysPerConnUs: nan,
      unloadedP50: nan,
      unloadedP99: nan,
      stormP50: nan,
      stormP99: nan,
      stormWallMs: nan,
      eventsPerSec: nan,
      cpuPerEventUs: nan,
      delivered: 0,
      failures: 0,
      failureSamples: [],
    },
  };
}

/**
 * One repetition: a fresh server of each kind, both warmed up, then every phase measured for
 * both kinds back to back (and the setup and unloaded phases in alternating batches), so that
 * the paired values of a repetition see the same machine conditions as far as possible.
 */
async function measureRep(rep: number, order: Kind[], load: IpcClient, keys: BenchKeys | null): Promise<RepResult[]> {
  const targets: Target[] = [];
  const fail = (t: Target, text: string, count = 1) => {
    t.result.failures += count;
    if (t.result.failureSamples.length < 10) t.result.failureSamples.push(text);
  };
  const connect = async (t: Target, phase: string, names: string[], concurrency: number, algorithm: BenchAlgorithm = 'HS256'): Promise<ConnectResult> => {
    await load.call('tokens', { users: names, algorithm }, 60_000);
    const result = await load.call<ConnectResult>('connect', { url: t.url, users: names, concurrency, timeoutMs: 30_000, algorithm }, 120_000);
    if (result.failed > 0) fail(t, `${phase}: ${result.failed} failed (${result.failures.slice(0, 2).join('; ')})`, result.failed);
    return result;
  };
  /**
   * Closes every client, waits (bounded) until the server has torn them all down, then runs a
   * full GC in the server, so that no measurement pays for an earlier one's teardown or garbage.
   */
  const closeAll = async (t: Target) => {
    await load.call('closeAll', {}, 60_000);
    const deadline = Date.now() + 15_000;
    let usage = await t.server.ipc.call<ServerUsage>('usage');
    while (usage.connections > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      usage = await t.server.ipc.call<ServerUsage>('usage');
    }
    if (usage.connections > 0) fail(t, `server still counts ${usage.connections} connections 15 s after close`);
    await t.server.ipc.call('gc');
  };
  const alternate = (i: number) => (i % 2 === 0 ? targets : [...targets].reverse());
  /** The history gateway (--history-turns) takes part in the events phase only. */
  let historyTarget: Target | null = null;

  try {
    for (const kind of order) targets.push(await startTarget(kind, rep));
    if (historyTurns !== null && phases.has('events') && order.includes('gateway')) historyTarget = await startTarget('history', rep);

    // Warm-up: JIT the connect and event paths of each server before anything is measured.
    for (const t of targets.concat(historyTarget ?? [])) {
      if (t.kind !== 'history') {
        await connect(t, 'warmup', users(`warm-r${rep}`, SIZES.warmConns), 50);
        await closeAll(t);
      }
      const warmUsers = users(`warmev-r${rep}`, 20);
      await load.call('tokens', { users: warmUsers });
      await load.call('prepareEvents', { url: t.url, users: warmUsers, connsPerUser: 2 }, 60_000);
      await load.call('runEvents', { runsPerUser: 5, workload: { kind: 'steps', n: SIZES.steps }, tag: `warm-${rep}` }, 60_000);
      await closeAll(t);
    }

    // 1. Idle RSS per ready connection, after GC, over the no-connection baseline.
    if (phases.has('rss')) {
      const rssUsers = users(`rss-r${rep}`, SIZES.rssConns);
      await load.call('tokens', { users: rssUsers }, 60_000);
      for (const t of targets) {
        const base = await t.server.ipc.call<ServerUsage>('gc');
        const connected = await connect(t, 'rss', rssUsers, 100);
        const loaded = await t.server.ipc.call<ServerUsage>('gc');
        if (loaded.connections !== SIZES.rssConns) fail(t, `rss: server reports ${loaded.connections} connections, expected ${SIZES.rssConns}`);
        await closeAll(t);
        Object.assign(t.result, {
          rssBaseline: base.rss,
          rssLoaded: loaded.rss,
          heapBaseline: base.heapUsed,
          heapLoaded: loaded.heapUsed,
          rssConns: connected.ok,
          rssPerConnKiB: (loaded.rss - base.rss) / connected.ok / 1024,
          heapPerConnKiB: (loaded.heapUsed + loaded.external - base.heapUsed - base.external) / connected.ok / 1024,
        });
      }
    }

    // 2. Setup rate and server CPU per connection (auth + lifecycle to connection_ready),
    //    in alternating batches: rate = all connections / all batch wall time.
    if (phases.has('setup')) {
      const totals = new Map<Kind, { ok: number; wallMs: number; cpuUs: number; sysUs: number }>(
        targets.map((t) => [t.kind, { ok: 0, wallMs: 0, cpuUs: 0, sysUs: 0 }]),
      );
      const perBatch = Math.ceil(SIZES.setupConns / SIZES.setupBatches);
      for (let b = 0; b < SIZES.setupBatches; b++) {
        const names = users(`setup-r${rep}-b${b}`, perBatch);
        await load.call('tokens', { users: names }, 60_000);
        for (const t of alternate(b)) {
          const cpu0 = await t.server.ipc.call<ServerUsage>('usage');
          const batch = await connect(t, 'setup', names, SIZES.setupConcurrency);
          const cpu1 = await t.server.ipc.call<ServerUsage>('usage');
          await closeAll(t);
          const total = totals.get(t.kind)!;
          total.ok += batch.ok;
          total.wallMs += batch.wallMs;
          total.cpuUs += cpuOf(cpu1) - cpuOf(cpu0);
          total.sysUs += cpu1.cpuSystem - cpu0.cpuSystem;
        }
      }
      for (const t of targets) {
        const total = totals.get(t.kind)!;
        t.result.setupRate = (total.ok / total.wallMs) * 1000;
        t.result.cpuPerConnUs = total.cpuUs / total.ok;
        t.result.sysPerConnUs = total.sysUs / total.ok;
      }

      // The same batches against a gateway verifying RS256, then one verifying ES256 (PEM keys).
      const gateway = targets.find((t) => t.kind === 'gateway');
      for (const algorithm of gateway && keys ? (['RS256', 'ES256'] as const) : []) {
        const t = await startTarget('gateway', rep, keys![algorithm].publicPem);
        try {
          await connect(t, `warmup ${algorithm}`, users(`warm-${algorithm}-r${rep}`, SIZES.warmConns), 50, algorithm);
          await closeAll(t);
          const total = { ok: 0, wallMs: 0, cpuUs: 0 };
          for (let b = 0; b < SIZES.setupBatches; b++) {
            const names = users(`setup-${algorithm}-r${rep}-b${b}`, perBatch);
            await load.call('tokens', { users: names, algorithm }, 120_000);
            const cpu0 = await t.server.ipc.call<ServerUsage>('usage');
            const batch = await connect(t, `setup ${algorithm}`, names, SIZES.setupConcurrency, algorithm);
            const cpu1 = await t.server.ipc.call<ServerUsage>('usage');
            await closeAll(t);
            total.ok += batch.ok;
            total.wallMs += batch.wallMs;
            total.cpuUs += cpuOf(cpu1) - cpuOf(cpu0);
          }
          const rate = (total.ok / total.wallMs) * 1000;
          if (algorithm === 'RS256') Object.assign(gateway!.result, { setupRateRs256: rate, cpuPerConnRs256Us: total.cpuUs / total.ok });
          else Object.assign(gateway!.result, { setupRateEs256: rate, cpuPerConnEs256Us: total.cpuUs / total.ok });
          gateway!.result.failures += t.result.failures;
          gateway!.result.failureSamples.push(...t.result.failureSamples.slice(0, 10 - gateway!.result.failureSamples.length));
        } finally {
          await load.call('closeAll', {}, 60_000).catch(() => {});
          await stopChild(t.server);
        }
      }
    }

    // 3. Time to connection_ready: one at a time (unloaded, alternating batches), then all at
    //    once (storm).
    if (phases.has('ttr')) {
      const latencies = new Map<Kind, number[]>(targets.map((t) => [t.kind, []]));
      const perBatch = Math.ceil(SIZES.unloadedConns / SIZES.unloadedBatches);
      for (let b = 0; b < SIZES.unloadedBatches; b++) {
        for (const t of alternate(b)) {
          const batch = await connect(t, 'unloaded', users(`ttr-r${rep}-b${b}`, perBatch), 1);
          latencies.get(t.kind)!.push(...batch.latenciesMs);
          await closeAll(t);
        }
      }
      for (const t of alternate(rep)) {
        const storm = await connect(t, 'storm', users(`storm-r${rep}`, SIZES.stormConns), SIZES.stormConns);
        await closeAll(t);
        const unloaded = latencies.get(t.kind)!;
        t.result.unloadedP50 = percentile(unloaded, 50);
        t.result.unloadedP99 = percentile(unloaded, 99);
        t.result.stormP50 = percentile(storm.latenciesMs, 50);
        t.result.stormP99 = percentile(storm.latenciesMs, 99);
        t.result.stormWallMs = storm.wallMs;
      }
    }

    // 4. Delivered events per second and server CPU per delivered event.
    if (phases.has('events')) {
      const eventUsers = users(`ev-r${rep}`, SIZES.eventUsers);
      await load.call('tokens', { users: eventUsers }, 60_000);
      const eventTargets = targets.concat(historyTarget ?? []);
      for (const t of (rep + 1) % 2 === 0 ? eventTargets : [...eventTargets].reverse()) {
        await load.call('prepareEvents', { url: t.url, users: eventUsers, connsPerUser: SIZES.connsPerUser }, 120_000);
        const cpu0 = await t.server.ipc.call<ServerUsage>('usage');
        const events = await load.call<EventsResult>(
          'runEvents',
          { runsPerUser: SIZES.runsPerUser, workload: { kind: 'steps', n: SIZES.steps }, tag: `ev-${rep}`, timeoutMs: 90_000 },
          120_000,
        );
        const cpu1 = await t.server.ipc.call<ServerUsage>('usage');
        await closeAll(t);
        if (events.errorFrames > 0 || events.agentErrors > 0) {
          fail(t, `events: ${events.errorFrames} error frames, ${events.agentErrors} agent_error events`, events.errorFrames + events.agentErrors);
        }
        t.result.eventsPerSec = (events.delivered / events.wallMs) * 1000;
        t.result.cpuPerEventUs = (cpuOf(cpu1) - cpuOf(cpu0)) / events.delivered;
        t.result.delivered = events.delivered;
      }
    }
    return targets.concat(historyTarget ?? []).map((t) => t.result);
  } finally {
    await load.call('closeAll', {}, 60_000).catch(() => {});
    for (const t of targets.concat(historyTarget ?? [])) await stopChild(t.server);
  }
}

// ------------------------------------------------------------------ report

interface Row {
  metric: string;
  unit: string;
  raw: Spread | null;
  gateway: Spread;
  ratio: Spread | null;
  target: string;
  verdict: 'PASS' | 'MISS' | 'info' | 'n/a';
}

function fmt(value: number, digits: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function showSpread(s: Spread | null, digits: number): string {
  if (!s) return '-';
  if (s.values.length === 1 || !Number.isFinite(s.median)) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}

function buildRows(results: RepResult[]): Row[] {
  const of = (kind: Kind) => results.filter((r) => r.kind === kind).sort((a, b) => a.rep - b.rep);
  const raw = of('raw');
  const gw = of('gateway');
  const paired = raw.length === gw.length && raw.length > 0;
  const row = (
    metric: string,
    unit: string,
    pick: (r: RepResult) => number,
    target: { ratioAtLeast?: number; ratioAtMost?: number; absBelow?: number; text: string } | null,
    /** The raw server's value the gateway's is compared with (default: the same metric). */
    pickRaw: (r: RepResult) => number = pick,
  ): Row => {
    const rawS = raw.length > 0 ? spread(raw.map(pickRaw)) : null;
    const gwS = spread(gw.map(pick));
    const ratioS = paired ? spread(gw.map((g, i) => pick(g) / pickRaw(raw[i]!))) : null;
    let verdict: Row['verdict'] = 'info';
    const measured = Number.isFinite(gwS.median) && (target?.absBelow !== undefined || (ratioS !== null && Number.isFinite(ratioS.median)));
    if (target && measured) {
      let pass = true;
      if (target.ratioAtLeast !== undefined) pass &&= ratioS !== null && ratioS.median >= target.ratioAtLeast;
      if (target.ratioAtMost !== undefined) pass &&= ratioS !== null && ratioS.median <= target.ratioAtMost;
      if (target.absBelow !== undefined) pass &&= gwS.median < target.absBelow;
      verdict = pass ? 'PASS' : 'MISS';
    } else if (target) {
      verdict = 'n/a';
    }
    return { metric, unit, raw: rawS, gateway: gwS, ratio: ratioS, target: target?.text ?? '-', verdict };
  };
  return [
    row('connection setup rate', 'conn/s', (r) => r.setupRate, { ratioAtLeast: 0.85, text: 'ratio >= 0.85' }),
    row('server CPU per connection setup', 'µs', (r) => r.cpuPerConnUs, null),
    row('  of which kernel (system) time', 'µs', (r) => r.sysPerConnUs, null),
    row(
      'connection setup rate, RS256 (PEM)',
      'conn/s',
      (r) => r.setupRateRs256,
      null,
      (r) => r.setupRate,
    ),
    row(
      'server CPU per connection setup, RS256',
      'µs',
      (r) => r.cpuPerConnRs256Us,
      null,
      (r) => r.cpuPerConnUs,
    ),
    row(
      'connection setup rate, ES256 (PEM)',
      'conn/s',
      (r) => r.setupRateEs256,
      null,
      (r) => r.setupRate,
    ),
    row(
      'server CPU per connection setup, ES256',
      'µs',
      (r) => r.cpuPerConnEs256Us,
      null,
      (r) => r.cpuPerConnUs,
    ),
    row('idle RSS per ready connection', 'KiB', (r) => r.rssPerConnKiB, { ratioAtMost: 1.5, text: 'ratio <= 1.5' }),
    row('idle RSS per ready connection (abs.)', 'KiB', (r) => r.rssPerConnKiB, { absBelow: 10, text: '< 10 KiB' }),
    row('heap+external per ready connection', 'KiB', (r) => r.heapPerConnKiB, null),
    row('delivered agent events per second', 'events/s', (r) => r.eventsPerSec, { ratioAtLeast: 0.5, text: 'ratio >= 0.5' }),
    row('server CPU per delivered event', 'µs', (r) => r.cpuPerEventUs, null),
    row('time to ready p50, unloaded', 'ms', (r) => r.unloadedP50, null),
    row('time to ready p99, unloaded', 'ms', (r) => r.unloadedP99, { absBelow: 5, text: '< 5 ms' }),
    row(`time to ready p50, storm of ${SIZES.stormConns}`, 'ms', (r) => r.stormP50, null),
    row(`time to ready p99, storm of ${SIZES.stormConns}`, 'ms', (r) => r.stormP99, null),
  ];
}

/**
 * --history-turns: the events phase of the gateway whose agent reads the thread's last n turns
 * at each run start against the gateway whose agent reads none, paired per repetition.
 */
function renderHistoryTable(results: RepResult[], turns: number): string {
  const of = (kind: Kind) => results.filter((r) => r.kind === kind).sort((a, b) => a.rep - b.rep);
  const without = of('gateway');
  const withTurns = of('history');
  const header = ['metric', 'unit', 'agent reads 0 turns', `agent reads ${turns} turns`, `ratio (${turns} / 0)`];
  const body = (
    [
      ['delivered agent events per second', 'events/s', (r: RepResult) => r.eventsPerSec],
      ['server CPU per delivered event', 'µs', (r: RepResult) => r.cpuPerEventUs],
    ] as const
  ).map(([metric, unit, pick]) => [
    metric,
    unit,
    showSpread(spread(without.map(pick)), digitsFor(unit)),
    showSpread(spread(withTurns.map(pick)), digitsFor(unit)),
    withTurns.length === without.length ? showSpread(spread(withTurns.map((r, i) => pick(r) / pick(without[i]!))), 2) : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

function digitsFor(unit: string): number {
  return unit === 'ms' || unit === 'µs' || unit === 'KiB' ? 2 : 0;
}

function renderTable(rows: Row[]): string {
  const header = ['metric', 'unit', 'raw ws', 'agentwire', 'ratio (aw/raw)', 'target', 'result'];
  const body = rows.map((r) => [
    r.metric,
    r.unit,
    showSpread(r.raw, digitsFor(r.unit)),
    showSpread(r.gateway, digitsFor(r.unit)),
    showSpread(r.ratio, 2),
    r.target,
    r.verdict,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

function machine(): string {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    const match = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (match) model = match[1]!.trim();
  } catch {
    // not Linux
  }
  return `${model}, ${cpus().length} cores, Node ${process.version}`;
}

// ------------------------------------------------------------------ main

async function main(): Promise<number> {
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: watchdog fired after ${WATCHDOG_MS / 1000} s; killing children\n`);
    killChildren();
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();
  const began = Date.now();
  const kinds: Kind[] = only ? [only] : ['raw', 'gateway'];
  process.stdout.write(`agentwire bench: ${machine()}\n`);
  process.stdout.write(`${reps} repetition(s), sizes ${JSON.stringify(SIZES)}\n`);
  const loadBefore = loadavg();
  process.stdout.write(`load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')}\n`);

  const redisVersion = phases.has('redis') || phases.has('stream') ? redisServerVersion() : null;
  if (redisVersion) process.stdout.write(`redis-server ${redisVersion}\n`);
  const mainPhases = [...phases].some((p) => !OWN_PHASES.includes(p));
  const keys = phases.has('setup') && kinds.includes('gateway') ? makeBenchKeys() : null;
  const loader = await startChild(
    'load generator',
    `${HERE}load.ts`,
    [],
    'ready',
    keys ? { BENCH_RS256_PRIVATE_KEY: keys.RS256.privatePem, BENCH_ES256_PRIVATE_KEY: keys.ES256.privatePem } : {},
  );
  const results: RepResult[] = [];
  let redisResults: RedisRepResult[] = [];
  let streamResults: StreamRepResult[] = [];
  let upstreamResults: UpstreamRepResult[] = [];
  let archiveResults: ArchiveRepResult[] = [];
  try {
    for (let rep = 1; rep <= (mainPhases ? reps : 0); rep++) {
      const order = rep % 2 === 1 ? kinds : [...kinds].reverse();
      const t0 = Date.now();
      const repResults = await measureRep(rep, order, loader.ipc, keys);
      results.push(...repResults);
      for (const result of repResults) {
        process.stdout.write(
          `rep ${rep} ${result.kind.padEnd(7)} (${((Date.now() - t0) / 1000).toFixed(1)} s for the pair): setup ${fmt(result.setupRate, 0)}/s, ` +
            `cpu/conn ${fmt(result.cpuPerConnUs, 1)} µs, ` +
            (result.kind === 'gateway' && phases.has('setup')
              ? `setup RS256 ${fmt(result.setupRateRs256, 0)}/s (${fmt(result.cpuPerConnRs256Us, 1)} µs), ES256 ${fmt(result.setupRateEs256, 0)}/s (${fmt(result.cpuPerConnEs256Us, 1)} µs), `
              : '') +
            `rss/conn ${fmt(result.rssPerConnKiB, 2)} KiB, ` +
            `events ${fmt(result.eventsPerSec, 0)}/s, cpu/event ${fmt(result.cpuPerEventUs, 2)} µs, ` +
            `ttr p50/p99 ${fmt(result.unloadedP50, 2)}/${fmt(result.unloadedP99, 2)} ms, ` +
            `storm p50/p99 ${fmt(result.stormP50, 1)}/${fmt(result.stormP99, 1)} ms` +
            (result.failures > 0 ? `, FAILURES ${result.failures}: ${result.failureSamples.join(' | ')}` : '') +
            '\n',
        );
      }
    }
    if (phases.has('redis')) {
      process.stdout.write(
        `load average before the redis phase: ${loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}\n`,
      );
      redisResults = await measureRedisPhase({
        reps,
        quick,
        configs: [...(option('redis-configs')?.split(',') ?? ['memory-1', 'redis-1', 'redis-2']), ...(flag('redis-autopipeline') ? ['redis-1-ap'] : [])],
        ...(option('redis-users') ? { users: Number(option('redis-users')) } : {}),
        load: loader.ipc,
        startServer: (name, env) => {
          const execArgv = ['--expose-gc'];
          if (profile) execArgv.push('--cpu-prof', `--cpu-prof-dir=${HERE}profiles/${env.BENCH_REDIS_URL ? 'redis' : 'gateway-memory'}`);
          return startChild(name, `${HERE}servers/gateway.ts`, execArgv, 'listening', env);
        },
        stopServer: stopChild,
        log: (line) => process.stdout.write(`${line}\n`),
      });
    }
    const streamContext = {
      reps,
      quick,
      load: loader.ipc,
      sizes: STREAM_SIZE_OVERRIDES,
      startServer: (name: string, file: BenchServerFile, env: Record<string, string>) => {
        const execArgv = file === 'upstreamAgent' ? [] : ['--expose-gc'];
        if (profile) execArgv.push('--cpu-prof', `--cpu-prof-dir=${HERE}profiles/${name.replaceAll(' ', '-')}`);
        const path = file === 'raw' ? `${HERE}servers/rawws.ts` : `${HERE}servers/${file}.ts`;
        return startChild(name, path, execArgv, 'listening', env);
      },
      stopServer: stopChild,
      log: (line: string) => process.stdout.write(`${line}\n`),
    };
    if (phases.has('stream')) {
      process.stdout.write(
        `load average before the stream phase: ${loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}\n`,
      );
      streamResults = await measureStreamPhase(streamContext, option('stream-configs')?.split(',') ?? undefined);
    }
    if (phases.has('upstream')) {
      process.stdout.write(
        `load average before the upstream phase: ${loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}\n`,
      );
      upstreamResults = await measureUpstreamPhase(streamContext);
    }
    if (phases.has('archive')) {
      process.stdout.write(
        `load average before the archive phase: ${loadavg()
          .map((l) => l.toFixed(2))
          .join(' ')}\n`,
      );
      archiveResults = await measureArchivePhase({
        reps,
        quick,
        sizes: ARCHIVE_SIZE_OVERRIDES,
        startServer: (name, env) => {
          const execArgv = ['--expose-gc'];
          if (profile) execArgv.push('--cpu-prof', `--cpu-prof-dir=${HERE}profiles/archive`);
          return startChild(name, `${HERE}servers/gateway.ts`, execArgv, 'listening', env);
        },
        stopServer: stopChild,
        log: (line) => process.stdout.write(`${line}\n`),
      });
    }
  } finally {
    await stopChild(loader);
    killChildren();
  }

  const rows = mainPhases ? buildRows(results) : [];
  const redisRows = redisResults.length > 0 ? buildRedisRows(redisResults) : [];
  const totalFailures =
    results.reduce((n, r) => n + r.failures, 0) +
    [...redisResults, ...streamResults, ...upstreamResults, ...archiveResults].reduce((n, r) => n + r.failures.length, 0);
  const loadAfter = loadavg();
  process.stdout.write(`load average after: ${loadAfter.map((l) => l.toFixed(2)).join(' ')}\n`);
  if (mainPhases) {
    process.stdout.write(`\n${renderTable(rows)}\n\n`);
    process.stdout.write(`values: median (min–max) over ${reps} repetition(s); ratio = agentwire / raw ws per repetition.\n`);
  }
  if (historyTurns !== null && results.some((r) => r.kind === 'history')) {
    process.stdout.write(`\nEvents phase, agent reading earlier turns (--history-turns ${historyTurns}):\n\n${renderHistoryTable(results, historyTurns)}\n\n`);
  }
  if (redisRows.length > 0) {
    process.stdout.write(
      `\nRedis engine (redis-server ${redisVersion}, the bench's own, on this machine):\n\n${renderRedisTable(redisRows, redisResults, showSpread)}\n\n`,
    );
    process.stdout.write(`values: median (min–max) over ${reps} repetition(s); the verdict uses the median.\n`);
  }
  if (streamResults.length > 0) {
    process.stdout.write(
      `\nStreaming (sizes ${JSON.stringify(streamSizes(quick, STREAM_SIZE_OVERRIDES))}):\n\n${renderStreamTable(streamResults, showSpread)}\n\n`,
    );
  }
  if (upstreamResults.length > 0) {
    process.stdout.write(`\nUpstream HTTP agent against the same agent in process:\n\n${renderUpstreamTable(upstreamResults, showSpread)}\n\n`);
  }
  if (archiveResults.length > 0) {
    const node = { deliveredPerSec: results.filter((r) => r.kind === 'gateway').map((r) => r.eventsPerSec), connsPerUser: SIZES.connsPerUser };
    process.stdout.write(
      `\nPostgreSQL archive (sizes ${JSON.stringify(archiveSizes(quick, ARCHIVE_SIZE_OVERRIDES))}):\n\n${renderArchiveTable(archiveResults, node, showSpread)}\n\n`,
    );
    for (const r of archiveResults) if (r.failures.length > 0) process.stdout.write(`archive r${r.rep} FAILURES: ${r.failures.join(' | ')}\n`);
  }
  process.stdout.write(`Total ${((Date.now() - began) / 1000).toFixed(0)} s. Failures: ${totalFailures}.\n`);
  mkdirSync(dirname(resolvePath(jsonOut)), { recursive: true });
  writeFileSync(
    jsonOut,
    JSON.stringify(
      {
        machine: machine(),
        date: new Date().toISOString(),
        loadBefore,
        loadAfter,
        reps,
        sizes: SIZES,
        rows,
        results,
        redisRows,
        redisResults,
        streamResults,
        upstreamResults,
        archiveResults,
      },
      null,
      2,
    ),
  );
  process.stdout.write(`results written to ${jsonOut}\n`);
  clearTimeout(watchdog);
  return totalFailures > 0 ? 1 : 0;
}

process.once('SIGINT', () => {
  killChildren();
  process.exit(130);
});

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    killChildren();
    process.exitCode = 1;
  },
);
