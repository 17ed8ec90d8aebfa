import { randomBytes } from 'node:crypto';
import { signToken } from '../auth/index.js';
import { ConfigError, SETTINGS, loadConfig, parseServeFlags, redactConfig, type GatewayConfig } from '../config/index.js';
import { MemoryEngine } from '../engine/index.js';
import { GatewayMetrics, createLogger } from '../observability/index.js';
import { createGateway } from '../transport/index.js';

/** `agentwire serve`: one gateway with the in-memory engine and the demo agent. */
export async function runServe(argv: string[]): Promise<number> {
  let config: GatewayConfig;
  try {
    const flags = parseServeFlags(argv);
    if (flags.help) {
      process.stdout.write(serveHelp());
      return 0;
    }
    config = loadConfig(process.env, flags);
    if (config.redisUrl) {
      throw new ConfigError('AGENTWIRE_REDIS_URL', 'the Redis engine is not part of this build yet; unset it to use the in-memory engine');
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`agentwire: invalid setting ${error.message}\n`);
      return 2;
    }
    throw error;
  }

  const logger = createLogger(config.logLevel);
  const secret = config.jwtSecret ?? (config.devMode ? randomBytes(32).toString('base64url') : undefined);
  const keys = {
    ...(secret ? { secret } : {}),
    ...(config.jwtPublicKey ? { publicKey: config.jwtPublicKey } : {}),
    ...(config.jwksUrl ? { jwksUrl: config.jwksUrl } : {}),
    ...(config.jwtIssuer ? { issuer: config.jwtIssuer } : {}),
    ...(config.jwtAudience ? { audience: config.jwtAudience } : {}),
  };
  const gateway = createGateway({
    auth: keys,
    engine: new MemoryEngine({ retentionEvents: config.retentionEvents, retentionMs: config.retentionMs }),
    logger,
    metrics: new GatewayMetrics({ defaultMetrics: true }),
    ...(config.e2eBypassKey && secret
      ? { testTokens: { bypassKey: config.e2eBypassKey, secret, ...pick(config, 'jwtIssuer', 'issuer'), ...pick(config, 'jwtAudience', 'audience') } }
      : {}),
    authTimeoutMs: config.authTimeoutMs,
    heartbeatMs: config.heartbeatMs,
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    runTimeoutMs: config.runTimeoutMs,
    drainTimeoutMs: config.drainTimeoutMs,
    maxConnectionsPerUser: config.maxConnectionsPerUser,
    threadPolicy: config.threadPolicy,
    maxFrameBytes: config.maxFrameBytes,
    inboxLimit: config.inboxLimit,
    rateLimitPerSec: config.rateLimitPerSec,
    rateLimitBurst: config.rateLimitBurst,
    slowConsumerBytes: config.slowConsumerBytes,
    permessageDeflate: config.permessageDeflate,
    allowedOrigins: config.allowedOrigins,
    demoStepMs: config.demoStepMs,
  });

  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'draining');
      gateway.shutdown().then(
        () => {
          logger.info('stopped');
          resolve(0);
        },
        (error) => {
          logger.error({ err: error }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });

  let url: string;
  try {
    ({ url } = await gateway.listen(config.port, config.host));
  } catch (error) {
    process.stderr.write(`agentwire: cannot listen on ${config.host}:${config.port}: ${(error as Error).message}\n`);
    return 1;
  }
  logger.info({ url, config: redactConfig(config) }, 'listening');
  process.stdout.write(`agentwire listening on ${url}\n`);
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
        'Talk to the demo agent:',
        '',
        `  npx agentwire chat --url ${url} --token ${token} "what is 2+3*4?"`,
        '',
      ].join('\n') + '\n',
    );
  }
  return stopped;
}

function pick(config: GatewayConfig, from: 'jwtIssuer' | 'jwtAudience', to: string): Record<string, string> {
  const value = config[from];
  return value ? { [to]: value } : {};
}

function serveHelp(): string {
  const width = Math.max(...SETTINGS.map((s) => s.flag.length));
  const lines = SETTINGS.map((s) => `  ${s.flag.padEnd(width)}  ${s.env}  (default ${s.default})\n  ${' '.repeat(width)}  ${s.description}`);
  return `agentwire serve [flags]\n\nEvery flag has an environment variable; flags win.\n\n${lines.join('\n')}\n`;
}
