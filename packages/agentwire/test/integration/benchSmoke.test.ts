import { fork, type ChildProcess } from 'node:child_process';
import pg from 'pg';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { benchAgent } from '../../../../bench/agent.js';
import { BENCH_SECRET, IpcClient, eventsPerRun, median, percentile, type ServerUsage, type Workload } from '../../../../bench/common.js';
import { LoadClient } from '../../../../bench/loadCore.js';
import type { StartedServer } from '../../../../bench/nodeGroup.js';
import { measureStreamPhase, measureUpstreamPhase, type BenchServerFile, type StreamSizes } from '../../../../bench/streamPhase.js';
import { measureArchivePhase } from '../../../../bench/archivePhase.js';
import { MACHINE_POSTGRES } from '../helpers/postgres.js';
import { createGateway, type Gateway } from '../../src/index.js';

/**
 * The benchmark's measurement code (bench/loadCore.ts) on a tiny load against both bench
 * servers: connection counts, latencies, and exact event counting. Not a benchmark.
 */
const CONNS = 20;
const USERS = 5;
const CONNS_PER_USER = 2;
const RUNS = 3;
const STEPS = 4;

let gateway: Gateway | null = null;
/** Bench child processes of the current test, killed (by pid) after it. */
const children = new Set<ChildProcess>();
let load: LoadClient | null = null;

afterEach(async () => {
  await load?.closeAll(5000);
  load = null;
  await gateway?.shutdown();
  gateway = null;
  for (const child of children) {
    children.delete(child);
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(child.pid, 'SIGKILL');
    await exited;
  }
});

const users = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

async function startGatewayServer(): Promise<string> {
  gateway = createGateway({
    auth: { secret: BENCH_SECRET },
    agent: benchAgent,
    rateLimitPerSec: 1_000_000,
    rateLimitBurst: 1_000_000,
    maxConnectionsPerUser: 1_000_000,
  });
  const { url } = await gateway.listen(0, '127.0.0.1');
  return url;
}

/** Forks a bench child (bench/<path>.ts) and waits for its ready message. */
async function startBenchChild(path: string, readyType: string, env: Record<string, string> = {}): Promise<StartedServer> {
  const child = fork(fileURLToPath(new URL(`../../../../bench/${path}.ts`, import.meta.url)), [], {
    // As bench/run.ts starts it: the gateway server runs the compiled package (dist/).
    env: { ...process.env, TSX_TSCONFIG_PATH: fileURLToPath(new URL('../../../../tsconfig.base.json', import.meta.url)), ...env },
    execArgv: ['--import', 'tsx', '--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  const ipc = new IpcClient(path, child);
  return new Promise<StartedServer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${path} did not start within 15 s`)), 15_000);
    child.once('exit', (code) => reject(new Error(`${path} exited with ${code}`)));
    child.on('message', (message: { type?: string; port?: number }) => {
      if (message?.type !== readyType) return;
      clearTimeout(timer);
      resolve({ child, ipc, port: message.port ?? 0, hello: message as Record<string, unknown> });
    });
  });
}

async function startRawServer(): Promise<{ url: string; ipc: IpcClient }> {
  const { port, ipc } = await startBenchChild('servers/rawws', 'listening');
  return { url: `ws://127.0.0.1:${port}/ws`, ipc };
}

async function checkConnectAndEvents(url: string, workload: Workload = { kind: 'steps', n: STEPS }): Promise<number> {
  load = new LoadClient();
  const connected = await load.connectMany({ url, users: users('smoke', CONNS), concurrency: 5, timeoutMs: 10_000 });
  expect(connected.failures).toEqual([]);
  expect(connected.ok).toBe(CONNS);
  expect(connected.failed).toBe(0);
  expect(connected.latenciesMs).toHaveLength(CONNS);
  for (const ms of connected.latenciesMs) {
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThan(10_000);
  }
  expect(connected.wallMs).toBeGreaterThanOrEqual(Math.max(...connected.latenciesMs));
  expect(load.openCount).toBe(CONNS);
  expect(await load.closeAll()).toBe(CONNS);
  expect(load.openCount).toBe(0);

  const prepared = await load.prepareEvents({ url, users: users('smoke-ev', USERS), connsPerUser: CONNS_PER_USER });
  expect(prepared.ok).toBe(USERS * CONNS_PER_USER);
  const events = await load.runEvents({ runsPerUser: RUNS, workload, tag: 'smoke', timeoutMs: 10_000 });
  const expected = USERS * CONNS_PER_USER * RUNS * eventsPerRun(workload)!;
  const deltaFrames = workload.kind === 'deltas' ? USERS * CONNS_PER_USER * RUNS * workload.n : 0;
  expect(events).toMatchObject({ delivered: expected, deltaFrames, expected, runs: USERS * RUNS, errorFrames: 0, agentErrors: 0 });
  expect(events.wallMs).toBeGreaterThan(0);
  return events.delivered;
}

describe('bench measurement code on a tiny load', () => {
  it('counts connections and every delivered event exactly against the gateway', async () => {
    const url = await startGatewayServer();
    const delivered = await checkConnectAndEvents(url);
    // The gateway's own count of durable events sent agrees with the load generator's.
    const sent = (await gateway!.metrics.eventsSent.get()).values.reduce((sum, v) => sum + v.value, 0);
    expect(sent).toBe(delivered);
  });

  it('counts connections and every delivered event exactly against the raw ws server', async () => {
    const { url, ipc } = await startRawServer();
    await checkConnectAndEvents(url);
    const usage = await ipc.call<ServerUsage>('usage', {}, 5000);
    expect(usage.connections).toBe(USERS * CONNS_PER_USER);
    const collected = await ipc.call<ServerUsage>('gc', {}, 5000);
    expect(collected.rss).toBeGreaterThan(0);
    expect(collected.cpuUser + collected.cpuSystem).toBeGreaterThan(0);
  });

  it('counts streamed deltas exactly: each fragment of a deltas run is its own event, from the gateway and from the raw ws server alike', async () => {
    const workload: Workload = { kind: 'deltas', n: 5 };
    await checkConnectAndEvents(await startGatewayServer(), workload);
    await load!.closeAll();
    await checkConnectAndEvents((await startRawServer()).url, workload);
  });

  it('runs the stream and upstream phases on a tiny configuration (memory and Redis engines, HTTP upstream)', async () => {
    const loader = await startBenchChild('load', 'ready');
    const sizes: StreamSizes = {
      users: 3,
      connsPerUser: 2,
      runsPerUser: 2,
      deltas: 6,
      streamFragments: 5,
      pacedSeconds: 0.3,
      pacedShare: 0.5,
      pacedRate: null,
      upstreamRuns: 3,
      upstreamFragments: 5,
    };
    const started: StartedServer[] = [];
    const context = {
      reps: 1,
      quick: true,
      load: loader.ipc,
      sizes,
      startServer: async (_name: string, file: BenchServerFile, env: Record<string, string>) => {
        const server = await startBenchChild(file === 'raw' ? 'servers/rawws' : `servers/${file}`, 'listening', env);
        started.push(server);
        return server;
      },
      stopServer: async (server: StartedServer) => {
        await server.ipc.call('stop', {}, 10_000).catch(() => {});
      },
      log: () => {},
    };
    const stream = await measureStreamPhase(context);
    expect(stream.map((r) => [r.config, r.failures])).toEqual([
      ['raw', []],
      ['memory-1', []],
      ['redis-1', []],
    ]);
    for (const r of stream) {
      expect(r.maxDeltasPerSec).toBeGreaterThan(0);
      expect(r.cpuPerDeltaUs).toBeGreaterThan(0);
      expect(r.ratioToRaw).toBeGreaterThan(0);
    }
    for (const r of stream.filter((s) => s.config !== 'raw')) {
      expect(r.flushMs).toBe(20);
      expect(r.pacedFragmentsPerSec).toBeGreaterThan(0);
      // Merging never makes more deltas than fragments.
      expect(r.pacedDeltasPerSec).toBeLessThanOrEqual(r.pacedFragmentsPerSec);
      expect(r.fragmentP99).toBeGreaterThanOrEqual(r.fragmentP50);
      expect(r.fragmentMax).toBeGreaterThanOrEqual(r.fragmentP99);
      // The paced step's diagnostics were taken, in the gateway and in the load generator.
      expect(r.loopUtilization).toBeGreaterThan(0);
      expect(r.loopUtilization).toBeLessThanOrEqual(1);
      expect(r.gcShare).toBeGreaterThanOrEqual(0);
      expect(r.loopDelayP99).toBeGreaterThan(0);
      expect(r.loadLoopDelayP99).toBeGreaterThan(0);
      // The share of the holds the window ended that outlasted it (0 if the run's pace ended them all).
      expect(r.overdueHoldShare).toBeGreaterThanOrEqual(0);
      expect(r.overdueHoldShare).toBeLessThanOrEqual(1);
    }

    const upstream = await measureUpstreamPhase(context);
    expect(upstream.map((r) => [r.variant, r.failures])).toEqual([
      ['in-process', []],
      ['http-upstream', []],
    ]);
    for (const r of upstream) {
      expect(r.fragmentsPerSec).toBeGreaterThan(0);
      expect(r.cpuPerFragmentUs).toBeGreaterThan(0);
    }
    expect(upstream[1]!.upstreamCpuPerFragmentUs).toBeGreaterThan(0);
    // Every server the phases started was stopped by them (else this waits into the test's timeout).
    await Promise.all(
      started.map((s) =>
        s.child.exitCode !== null || s.child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => s.child.once('exit', resolve)),
      ),
    );
  }, 120_000);

  it('runs the archive phase on a tiny configuration (its own database, dropped after)', async () => {
    const started: StartedServer[] = [];
    const [result, ...more] = await measureArchivePhase({
      reps: 1,
      quick: true,
      sizes: { archiveEvents: 5000, tableEvents: 10_000, queries: 20, concurrency: 2 },
      postgresUrl: MACHINE_POSTGRES,
      startServer: async (_name, env) => {
        const server = await startBenchChild('servers/gateway', 'listening', env);
        started.push(server);
        return server;
      },
      stopServer: async (server) => {
        await server.ipc.call('stop', {}, 10_000).catch(() => {});
      },
      log: () => {},
    });
    expect(more).toEqual([]);
    expect(result!.failures).toEqual([]);
    // One user: 10 threads of 25 runs of 20 events, the newest run of its first thread unfinished.
    expect(result!.archived).toBe(4999);
    expect(result!.tableEvents).toBe(2 * 4999);
    expect(result!.eventsPerSec).toBeGreaterThan(0);
    expect(result!.gatewayCpuPerEventUs).toBeGreaterThan(0);
    expect(result!.sequentialP99).toBeGreaterThanOrEqual(result!.sequentialP50);
    expect(result!.concurrentP99).toBeGreaterThanOrEqual(result!.concurrentP50);
    const admin = new pg.Client({ connectionString: MACHINE_POSTGRES });
    await admin.connect();
    try {
      expect(result!.database).toMatch(/^agentwire_bench_[a-z0-9]+$/);
      const { rows } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [result!.database]);
      expect(rows).toEqual([]);
    } finally {
      await admin.end();
    }
    await Promise.all(
      started.map((s) =>
        s.child.exitCode !== null || s.child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => s.child.once('exit', resolve)),
      ),
    );
  }, 120_000);

  it('computes medians and nearest-rank percentiles', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(50);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile([5], 99)).toBe(5);
  });
});
