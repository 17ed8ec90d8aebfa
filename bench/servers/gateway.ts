/**
 * The agentwire side of the benchmark: one gateway (library defaults, in-memory engine, default
 * metrics registry without process metrics) with HS256 auth (or RS256 / ES256 with
 * BENCH_JWT_PUBLIC_KEY), an error-level logger, rate limits
 * and the per-user connection cap raised out of the way, and the fast bench agent.
 *
 * With BENCH_REDIS_URL set, the gateway runs on the Redis engine instead, wired as
 * `agentwire serve` wires it (src/cli/serve.ts): createRedisBackend (RedisEngine + RedisRunStore +
 * RedisPresence on one connection), node id BENCH_NODE_ID; several such processes on one Redis
 * form a cluster.
 *
 * With BENCH_AGENT_URL set, the agent is createHttpAgent (agentwire dialect) in front of that URL
 * (bench/servers/upstreamAgent.ts: the same bench agent over HTTP). BENCH_STREAM_FLUSH_MS sets
 * the delta flush window (default: the library's); the window in use is in the `listening` message.
 * BENCH_HISTORY_TURNS=<n> (--history-turns): the bench agent reads the thread's last n turns at
 * each run start (by default it declares 0 and the history store is not asked).
 *
 * With BENCH_DATABASE_URL set (the archive phase, bench/archivePhase.ts), the gateway's history
 * store is PostgreSQL on that database, as `agentwire serve` wires it with AGENTWIRE_DATABASE_URL,
 * archiving write-behind what its in-memory engine appends; the `archive` command feeds that
 * archive a synthetic log as fast as it takes it.
 *
 * Run only as a child of bench/run.ts (IPC channel required), with --expose-gc. It runs the
 * compiled package (`agentwire`, packages/agentwire/dist), as `npm start` does: not the sources
 * through tsx, whose output differs (e.g. esbuild's `__name` calls on every closure created).
 */
import { DEFAULTS } from '../../packages/agentwire/dist/config/index.js';
// The package as an application imports it: bench/run.ts starts this file with tsx resolving
// `agentwire` to its compiled dist/ (and checks that it is not older than the sources).
import { MemoryEngine, createGateway, createHttpAgent, createLogger, createPostgresHistoryStore, createRedisBackend } from 'agentwire';
import { feedArchive, type ArchiveFeed } from '../archivePhase.js';
import { benchAgent } from '../agent.js';
import { BENCH_HOST, BENCH_SECRET, LoopWatch, fullGc, serveIpc, usageNow } from '../common.js';

if (!process.send) throw new Error('bench/servers/gateway.ts must be started by bench/run.ts (IPC)');

const redisUrl = process.env.BENCH_REDIS_URL;
const logger = createLogger('error');
const redis = redisUrl
  ? (() => {
      const onError = (error: unknown) => logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'redis connection problem');
      // BENCH_REDIS_AUTOPIPELINE=1 (--redis-autopipeline): an experiment through the backend's
      // public redisOptions, not what `agentwire serve` does. Subscriber commands stay unpipelined.
      const redisOptions =
        process.env.BENCH_REDIS_AUTOPIPELINE === '1' ? { enableAutoPipelining: true, autoPipeliningIgnoredCommands: ['ssubscribe', 'sunsubscribe'] } : {};
      return createRedisBackend({ url: redisUrl, onError, redisOptions, ...(process.env.BENCH_NODE_ID ? { nodeId: process.env.BENCH_NODE_ID } : {}) });
    })()
  : null;

// BENCH_JWT_PUBLIC_KEY (set by bench/run.ts for the RS256 / ES256 setup rates): verify with that PEM.
const publicKey = process.env.BENCH_JWT_PUBLIC_KEY;

const agentUrl = process.env.BENCH_AGENT_URL;
const streamFlushMs = process.env.BENCH_STREAM_FLUSH_MS ? Number(process.env.BENCH_STREAM_FLUSH_MS) : DEFAULTS.streamFlushMs;
const historyTurns = process.env.BENCH_HISTORY_TURNS ? Number(process.env.BENCH_HISTORY_TURNS) : null;

const databaseUrl = process.env.BENCH_DATABASE_URL;
const archive = databaseUrl
  ? (() => {
      const engine = new MemoryEngine({ retentionEvents: DEFAULTS.retentionEvents });
      const history = createPostgresHistoryStore({
        url: databaseUrl,
        engine,
        logger,
        ...(process.env.BENCH_ARCHIVE_BATCH_EVENTS ? { batchEvents: Number(process.env.BENCH_ARCHIVE_BATCH_EVENTS) } : {}),
      });
      return { engine, history };
    })()
  : null;
await archive?.history.ready();

const gateway = createGateway({
  auth: publicKey ? { publicKey } : { secret: BENCH_SECRET },
  agent: agentUrl ? createHttpAgent({ url: agentUrl }) : historyTurns === null ? benchAgent : { ...benchAgent, historyTurns },
  ...(historyTurns === null ? {} : { historyTurns }),
  streamFlushMs,
  runTimeoutMs: 600_000,
  logger,
  rateLimitPerSec: 1_000_000,
  rateLimitBurst: 1_000_000,
  maxConnectionsPerUser: 1_000_000,
  ...(redis ? { engine: redis.engine, runStore: redis.runStore, presence: redis.presence } : {}),
  ...(archive ? { engine: archive.engine, history: archive.history } : {}),
});

const { port } = await gateway.listen(0, BENCH_HOST);

/** The gateway's own append → fan-out histogram (agentwire_append_to_send_seconds): cumulative bucket counts. */
async function appendToSend(): Promise<{ le: number; count: number }[]> {
  const metric = await gateway.metrics.appendToSend.get();
  return metric.values
    .filter((v) => v.metricName === 'agentwire_append_to_send_seconds_bucket')
    .map((v) => ({ le: v.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(v.labels.le), count: v.value }));
}

/** Delta holds the flush window ended so far, and those that outlasted it (agentwire_delta_holds_*). */
async function deltaHolds(): Promise<{ expired: number; overdue: number }> {
  const total = async (name: string) => (await gateway.metrics.registry.getSingleMetric(name)?.get())?.values[0]?.value ?? Number.NaN;
  return { expired: await total('agentwire_delta_holds_total'), overdue: await total('agentwire_delta_holds_overdue_total') };
}

/** This process's event loop, watched between resetLoopDelay and loopDelay (the paced steps). */
const loopWatch = new LoopWatch();

serveIpc({
  usage: () => usageNow(gateway.connectionCount),
  resetLoopDelay: () => loopWatch.start(),
  loopDelay: () => loopWatch.stop(),
  gc: async () => {
    await fullGc();
    return usageNow(gateway.connectionCount);
  },
  appendToSend,
  deltaHolds,
  archive: (feed: ArchiveFeed) => {
    if (!archive) throw new Error('archive: no BENCH_DATABASE_URL');
    return feedArchive(archive.engine, archive.history, feed);
  },
  stop: async () => {
    await gateway.shutdown();
    await archive?.history.close();
    await redis?.close();
    // Let the reply go out, then exit (a normal exit also writes a --cpu-prof profile).
    setImmediate(() => process.exit(0));
  },
});

process.send({ type: 'listening', port, pid: process.pid, streamFlushMs });
