/**
 * The agentwire side of the benchmark: one gateway (library defaults, in-memory engine, default
 * metrics registry without process metrics) with HS256 auth, an error-level logger, rate limits
 * and the per-user connection cap raised out of the way, and the fast bench agent.
 *
 * Run only as a child of bench/run.ts (IPC channel required), with --expose-gc.
 */
import { createGateway, createLogger } from '../../src/index.js';
import { benchAgent } from '../agent.js';
import { BENCH_HOST, BENCH_SECRET, fullGc, serveIpc, usageNow } from '../common.js';

if (!process.send) throw new Error('bench/servers/gateway.ts must be started by bench/run.ts (IPC)');

const gateway = createGateway({
  auth: { secret: BENCH_SECRET },
  agent: benchAgent,
  logger: createLogger('error'),
  rateLimitPerSec: 1_000_000,
  rateLimitBurst: 1_000_000,
  maxConnectionsPerUser: 1_000_000,
});

const { port } = await gateway.listen(0, BENCH_HOST);

serveIpc({
  usage: () => usageNow(gateway.connectionCount),
  gc: async () => {
    await fullGc();
    return usageNow(gateway.connectionCount);
  },
  stop: async () => {
    await gateway.shutdown();
    // Let the reply go out, then exit (a normal exit also writes a --cpu-prof profile).
    setImmediate(() => process.exit(0));
  },
});

process.send({ type: 'listening', port, pid: process.pid });
