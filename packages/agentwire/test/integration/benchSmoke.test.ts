import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { benchAgent } from '../../../../bench/agent.js';
import { BENCH_SECRET, IpcClient, eventsPerRun, median, percentile, type ServerUsage } from '../../../../bench/common.js';
import { LoadClient } from '../../../../bench/loadCore.js';
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
let rawServer: ChildProcess | null = null;
let load: LoadClient | null = null;

afterEach(async () => {
  await load?.closeAll(5000);
  load = null;
  await gateway?.shutdown();
  gateway = null;
  const child = rawServer;
  rawServer = null;
  if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
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

async function startRawServer(): Promise<{ url: string; ipc: IpcClient }> {
  const child = fork(fileURLToPath(new URL('../../../../bench/servers/rawws.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  rawServer = child;
  const ipc = new IpcClient('raw server', child);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('raw server did not start within 15 s')), 15_000);
    child.once('exit', (code) => reject(new Error(`raw server exited with ${code}`)));
    child.on('message', (message: { type?: string; port?: number }) => {
      if (message?.type !== 'listening') return;
      clearTimeout(timer);
      resolve(message.port!);
    });
  });
  return { url: `ws://127.0.0.1:${port}/ws`, ipc };
}

async function checkConnectAndEvents(url: string): Promise<number> {
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
  const events = await load.runEvents({ runsPerUser: RUNS, steps: STEPS, tag: 'smoke', timeoutMs: 10_000 });
  const expected = USERS * CONNS_PER_USER * RUNS * eventsPerRun(STEPS);
  expect(events).toMatchObject({ delivered: expected, expected, runs: USERS * RUNS, errorFrames: 0, agentErrors: 0 });
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

  it('computes medians and nearest-rank percentiles', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(50);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile([5], 99)).toBe(5);
  });
});
