/**
 * The Redis phase of `npm run bench` (`--phases redis`): the gateway on the Redis engine
 * (RedisEngine + RedisRunStore + RedisPresence, as `agentwire serve` wires them) on one node and
 * on two nodes sharing one redis-server of the bench's own, next to the in-memory gateway, in the
 * same run. Per configuration and repetition:
 *
 * - max: delivered events per second per node, closed loop (each user's sender sends its next
 *   message when its previous run's terminal event arrives), with gateway CPU and redis-server
 *   CPU per delivered event;
 * - paced: open loop at half of that repetition's measured maximum, append-to-delivery latency
 *   per event (client receipt − the event's `ts`) and the gateway's own
 *   agentwire_append_to_send_seconds histogram.
 *
 * In the two-node configuration each user has one connection on each node, and the senders
 * alternate between the nodes, so both nodes execute runs and both deliver every user's events.
 */
import type { Redis } from 'ioredis';
import { bucketPercentile, eventsPerRun, spread, type Buckets, type IpcClient, type ServerUsage, type Spread, type Workload } from './common.js';
import type { EventsResult, PacedResult } from './loadCore.js';
import { NodeGroup, cpuOf, type StartedServer } from './nodeGroup.js';
import { startBenchRedis } from './redisServer.js';

export interface RedisPhaseContext {
  readonly reps: number;
  readonly quick: boolean;
  /**
   * Configurations to measure, by name: memory-1, redis-1, redis-2; redis-1-ap (one node with
   * ioredis auto-pipelining on, an experiment); redis-1-tick, redis-2-tick (the bench agent
   * yields each step in its own tick, as a streaming agent does). See docs/BENCHMARKS.md.
   */
  readonly configs: readonly string[];
  /** Users in the max and paced steps (default 300, --quick 20); each has connsPerUser connections. */
  readonly users?: number;
  readonly load: IpcClient;
  readonly startServer: (name: string, env: Record<string, string>) => Promise<StartedServer>;
  readonly stopServer: (server: StartedServer) => Promise<void>;
  readonly log: (line: string) => void;
}

export type ConfigName = 'memory-1' | 'redis-1' | 'redis-2' | 'redis-1-ap' | 'redis-1-tick' | 'redis-2-tick';
interface Config {
  name: ConfigName;
  label: string;
  nodes: number;
  redis: boolean;
  autoPipeline?: boolean;
  /** The bench agent yields each step in its own tick (BENCH_AGENT_STEP=tick). */
  stepPerTick?: boolean;
}
const CONFIGS: readonly Config[] = [
  { name: 'memory-1', label: 'memory, 1 node', nodes: 1, redis: false },
  { name: 'redis-1', label: 'redis, 1 node', nodes: 1, redis: true },
  { name: 'redis-2', label: 'redis, 2 nodes', nodes: 2, redis: true },
  { name: 'redis-1-ap', label: 'redis, 1 node, auto-pipelined', nodes: 1, redis: true, autoPipeline: true },
  { name: 'redis-1-tick', label: 'redis, 1 node, a step per tick', nodes: 1, redis: true, stepPerTick: true },
  { name: 'redis-2-tick', label: 'redis, 2 nodes, a step per tick', nodes: 2, redis: true, stepPerTick: true },
];
function chosenConfigs(names: readonly string[]): Config[] {
  for (const name of names) {
    if (!CONFIGS.some((c) => c.name === name))
      throw new Error(`--redis-configs: unknown configuration ${name} (known: ${CONFIGS.map((c) => c.name).join(', ')})`);
  }
  return CONFIGS.filter((c) => names.includes(c.name));
}

export interface RedisRepResult {
  config: ConfigName;
  rep: number;
  nodes: number;
  maxPerNode: number;
  cpuPerEventUs: number;
  redisCpuPerEventUs: number;
  /** The load generator's CPU per delivered event (it shares the machine). */
  loadCpuPerEventUs: number;
  delivered: number;
  pacedTargetPerNode: number;
  pacedPerNode: number;
  p50: number;
  p90: number;
  p99: number;
  maxLatency: number;
  /** Upper bound of the histogram bucket holding the p50 / p99 of the gateway's append→send. */
  serverP50: number;
  serverP99: number;
  /** Largest p99 / max event-loop delay of the gateway processes over the paced step, ms. */
  loopDelayP99: number;
  loopDelayMax: number;
  /** redis-server INFO commandstats over the max step: command → calls per delivered event, µs per call. */
  commandStats: Record<string, { callsPerEvent: number; usecPerCall: number }>;
  failures: string[];
}

async function redisCpuUs(redis: Redis | null): Promise<number> {
  if (!redis) return 0;
  const info = await redis.info('cpu');
  const user = Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]);
  const sys = Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1]);
  return (user + sys) * 1e6;
}

export async function measureRedisPhase(ctx: RedisPhaseContext): Promise<RedisRepResult[]> {
  const SIZES = ctx.quick
    ? { users: 20, connsPerUser: 2, runsPerUser: 3, steps: 8, pacedSeconds: 1.5 }
    : { users: 300, connsPerUser: 2, runsPerUser: 10, steps: 8, pacedSeconds: 4 };
  if (ctx.users !== undefined) SIZES.users = ctx.users;
  const workload: Workload = { kind: 'steps', n: SIZES.steps };
  const perRun = eventsPerRun(workload)!;
  const configs = chosenConfigs(ctx.configs);
  const redisServer = await startBenchRedis();
  const admin = redisServer.admin;
  const results: RedisRepResult[] = [];
  try {
    for (let rep = 1; rep <= ctx.reps; rep++) {
      // Rotate the order so no configuration always runs first (or last).
      const order = configs.map((_, i) => configs[(i + rep - 1) % configs.length]!);
      for (const config of order) {
        await redisServer.reset();
        const servers: StartedServer[] = [];
        const result: RedisRepResult = {
          config: config.name,
          rep,
          nodes: config.nodes,
          maxPerNode: Number.NaN,
          cpuPerEventUs: Number.NaN,
          redisCpuPerEventUs: Number.NaN,
          loadCpuPerEventUs: Number.NaN,
          delivered: 0,
          pacedTargetPerNode: Number.NaN,
          pacedPerNode: Number.NaN,
          p50: Number.NaN,
          p90: Number.NaN,
          p99: Number.NaN,
          maxLatency: Number.NaN,
          serverP50: Number.NaN,
          serverP99: Number.NaN,
          loopDelayP99: Number.NaN,
          loopDelayMax: Number.NaN,
          commandStats: {},
          failures: [],
        };
        try {
          for (let n = 0; n < config.nodes; n++) {
            const env: Record<string, string> = config.redis ? { BENCH_REDIS_URL: redisServer.url, BENCH_NODE_ID: `bench-node-${n + 1}` } : {};
            if (config.autoPipeline) env.BENCH_REDIS_AUTOPIPELINE = '1';
            if (config.stepPerTick) env.BENCH_AGENT_STEP = 'tick';
            servers.push(await ctx.startServer(`${config.name} node ${n + 1}`, env));
          }
          const group = new NodeGroup(servers, ctx.load, result.failures);
          const redis = config.redis ? admin : null;
          const usage = () => group.usage();
          const closeAll = () => group.closeAll();
          const prepare = (prefix: string) => group.prepare(prefix, SIZES.users, SIZES.connsPerUser);
          const check = (what: string, r: { errorFrames: number; agentErrors: number }) => {
            if (r.errorFrames > 0 || r.agentErrors > 0) result.failures.push(`${what}: ${r.errorFrames} error frames, ${r.agentErrors} agent_error events`);
          };

          // Warm-up (not measured).
          await group.prepare(`rw-${config.name}-r${rep}`, 20, 2);
          await ctx.load.call('runEvents', { runsPerUser: 5, workload, tag: `rwarm-${rep}` }, 60_000);
          await closeAll();

          // Maximum: closed loop.
          await prepare(`rmax-${config.name}-r${rep}`);
          if (redis) await redis.config('RESETSTAT');
          const cpu0 = await usage();
          const load0 = await ctx.load.call<ServerUsage>('usage');
          const redis0 = await redisCpuUs(redis);
          const events = await ctx.load.call<EventsResult>(
            'runEvents',
            { runsPerUser: SIZES.runsPerUser, workload, tag: `rmax-${rep}`, timeoutMs: 120_000 },
            150_000,
          );
          const cpu1 = await usage();
          const load1 = await ctx.load.call<ServerUsage>('usage');
          const redis1 = await redisCpuUs(redis);
          const stats = redis ? await redis.info('commandstats') : '';
          await closeAll();
          for (const match of stats.matchAll(/cmdstat_(\w+):calls=(\d+),usec=\d+,usec_per_call=([\d.]+)/g)) {
            result.commandStats[match[1]!] = { callsPerEvent: Number(match[2]) / events.delivered, usecPerCall: Number(match[3]) };
          }
          check('max', events);
          const serverCpu = cpu1.reduce((n, u, i) => n + cpuOf(u) - cpuOf(cpu0[i]!), 0);
          result.delivered = events.delivered;
          result.maxPerNode = ((events.delivered / events.wallMs) * 1000) / config.nodes;
          result.cpuPerEventUs = serverCpu / events.delivered;
          result.redisCpuPerEventUs = config.redis ? (redis1 - redis0) / events.delivered : Number.NaN;
          result.loadCpuPerEventUs = (cpuOf(load1) - cpuOf(load0)) / events.delivered;

          // Paced: open loop at half the maximum just measured.
          await prepare(`rpaced-${config.name}-r${rep}`);
          const targetPerNode = result.maxPerNode / 2;
          const eventsPerMessage = perRun * SIZES.connsPerUser;
          const messagesPerSec = (targetPerNode * config.nodes) / eventsPerMessage;
          const messages = Math.max(10, Math.round(messagesPerSec * SIZES.pacedSeconds));
          const hist0 = await Promise.all(servers.map((s) => s.ipc.call<Buckets>('appendToSend')));
          await Promise.all(servers.map((s) => s.ipc.call('resetLoopDelay')));
          const paced = await ctx.load.call<PacedResult>('runPaced', { messagesPerSec, messages, workload, tag: `rpaced-${rep}`, timeoutMs: 120_000 }, 150_000);
          const hist1 = await Promise.all(servers.map((s) => s.ipc.call<Buckets>('appendToSend')));
          const delays = await Promise.all(servers.map((s) => s.ipc.call<{ p99: number; max: number }>('loopDelay')));
          await closeAll();
          check('paced', paced);
          Object.assign(result, {
            pacedTargetPerNode: targetPerNode,
            pacedPerNode: ((paced.delivered / paced.wallMs) * 1000) / config.nodes,
            p50: paced.p50,
            p90: paced.p90,
            p99: paced.p99,
            maxLatency: paced.max,
            serverP50: bucketPercentile(hist0, hist1, 50),
            serverP99: bucketPercentile(hist0, hist1, 99),
            loopDelayP99: Math.max(...delays.map((d) => d.p99)),
            loopDelayMax: Math.max(...delays.map((d) => d.max)),
          });
        } catch (error) {
          result.failures.push(error instanceof Error ? error.message : String(error));
        } finally {
          await ctx.load.call('closeAll', {}, 60_000).catch(() => {});
          for (const s of servers) await ctx.stopServer(s);
        }
        results.push(result);
        ctx.log(
          `redis rep ${rep} ${config.name}: max ${Math.round(result.maxPerNode)} events/s/node, cpu/event ${result.cpuPerEventUs.toFixed(2)} µs ` +
            `(+ redis ${result.redisCpuPerEventUs.toFixed(2)} µs, + load generator ${result.loadCpuPerEventUs.toFixed(2)} µs); paced ${Math.round(result.pacedPerNode)}/s/node ` +
            `(target ${Math.round(result.pacedTargetPerNode)}): append→delivery p50/p90/p99/max ${result.p50}/${result.p90}/${result.p99}/${result.maxLatency} ms, ` +
            `server append→send p50/p99 <= ${result.serverP50}/${result.serverP99} ms, ` +
            `event-loop delay p99/max ${result.loopDelayP99.toFixed(1)}/${result.loopDelayMax.toFixed(1)} ms` +
            (config.redis
              ? `\n  redis commands per delivered event (µs per call): ${Object.entries(result.commandStats)
                  .sort((a, b) => b[1].callsPerEvent * b[1].usecPerCall - a[1].callsPerEvent * a[1].usecPerCall)
                  .map(([name, s]) => `${name} ${s.callsPerEvent.toFixed(3)} (${s.usecPerCall.toFixed(1)})`)
                  .join(', ')}`
              : '') +
            (result.failures.length > 0 ? `, FAILURES: ${result.failures.join(' | ')}` : ''),
        );
      }
    }
  } finally {
    await redisServer.stop();
  }
  return results;
}

// ------------------------------------------------------------------ report

export interface RedisRow {
  metric: string;
  unit: string;
  cells: Partial<Record<ConfigName, Spread>>;
  target: string;
  verdict: string;
}

export function buildRedisRows(results: RedisRepResult[]): RedisRow[] {
  const present = configsIn(results);
  const row = (metric: string, unit: string, pick: (r: RedisRepResult) => number, target?: { text: string; pass: (median: number) => boolean }): RedisRow => {
    const cells: Partial<Record<ConfigName, Spread>> = {};
    for (const c of present) cells[c.name] = spread(results.filter((r) => r.config === c.name).map(pick));
    const verdictOf = (c: ConfigName) => {
      const median = cells[c]?.median ?? Number.NaN;
      return `${c} ${Number.isFinite(median) ? (target!.pass(median) ? 'PASS' : 'MISS') : 'n/a'}`;
    };
    const verdict = target
      ? present
          .filter((c) => c.redis)
          .map((c) => verdictOf(c.name))
          .join(', ')
      : 'info';
    return { metric, unit, cells, target: target?.text ?? '-', verdict };
  };
  return [
    row('delivered events per second per node (max)', 'events/s', (r) => r.maxPerNode, { text: '>= 30,000', pass: (m) => m >= 30_000 }),
    row('gateway CPU per delivered event (all nodes)', 'µs', (r) => r.cpuPerEventUs),
    row('redis-server CPU per delivered event', 'µs', (r) => r.redisCpuPerEventUs),
    row('load generator CPU per delivered event', 'µs', (r) => r.loadCpuPerEventUs),
    row('paced rate per node (half the max)', 'events/s', (r) => r.pacedPerNode),
    row('append→delivery p50, paced', 'ms', (r) => r.p50),
    row('append→delivery p99, paced', 'ms', (r) => r.p99, { text: '< 10 ms', pass: (m) => m < 10 }),
    row('append→delivery max, paced', 'ms', (r) => r.maxLatency),
    row('server append→send p99 (bucket bound), paced', 'ms', (r) => r.serverP99),
    row('gateway event-loop delay p99, paced (worst node)', 'ms', (r) => r.loopDelayP99),
  ];
}

function configsIn(results: RedisRepResult[]): Config[] {
  return CONFIGS.filter((c) => results.some((r) => r.config === c.name));
}

export function renderRedisTable(rows: RedisRow[], results: RedisRepResult[], fmtSpread: (s: Spread, digits: number) => string): string {
  const present = configsIn(results);
  const header = ['metric', 'unit', ...present.map((c) => c.label), 'target', 'result'];
  const digits = (unit: string) => (unit === 'ms' || unit === 'µs' ? 2 : 0);
  const body = rows.map((r) => [r.metric, r.unit, ...present.map((c) => fmtSpread(r.cells[c.name]!, digits(r.unit))), r.target, r.verdict]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}
