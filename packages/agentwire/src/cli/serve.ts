import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { signToken } from '../auth/index.js';
import {
  ConfigError,
  loadConfig,
  parseServeFlags,
  redactConfig,
  redactedUrl,
  serveHelp,
  unknownVariableWarnings,
  type GatewayConfig,
} from '../config/index.js';
import { MemoryEngine } from '../engine/index.js';
import { GatewayMetrics, createLogger, type Logger } from '../observability/index.js';
import { createPostgresHistoryStore } from '../postgres/index.js';
import { createRedisBackend, type ClusterNode, type RedisBackend } from '../redis/index.js';
import { createGateway } from '../transport/index.js';
import { createHttpAgent } from '../upstream/index.js';

/**
 * What shutting down may take beyond the drain timeout: the runs' shutdown errors, the 1012
 * closes (clients get 2 s to answer them; the process exit then closes what is left) and
 * closing the engine.
 */
export const SHUTDOWN_GRACE_MS = 2000;

/** `agentwire serve`: one gateway, with the in-memory or Redis engine, in front of the demo agent or an upstream agent over HTTP. */
export async function runServe(argv: string[]): Promise<number> {
  let config: GatewayConfig;
  try {
    const flags = parseServeFlags(argv);
    if (flags.help) {
      process.stdout.write(serveHelp());
      return 0;
    }
    // Before loading: a misspelled key setting is often why loading fails.
    for (const warning of unknownVariableWarnings(process.env)) process.stderr.write(`agentwire: warning: ${warning}\n`);
    config = loadConfig(process.env, flags);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`agentwire: invalid setting ${error.message}\n`);
      return 2;
    }
    throw error;
  }

  const logger = createLogger(config.logLevel);
  const secret = config.jwtSecret ?? (config.devMode ? randomBytes(32).toString('base64url') : undefined);
  // Dev mode opens the test-token route with a key made here and printed below, so that
  // `agentwire storm` can probe the `npm start` gateway (whose secret is never shown).
  const bypassKey = config.e2eBypassKey ?? (config.devMode ? randomBytes(18).toString('base64url') : undefined);
  const chatPageOn = config.chatPage ?? config.devMode;
  const keys = {
    ...(secret ? { secret } : {}),
    ...(config.jwtPublicKey ? { publicKey: config.jwtPublicKey } : {}),
    ...(config.jwksUrl ? { jwksUrl: config.jwksUrl } : {}),
    ...(config.jwtIssuer ? { issuer: config.jwtIssuer } : {}),
    ...(config.jwtAudience ? { audience: config.jwtAudience } : {}),
  };
  const redisAt = config.redisClusterNodes ?? config.redisUrl;
  const redis = redisAt ? redisBackend(config, redisAt, logger) : null;
  const engine =
    redis?.engine ?? new MemoryEngine({ retentionEvents: config.retentionEvents, retentionBytes: config.retentionBytes, retentionMs: config.retentionMs });
  const agent =
    config.agentUrl === undefined
      ? undefined
      : createHttpAgent({
          url: config.agentUrl,
          protocol: config.agentProtocol,
          ...(config.agentHeaders ? { headers: config.agentHeaders } : {}),
          ...(config.agentModel ? { model: config.agentModel } : {}),
          connectTimeoutMs: config.agentConnectTimeoutMs,
        });
  // AGENTWIRE_DATABASE_URL: history archived in PostgreSQL (migrated at start, not ready until then).
  const history = config.databaseUrl
    ? createPostgresHistoryStore({
        url: config.databaseUrl,
        engine,
        poolSize: config.databasePoolSize,
        statementTimeoutMs: config.databaseStatementTimeoutMs,
        batchEvents: config.archiveBatchEvents,
        queueEvents: config.archiveQueueEvents,
        queueBytes: config.archiveQueueBytes,
        logger,
      })
    : undefined;
  history?.ready().catch((error: unknown) => logger.error({ err: error }, 'the history database cannot be used; not ready'));
  const gateway = createGateway({
    auth: keys,
    ...(agent ? { agent } : {}),
    engine,
    ...(history ? { history } : {}),
    // Without Redis, the gateway's in-memory marks follow the engine's retention.
    ...(redis ? { runStore: redis.runStore, presence: redis.presence, threadMarks: redis.threadMarks, lostRunSweepMs: config.runSweepMs } : {}),
    logger,
    metrics: new GatewayMetrics({ defaultMetrics: true }),
    ...(bypassKey && secret ? { testTokens: { bypassKey, secret, ...pick(config, 'jwtIssuer', 'issuer'), ...pick(config, 'jwtAudience', 'audience') } } : {}),
    httpRequestTimeoutMs: config.httpRequestTimeoutMs,
    maxSockets: config.maxSockets,
    authTimeoutMs: config.authTimeoutMs,
    heartbeatMs: config.heartbeatMs,
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    runTimeoutMs: config.runTimeoutMs,
    drainTimeoutMs: config.drainTimeoutMs,
    maxConnectionsPerUser: config.maxConnectionsPerUser,
    maxActiveRunsPerUser: config.maxActiveRunsPerUser,
    threadPolicy: config.threadPolicy,
    maxFrameBytes: config.maxFrameBytes,
    inboxLimit: config.inboxLimit,
    inboxMaxBytes: config.inboxMaxBytes,
    pendingBytesLimit: config.pendingBytesLimit,
    rateLimitPerSec: config.rateLimitPerSec,
    rateLimitBurst: config.rateLimitBurst,
    slowConsumerBytes: config.slowConsumerBytes,
    permessageDeflate: config.permessageDeflate,
    allowedOrigins: config.allowedOrigins,
    demoStepMs: config.demoStepMs,
    streamFlushMs: config.streamFlushMs,
    historyTurns: config.historyTurns,
    // The chat page at / (dev mode, or AGENTWIRE_CHAT_PAGE). Only in dev mode on a loopback host
    // does a page load carry a token for user "demo", and only one that names this machine in its
    // Host: a web site whose name an attacker resolves to 127.0.0.1 (DNS rebinding) could read
    // the page as its own. Elsewhere the page asks for a token.
    chatPage: chatPageOn
      ? config.devMode && secret && isLoopback(config.host)
        ? {
            token: async (req: IncomingMessage) =>
              hostHeaderIsLoopback(req.headers.host) ? (await signToken(secret, { sub: 'demo', ttlSec: 86_400 })).token : null,
          }
        : true
      : false,
  });

  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'draining');
      // Whatever the state of Redis, the process exits 0 in time (PROTOCOL.md section 11): a
      // shutdown whose engine stalls or never came up (appends retried, QUIT unanswered) is cut
      // short. Runs whose shutdown error could not be written keep a lease that lapses, and
      // another node ends them with run_lost.
      const deadline = setTimeout(() => {
        logger.warn({ afterMs: config.drainTimeoutMs + SHUTDOWN_GRACE_MS }, 'shutdown incomplete (engine unreachable?); exiting');
        process.exit(0);
      }, config.drainTimeoutMs + SHUTDOWN_GRACE_MS);
      deadline.unref();
      gateway.shutdown().then(
        async () => {
          // The archive's batch in flight is written (or left to catch-up) before the log closes.
          await history?.close();
          await (redis ?? engine).close();
          clearTimeout(deadline);
          logger.info('stopped');
          resolve(0);
        },
        (error) => {
          clearTimeout(deadline);
          logger.error({ err: error }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });

  let url: string;
  let port: number;
  let host: string;
  try {
    ({ url, port, host } = await gateway.listen(config.port, config.host, { waitForReady: false }));
  } catch (error) {
    process.stderr.write(`agentwire: cannot listen on ${config.host}:${config.port}: ${(error as Error).message}\n`);
    return 1;
  }
  logger.info({ url, node: gateway.runs.nodeId, config: redactConfig(config) }, 'listening');
  process.stdout.write(`agentwire listening on ${url}\n`);
  if (chatPageOn && !config.devMode) process.stdout.write(`chat page on ${pageUrl(host, port)} (it asks for a token)\n`);
  if (!gateway.isReady) logger.info('waiting for the engine before accepting connections (/readyz is 503 until then)');
  gateway.ready().then(
    () => logger.info('ready'),
    (error: unknown) => logger.error({ err: error }, 'engine failed to start'),
  );
  if (config.devMode && secret) {
    const { token } = await signToken(secret, { sub: 'demo', ttlSec: 86_400 });
    process.stdout.write(
      [
        '',
        'Dev mode: no JWT key configured, so this gateway made a random secret.',
        'A token for user "demo" (valid 24 h):',
        '',
        `  ${token}`,
        '',
        config.agentUrl === undefined
          ? 'Talk to the demo agent:'
          : `Talk to the upstream agent at ${redactedUrl(config.agentUrl)} (${config.agentProtocol} dialect):`,
        '',
        `  npx agentwire chat --url ${url} --token ${token} "what is 2+3*4?"`,
        '',
        'Probe it with the storm (it gets tokens from POST /v1/auth/test-token with this bypass key):',
        '',
        `  npx agentwire storm --url ${url} --bypass-key ${bypassKey} --connections 100 --users 10`,
        '',
        ...(chatPageOn
          ? [
              isLoopback(config.host)
                ? `Open ${pageUrl(host, port)} in a browser to chat as "demo" on the chat page.`
                : `Open ${pageUrl(host, port)} in a browser and paste the token above to chat on the chat page.`,
              '',
            ]
          : []),
      ].join('\n') + '\n',
    );
  }
  return stopped;
}

/** The Redis backend: engine, cluster-wide run store and connection presence on one connection. */
function redisBackend(config: GatewayConfig, redisAt: string | readonly ClusterNode[], logger: Logger): RedisBackend {
  let lastError = '';
  const onError = (error: unknown) => {
    // ioredis reports every failed reconnect; log each distinct problem once until it changes.
    const message = error instanceof Error ? error.message : String(error);
    if (message !== lastError) logger.warn({ err: message }, 'redis connection problem');
    lastError = message;
  };
  return createRedisBackend({
    ...(typeof redisAt === 'string' ? { url: redisAt } : { clusterNodes: redisAt }),
    retentionEvents: config.retentionEvents,
    retentionMs: config.retentionMs,
    commandTimeoutMs: config.redisCommandTimeoutMs,
    leaseMs: config.runLeaseMs,
    ...(config.nodeId ? { nodeId: config.nodeId } : {}),
    onError,
  });
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** Whether a request's Host header is a loopback name or address (`localhost`, `127.x.x.x`, `[::1]`, with any port). */
function hostHeaderIsLoopback(header: string | undefined): boolean {
  if (!header) return false;
  const name = (header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:\d*$/, '')).toLowerCase();
  return name === 'localhost' || name === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** The chat page's address as a browser on this machine reaches it. */
function pageUrl(host: string, port: number): string {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
  return `http://${shown}:${port}/`;
}

function pick(config: GatewayConfig, from: 'jwtIssuer' | 'jwtAudience', to: string): Record<string, string> {
  const value = config[from];
  return value ? { [to]: value } : {};
}
