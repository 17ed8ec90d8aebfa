/**
 * The upstream phase (`npm run bench:upstream`): the overhead of running agents over HTTP.
 * 200 users each start one run whose agent streams 300 text deltas at 100 deltas/s, through one
 * gateway process, twice in the same bench run: with the agent in process, and with the same
 * pacing from an upstream HTTP agent (its own process; the gateway's createHttpAgent reads it).
 * Reported per variant: delivered deltas/s, gateway CPU per delta (process.cpuUsage of the
 * gateway, user + system), and event stamp -> delivery latency p50 / p99 (the event's `ts` is
 * stamped by the gateway when it queues the event for the log; the client reads Date.now() on
 * receipt: same machine, same clock).
 * Flags: --runs <n> (concurrent runs, default 200), --deltas <n> (per run, default 300).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { signToken } from '../packages/agentwire/src/index.js';
import { BENCH_HOST, BENCH_SECRET, IpcClient, percentile, type ServerUsage } from './common.js';
import { PROTOCOL_NAME, TOKEN_PROTOCOL_PREFIX } from '@agentwire/protocol';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const option = (name: string, fallback: number) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const RUNS = option('runs', 200);
const DELTAS = option('deltas', 300);
const children = new Set<ChildProcess>();

async function start(file: string, env: Record<string, string> = {}): Promise<{ ipc: IpcClient; port: number }> {
  const child = fork(file, [], { cwd: ROOT, env: { ...process.env, ...env }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const ipc = new IpcClient(file, child);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${file} exited during start-up (code ${code})`)));
    child.on('message', (message: { type?: string; port?: number }) => {
      if (message?.type === 'listening') resolve(message.port!);
    });
  });
  return { ipc, port };
}

async function stop(server: { ipc: IpcClient }): Promise<void> {
  await server.ipc.call('stop', {}, 30_000).catch(() => {});
}

interface Variant {
  readonly name: string;
  readonly deltasPerSec: number;
  readonly cpuUsPerDelta: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly wallMs: number;
}

/** One user per run: connect all, then start every run at once and wait for every terminal event. */
async function measure(name: string, gatewayPort: number, gateway: IpcClient): Promise<Variant> {
  const url = `ws://${BENCH_HOST}:${gatewayPort}/ws`;
  const latencies: number[] = [];
  let deltas = 0;
  let done = 0;
  let resolveAll: () => void = () => {};
  const allDone = new Promise<void>((resolve) => (resolveAll = resolve));
  const sockets = await Promise.all(
    Array.from({ length: RUNS }, async (_, i) => {
      const { token } = await signToken(BENCH_SECRET, { sub: `${name}-user-${i}`, ttlSec: 3600 });
      const ws = new WebSocket(url, [PROTOCOL_NAME, `${TOKEN_PROTOCOL_PREFIX}${token}`]);
      await new Promise<void>((resolve, reject) => {
        ws.on('message', (data) => {
          const frame = JSON.parse((data as Buffer).toString()) as { type: string; ts?: string };
          if (frame.type === 'connection_ready') resolve();
          else if (frame.type === 'agent_text_delta') {
            deltas++;
            latencies.push(Date.now() - Date.parse(frame.ts!));
          } else if (frame.type === 'agent_completed' || frame.type === 'agent_error') {
            if (frame.type === 'agent_error') process.stderr.write(`${name}: ${(data as Buffer).toString()}\n`);
            if (++done === RUNS) resolveAll();
          }
        });
        ws.once('error', reject);
      });
      return ws;
    }),
  );
  const before = await gateway.call<ServerUsage>('usage');
  const started = Date.now();
  sockets.forEach((ws, i) => ws.send(JSON.stringify({ type: 'user_message', id: `m-${i}`, thread_id: 't', text: `deltas:${DELTAS}` })));
  await allDone;
  const wallMs = Date.now() - started;
  const after = await gateway.call<ServerUsage>('usage');
  for (const ws of sockets) ws.close();
  const cpuUs = after.cpuUser + after.cpuSystem - before.cpuUser - before.cpuSystem;
  if (deltas !== RUNS * DELTAS) throw new Error(`${name}: ${deltas} deltas delivered, expected ${RUNS * DELTAS}`);
  return {
    name,
    deltasPerSec: deltas / (wallMs / 1000),
    cpuUsPerDelta: cpuUs / deltas,
    latencyP50Ms: percentile(latencies, 50),
    latencyP99Ms: percentile(latencies, 99),
    wallMs,
  };
}

try {
  process.stdout.write(`upstream phase: ${RUNS} concurrent runs x ${DELTAS} deltas at 100/s; ${cpus().length} cores; load ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
  const results: Variant[] = [];
  {
    const gateway = await start('bench/servers/streamingGateway.ts');
    results.push(await measure('in-process', gateway.port, gateway.ipc));
    await stop(gateway);
  }
  {
    const agent = await start('bench/servers/pacedAgent.ts');
    const gateway = await start('bench/servers/streamingGateway.ts', { BENCH_AGENT_URL: `http://${BENCH_HOST}:${agent.port}/run` });
    results.push(await measure('http-upstream', gateway.port, gateway.ipc));
    await stop(gateway);
    await stop(agent);
  }
  process.stdout.write('| agent | delivered deltas/s | gateway CPU µs/delta | stamp→delivery p50 ms | p99 ms | wall s |\n| --- | --- | --- | --- | --- | --- |\n');
  for (const r of results) {
    process.stdout.write(`| ${r.name} | ${r.deltasPerSec.toFixed(0)} | ${r.cpuUsPerDelta.toFixed(1)} | ${r.latencyP50Ms} | ${r.latencyP99Ms} | ${(r.wallMs / 1000).toFixed(1)} |\n`);
  }
  const [local, http] = results as [Variant, Variant];
  process.stdout.write(`ratio http/in-process: CPU per delta ${(http.cpuUsPerDelta / local.cpuUsPerDelta).toFixed(2)}x, p99 ${(http.latencyP99Ms / Math.max(1, local.latencyP99Ms)).toFixed(2)}x\n`);
} finally {
  for (const child of children) if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
}
