/**
 * The gateway of the upstream phase (bench/upstreamPhase.ts): library defaults, in-memory engine,
 * HS256 with BENCH_SECRET, limits out of the way, and one of two agents streaming the same
 * answer at the same pace: BENCH_AGENT_URL set → the HTTP agent (createHttpAgent, agentwire
 * dialect) in front of bench/servers/pacedAgent.ts; unset → the same pacing in process.
 * `deltas:<n>` → n text deltas, one every BENCH_DELTA_MS (default 10: 100 deltas/s).
 *
 * Run only as a child of bench/upstreamPhase.ts (IPC channel required).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createGateway, createHttpAgent, createLogger, type Agent } from '../../packages/agentwire/src/index.js';
import { BENCH_HOST, BENCH_SECRET, serveIpc, usageNow } from '../common.js';

if (!process.send) throw new Error('bench/servers/streamingGateway.ts must be started by bench/upstreamPhase.ts (IPC)');

const deltaMs = Number(process.env.BENCH_DELTA_MS ?? 10);
const inProcess: Agent = {
  async *run({ text, signal }) {
    const n = Number(/^deltas:(\d{1,5})$/.exec(text)?.[1] ?? 1);
    for (let i = 0; i < n; i++) {
      await sleep(deltaMs, undefined, { signal });
      yield { type: 'text_delta', text: `token${i} ` };
    }
  },
};
const agentUrl = process.env.BENCH_AGENT_URL;

const gateway = createGateway({
  auth: { secret: BENCH_SECRET },
  agent: agentUrl ? createHttpAgent({ url: agentUrl }) : inProcess,
  logger: createLogger('error'),
  rateLimitPerSec: 1_000_000,
  rateLimitBurst: 1_000_000,
  maxConnectionsPerUser: 1_000_000,
  runTimeoutMs: 600_000,
});
const { port } = await gateway.listen(0, BENCH_HOST);
serveIpc({
  usage: () => usageNow(gateway.connectionCount),
  stop: async () => {
    await gateway.shutdown();
    setImmediate(() => process.exit(0));
  },
});
process.send({ type: 'listening', port, pid: process.pid });
