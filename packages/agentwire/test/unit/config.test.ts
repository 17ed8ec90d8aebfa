import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { didYouMean } from '../../src/config/didYouMean.js';
import {
  ConfigError,
  DEFAULTS as TABLE_DEFAULTS,
  SETTINGS,
  flagForEnv,
  loadConfig,
  parseServeFlags,
  redactConfig,
  serveHelp,
  settingsMarkdownTable,
  settingsTableDrift,
  unknownVariableWarnings,
  withSettingsTable,
  type GatewayConfig,
} from '../../src/config/index.js';
import { ChildTracker, REPO_ROOT } from '../helpers/childProcess.js';
import { fcParams } from '../helpers/fastCheck.js';
import { CONTRACT_SETTINGS } from '../helpers/settings.js';

const PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();

/** Runs fn, asserts it threw a ConfigError, returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.message).not.toMatch(/[\r\n]/);
    expect(e.message.startsWith(`${e.setting}: `)).toBe(true);
    return e;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

function expectConfigError(fn: () => unknown, setting: string, ...fragments: (string | RegExp)[]): ConfigError {
  const e = configError(fn);
  expect(e.setting).toBe(setting);
  expect(e.message.startsWith(`${setting}: `)).toBe(true);
  for (const f of fragments) expect(e.message).toMatch(f);
  return e;
}

const DEFAULTS: GatewayConfig = {
  port: 8080,
  host: '127.0.0.1',
  production: false,
  devMode: true,
  httpRequestTimeoutMs: 30000,
  maxSockets: 16384,
  authTimeoutMs: 5000,
  heartbeatMs: 25000,
  heartbeatTimeoutMs: 10000,
  runTimeoutMs: 120000,
  drainTimeoutMs: 10000,
  maxConnectionsPerUser: 32,
  maxActiveRunsPerUser: 32,
  threadPolicy: 'enqueue',
  demoStepMs: 20,
  streamFlushMs: 20,
  maxFrameBytes: 65536,
  inboxLimit: 64,
  inboxMaxBytes: 262144,
  pendingBytesLimit: 33554432,
  rateLimitPerSec: 20,
  rateLimitBurst: 40,
  slowConsumerBytes: 1048576,
  permessageDeflate: false,
  retentionEvents: 10000,
  retentionBytes: 8388608,
  retentionMs: 86400000,
  historyTurns: 20,
  allowedOrigins: null,
  logLevel: 'info',
  runLeaseMs: 15000,
  runSweepMs: 2000,
  redisCommandTimeoutMs: 2000,
  agentProtocol: 'agentwire',
  agentConnectTimeoutMs: 30000,
  databasePoolSize: 10,
  databaseStatementTimeoutMs: 5000,
  archiveBatchEvents: 5000,
  archiveQueueEvents: 100000,
  archiveQueueBytes: 67108864,
};

/**
 * One valid, non-default sample per setting, the config field it sets and the value expected
 * there. `extraEnv` supplies what the setting needs to be valid on its own.
 */
const PRODUCTION_SECRET = 's3cret-of-at-least-32-bytes-long!';
const BYPASS_KEY = 'bypass-key-0123456789';

const SAMPLES: Record<string, { value: string; key: keyof GatewayConfig; expected: unknown; extraEnv?: Record<string, string> }> = {
  PORT: { value: '9123', key: 'port', expected: 9123 },
  HOST: { value: '0.0.0.0', key: 'host', expected: '0.0.0.0' },
  NODE_ENV: {
    value: 'production',
    key: 'production',
    expected: true,
    extraEnv: { AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET },
  },
  AGENTWIRE_JWT_SECRET: { value: 's3cret', key: 'jwtSecret', expected: 's3cret' },
  AGENTWIRE_JWT_PUBLIC_KEY: { value: PEM, key: 'jwtPublicKey', expected: PEM.trim() },
  AGENTWIRE_JWKS_URL: {
    value: 'https://issuer.example.com/.well-known/jwks.json',
    key: 'jwksUrl',
    expected: 'https://issuer.example.com/.well-known/jwks.json',
  },
  AGENTWIRE_JWT_ISSUER: { value: 'https://issuer.example.com/', key: 'jwtIssuer', expected: 'https://issuer.example.com/' },
  AGENTWIRE_JWT_AUDIENCE: { value: 'agentwire', key: 'jwtAudience', expected: 'agentwire' },
  AGENTWIRE_E2E_BYPASS_KEY: { value: BYPASS_KEY, key: 'e2eBypassKey', expected: BYPASS_KEY },
  AGENTWIRE_REDIS_URL: { value: 'redis://localhost:6379/0', key: 'redisUrl', expected: 'redis://localhost:6379/0' },
  AGENTWIRE_REDIS_CLUSTER_NODES: {
    value: ' 10.0.0.1:7000, redis-b.local:7001,[::1]:7002',
    key: 'redisClusterNodes',
    expected: [
      { host: '10.0.0.1', port: 7000 },
      { host: 'redis-b.local', port: 7001 },
      { host: '::1', port: 7002 },
    ],
  },
  AGENTWIRE_NODE_ID: { value: 'gw-2', key: 'nodeId', expected: 'gw-2' },
  AGENTWIRE_DATABASE_URL: { value: 'postgres://agentwire@db:5432/agentwire', key: 'databaseUrl', expected: 'postgres://agentwire@db:5432/agentwire' },
  AGENTWIRE_DATABASE_POOL_SIZE: { value: '4', key: 'databasePoolSize', expected: 4 },
  AGENTWIRE_DATABASE_STATEMENT_TIMEOUT_MS: { value: '2500', key: 'databaseStatementTimeoutMs', expected: 2500 },
  AGENTWIRE_ARCHIVE_BATCH_EVENTS: { value: '100', key: 'archiveBatchEvents', expected: 100 },
  AGENTWIRE_ARCHIVE_QUEUE_EVENTS: { value: '5000', key: 'archiveQueueEvents', expected: 5000 },
  AGENTWIRE_ARCHIVE_QUEUE_BYTES: { value: '1048576', key: 'archiveQueueBytes', expected: 1048576 },
  AGENTWIRE_RUN_LEASE_MS: { value: '3000', key: 'runLeaseMs', expected: 3000 },
  AGENTWIRE_RUN_SWEEP_MS: { value: '500', key: 'runSweepMs', expected: 500 },
  AGENTWIRE_REDIS_COMMAND_TIMEOUT_MS: { value: '750', key: 'redisCommandTimeoutMs', expected: 750 },
  AGENTWIRE_HTTP_REQUEST_TIMEOUT_MS: { value: '12000', key: 'httpRequestTimeoutMs', expected: 12000 },
  AGENTWIRE_MAX_SOCKETS: { value: '1000', key: 'maxSockets', expected: 1000 },
  AGENTWIRE_AUTH_TIMEOUT_MS: { value: '1500', key: 'authTimeoutMs', expected: 1500 },
  AGENTWIRE_HEARTBEAT_MS: { value: '5000', key: 'heartbeatMs', expected: 5000 },
  AGENTWIRE_HEARTBEAT_TIMEOUT_MS: { value: '2000', key: 'heartbeatTimeoutMs', expected: 2000 },
  AGENTWIRE_RUN_TIMEOUT_MS: { value: '3000', key: 'runTimeoutMs', expected: 3000 },
  AGENTWIRE_DRAIN_TIMEOUT_MS: { value: '250', key: 'drainTimeoutMs', expected: 250 },
  AGENTWIRE_MAX_CONNECTIONS_PER_USER: { value: '4', key: 'maxConnectionsPerUser', expected: 4 },
  AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER: { value: '5', key: 'maxActiveRunsPerUser', expected: 5 },
  AGENTWIRE_THREAD_POLICY: { value: 'reject', key: 'threadPolicy', expected: 'reject' },
  AGENTWIRE_DEMO_STEP_MS: { value: '0', key: 'demoStepMs', expected: 0 },
  AGENTWIRE_STREAM_FLUSH_MS: { value: '5', key: 'streamFlushMs', expected: 5 },
  AGENTWIRE_MAX_FRAME_BYTES: { value: '1024', key: 'maxFrameBytes', expected: 1024 },
  AGENTWIRE_INBOX_LIMIT: { value: '8', key: 'inboxLimit', expected: 8 },
  AGENTWIRE_INBOX_MAX_BYTES: { value: '4096', key: 'inboxMaxBytes', expected: 4096 },
  AGENTWIRE_PENDING_BYTES_LIMIT: { value: '1048576', key: 'pendingBytesLimit', expected: 1048576 },
  AGENTWIRE_RATE_LIMIT_PER_SEC: { value: '5', key: 'rateLimitPerSec', expected: 5 },
  AGENTWIRE_RATE_LIMIT_BURST: { value: '10', key: 'rateLimitBurst', expected: 10 },
  AGENTWIRE_SLOW_CONSUMER_BYTES: { value: '4096', key: 'slowConsumerBytes', expected: 4096 },
  AGENTWIRE_PERMESSAGE_DEFLATE: { value: 'true', key: 'permessageDeflate', expected: true },
  AGENTWIRE_RETENTION_EVENTS: { value: '50', key: 'retentionEvents', expected: 50 },
  AGENTWIRE_RETENTION_BYTES: { value: '65536', key: 'retentionBytes', expected: 65536 },
  AGENTWIRE_HISTORY_TURNS: { value: '0', key: 'historyTurns', expected: 0 },
  AGENTWIRE_RETENTION_MS: { value: '60000', key: 'retentionMs', expected: 60000 },
  AGENTWIRE_ALLOWED_ORIGINS: {
    value: 'https://app.example.com, http://localhost:3000',
    key: 'allowedOrigins',
    expected: ['https://app.example.com', 'http://localhost:3000'],
  },
  AGENTWIRE_LOG_LEVEL: { value: 'debug', key: 'logLevel', expected: 'debug' },
  AGENTWIRE_CHAT_PAGE: { value: 'true', key: 'chatPage', expected: true },
  AGENTWIRE_AGENT_URL: { value: 'http://127.0.0.1:8000/run', key: 'agentUrl', expected: 'http://127.0.0.1:8000/run' },
  AGENTWIRE_AGENT_PROTOCOL: { value: 'AG-UI', key: 'agentProtocol', expected: 'ag-ui' },
  AGENTWIRE_AGENT_MODEL: {
    value: 'llama3.2',
    key: 'agentModel',
    expected: 'llama3.2',
    extraEnv: { AGENTWIRE_AGENT_URL: 'http://127.0.0.1:11434/v1' },
  },
  AGENTWIRE_AGENT_HEADERS: {
    value: '{"authorization":"Bearer sk-1","x-team":"a"}',
    key: 'agentHeaders',
    expected: { authorization: 'Bearer sk-1', 'x-team': 'a' },
    extraEnv: { AGENTWIRE_AGENT_URL: 'http://127.0.0.1:8000/run' },
  },
  AGENTWIRE_AGENT_CONNECT_TIMEOUT_MS: { value: '2500', key: 'agentConnectTimeoutMs', expected: 2500 },
};

describe('loadConfig defaults', () => {
  it('returns the documented defaults for an empty environment', () => {
    expect(loadConfig({})).toEqual(DEFAULTS);
  });

  it('leaves optional settings absent', () => {
    const c = loadConfig({});
    for (const key of ['jwtSecret', 'jwtPublicKey', 'jwksUrl', 'jwtIssuer', 'jwtAudience', 'e2eBypassKey', 'redisUrl']) {
      expect(c).not.toHaveProperty(key);
    }
  });

  it('treats empty-string (and blank) env values as unset', () => {
    const env: Record<string, string> = {};
    for (const s of SETTINGS) env[s.env] = '';
    env.AGENTWIRE_HEARTBEAT_MS = '   ';
    expect(loadConfig(env)).toEqual(DEFAULTS);
  });

  it('SETTINGS defaults agree with loadConfig defaults', () => {
    const c = loadConfig({}) as unknown as Record<string, unknown>;
    for (const s of SETTINGS) {
      if (s.env === 'NODE_ENV') continue; // shown as "development"; checked below
      const sample = SAMPLES[s.env]!;
      const actual = c[sample.key];
      if (typeof actual === 'number' || typeof actual === 'boolean') expect(s.defaultText).toBe(String(actual));
      else if (actual === undefined) expect(s.defaultText).toBe('(unset)');
    }
    expect(SETTINGS.find((s) => s.env === 'NODE_ENV')!.defaultText).toBe('development');
    expect(SETTINGS.find((s) => s.env === 'HOST')!.defaultText).toBe('127.0.0.1');
    expect(SETTINGS.find((s) => s.env === 'AGENTWIRE_THREAD_POLICY')!.defaultText).toBe('enqueue');
    expect(SETTINGS.find((s) => s.env === 'AGENTWIRE_LOG_LEVEL')!.defaultText).toBe('info');
  });
});

describe('environment names', () => {
  it('has a sample for every setting and every setting has a sample', () => {
    expect(new Set(Object.keys(SAMPLES))).toEqual(new Set(SETTINGS.map((s) => s.env)));
  });

  it.each(Object.entries(SAMPLES))('%s maps to its config field', (env, sample) => {
    const c = loadConfig({ ...sample.extraEnv, [env]: sample.value });
    expect(c[sample.key]).toEqual(sample.expected);
  });

  it('contains every name required by PROTOCOL.md section 12', () => {
    const names = SETTINGS.map((s) => s.env);
    for (const required of CONTRACT_SETTINGS) {
      expect(names).toContain(required);
    }
  });

  it('NODE_ENV other than production is not production', () => {
    expect(loadConfig({ NODE_ENV: 'development' }).production).toBe(false);
    expect(loadConfig({ NODE_ENV: 'test' }).production).toBe(false);
  });

  it('accepts the permessage-deflate spellings', () => {
    for (const [v, expected] of [
      ['true', true],
      ['1', true],
      ['TRUE', true],
      ['false', false],
      ['0', false],
    ] as const) {
      expect(loadConfig({ AGENTWIRE_PERMESSAGE_DEFLATE: v }).permessageDeflate).toBe(expected);
    }
  });

  it('normalizes origins and treats * as any', () => {
    expect(loadConfig({ AGENTWIRE_ALLOWED_ORIGINS: 'https://App.Example.com/,https://app.example.com' }).allowedOrigins).toEqual(['https://app.example.com']);
    expect(loadConfig({ AGENTWIRE_ALLOWED_ORIGINS: '*' }).allowedOrigins).toBeNull();
  });

  it('accepts PEM keys whose newlines are written as \\n', () => {
    const escaped = PEM.trim().replace(/\n/g, '\\n');
    expect(loadConfig({ AGENTWIRE_JWT_PUBLIC_KEY: escaped }).jwtPublicKey).toBe(PEM.trim());
  });
});

describe('parseServeFlags', () => {
  it('accepts --name value and --name=value', () => {
    expect(parseServeFlags(['--heartbeat-ms', '5000', '--port=0'])).toEqual({ 'heartbeat-ms': '5000', port: '0' });
  });

  it('treats --production as a boolean flag, optionally with a literal', () => {
    expect(parseServeFlags(['--production'])).toEqual({ production: true });
    expect(parseServeFlags(['--production', '--port', '1'])).toEqual({ production: true, port: '1' });
    expect(parseServeFlags(['--production', 'false'])).toEqual({ production: 'false' });
    expect(parseServeFlags(['--permessage-deflate'])).toEqual({ 'permessage-deflate': true });
  });

  it('keeps values that start with dashes but are not flags (negative numbers, PEM)', () => {
    expect(parseServeFlags(['--port', '-1'])).toEqual({ port: '-1' });
    expect(parseServeFlags(['--jwt-public-key', PEM])).toEqual({ 'jwt-public-key': PEM });
  });

  it('keeps = inside values', () => {
    expect(parseServeFlags(['--jwt-secret=a=b='])).toEqual({ 'jwt-secret': 'a=b=' });
  });

  it('reports --help', () => {
    expect(parseServeFlags(['--help'])).toEqual({ help: true });
    expect(parseServeFlags(['-h'])).toEqual({ help: true });
    expect(loadConfig({}, { help: true })).toEqual(DEFAULTS);
  });

  it('rejects an unknown flag, naming it', () => {
    expectConfigError(() => parseServeFlags(['--bogus', '1']), '--bogus', /unknown flag/);
    expectConfigError(() => parseServeFlags(['--heartbeat=5']), '--heartbeat', /unknown flag/, /--heartbeat-ms/);
  });

  it('rejects a flag without its value', () => {
    expectConfigError(() => parseServeFlags(['--port']), '--port', /needs a value/);
    expectConfigError(() => parseServeFlags(['--port', '--host', 'x']), '--port', /needs a value/);
  });

  it('rejects stray positional arguments', () => {
    expectConfigError(() => parseServeFlags(['8080']), '8080', /unexpected argument/);
  });
});

describe('flags override env', () => {
  it('a flag wins over the same env setting', () => {
    const env = { AGENTWIRE_HEARTBEAT_MS: '1000', PORT: '1234', AGENTWIRE_THREAD_POLICY: 'enqueue' };
    const c = loadConfig(env, parseServeFlags(['--heartbeat-ms', '5000', '--port=4321', '--thread-policy', 'reject']));
    expect(c.heartbeatMs).toBe(5000);
    expect(c.port).toBe(4321);
    expect(c.threadPolicy).toBe('reject');
  });

  it('env still applies to settings without a flag', () => {
    const c = loadConfig({ AGENTWIRE_RUN_TIMEOUT_MS: '777' }, parseServeFlags(['--heartbeat-ms=5000']));
    expect(c.runTimeoutMs).toBe(777);
    expect(c.heartbeatMs).toBe(5000);
  });

  it('--production overrides NODE_ENV in both directions', () => {
    expect(loadConfig({ AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET }, parseServeFlags(['--production'])).production).toBe(true);
    expect(loadConfig({ NODE_ENV: 'production' }, parseServeFlags(['--production=false'])).production).toBe(false);
  });

  it('an empty flag value counts as unset', () => {
    expect(loadConfig({ AGENTWIRE_HEARTBEAT_MS: '1000' }, { 'heartbeat-ms': '' }).heartbeatMs).toBe(1000);
  });

  it('loadConfig accepts flag keys with or without dashes and rejects unknown keys', () => {
    expect(loadConfig({}, { '--port': '1' }).port).toBe(1);
    expectConfigError(() => loadConfig({}, { nope: '1' }), '--nope', /unknown flag/);
  });

  it('errors for a flag value name the setting and the flag', () => {
    expectConfigError(
      () => loadConfig({}, parseServeFlags(['--heartbeat-ms', 'abc'])),
      'AGENTWIRE_HEARTBEAT_MS',
      'must be an integer >= 1 (got "abc")',
      /--heartbeat-ms/,
    );
  });
});

describe('SETTINGS flags round-trip', () => {
  it('every flag is the env name without AGENTWIRE_, lower-cased, _ -> -', () => {
    for (const s of SETTINGS) {
      if (s.env === 'NODE_ENV') expect(s.flag).toBe('--production');
      else expect(s.flag).toBe(flagForEnv(s.env));
      expect(s.description.length).toBeGreaterThan(0);
      expect(s.defaultText.length).toBeGreaterThan(0);
    }
    expect(flagForEnv('PORT')).toBe('--port');
    expect(flagForEnv('HOST')).toBe('--host');
    expect(flagForEnv('AGENTWIRE_JWT_SECRET')).toBe('--jwt-secret');
    expect(new Set(SETTINGS.map((s) => s.flag)).size).toBe(SETTINGS.length);
  });

  it.each(SETTINGS.map((s) => [s.flag, s] as const))('%s round-trips in both forms', (flag, s) => {
    const sample = SAMPLES[s.env]!;
    const forms = s.env === 'NODE_ENV' ? [[flag], [`${flag}=true`], [flag, 'true']] : [[flag, sample.value], [`${flag}=${sample.value}`]];
    for (const argv of forms) {
      const c = loadConfig(sample.extraEnv ?? {}, parseServeFlags(argv));
      expect(c[sample.key]).toEqual(sample.expected);
    }
  });
});

describe('validation rules', () => {
  it('rejects non-integers, negatives and out-of-range values, quoting the value', () => {
    expect(() => loadConfig({ AGENTWIRE_HEARTBEAT_MS: 'abc' })).toThrow('AGENTWIRE_HEARTBEAT_MS: must be an integer >= 1 (got "abc")');
    expectConfigError(() => loadConfig({ AGENTWIRE_HEARTBEAT_MS: '1.5' }), 'AGENTWIRE_HEARTBEAT_MS', '(got "1.5")');
    expectConfigError(() => loadConfig({ AGENTWIRE_HEARTBEAT_MS: '1e3' }), 'AGENTWIRE_HEARTBEAT_MS', '(got "1e3")');
    expectConfigError(() => loadConfig({ AGENTWIRE_HEARTBEAT_MS: '-5' }), 'AGENTWIRE_HEARTBEAT_MS', '>= 1', '(got "-5")');
    expectConfigError(() => loadConfig({ AGENTWIRE_HEARTBEAT_MS: '0' }), 'AGENTWIRE_HEARTBEAT_MS', '>= 1', '(got "0")');
    expectConfigError(() => loadConfig({ AGENTWIRE_RUN_TIMEOUT_MS: '99999999999' }), 'AGENTWIRE_RUN_TIMEOUT_MS', '<= 2147483647', '(got "99999999999")');
    expectConfigError(
      () => loadConfig({ AGENTWIRE_MAX_FRAME_BYTES: '123456789012345678901234567890' }),
      'AGENTWIRE_MAX_FRAME_BYTES',
      '(got "123456789012345678901234567890")',
    );
  });

  it.each(SETTINGS.filter((s) => typeof SAMPLES[s.env]!.expected === 'number').map((s) => [s.env] as const))('%s rejects garbage and negatives', (env) => {
    expectConfigError(() => loadConfig({ [env]: 'twelve' }), env, 'must be an integer', '(got "twelve")');
    expectConfigError(() => loadConfig({ [env]: '-1' }), env, 'must be an integer', '(got "-1")');
  });

  it('AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER is an integer >= 1 (0 would refuse every message)', () => {
    expect(loadConfig({ AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER: '1' }).maxActiveRunsPerUser).toBe(1);
    expectConfigError(() => loadConfig({ AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER: '0' }), 'AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER', '>= 1', '(got "0")');
    expectConfigError(() => loadConfig({ AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER: '2.5' }), 'AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER', '(got "2.5")');
  });

  it('PORT accepts 0..65535 only', () => {
    expect(loadConfig({ PORT: '0' }).port).toBe(0);
    expect(loadConfig({ PORT: '65535' }).port).toBe(65535);
    expectConfigError(() => loadConfig({ PORT: '65536' }), 'PORT', 'from 0 to 65535', '(got "65536")');
    expectConfigError(() => loadConfig({ PORT: '-1' }), 'PORT', '(got "-1")');
    expectConfigError(() => loadConfig({ PORT: 'http' }), 'PORT', '(got "http")');
  });

  it('allows 0 where it means "none": demo step and drain timeout', () => {
    expect(loadConfig({ AGENTWIRE_DEMO_STEP_MS: '0' }).demoStepMs).toBe(0);
    expect(loadConfig({ AGENTWIRE_DRAIN_TIMEOUT_MS: '0' }).drainTimeoutMs).toBe(0);
    expectConfigError(() => loadConfig({ AGENTWIRE_AUTH_TIMEOUT_MS: '0' }), 'AGENTWIRE_AUTH_TIMEOUT_MS');
  });

  it('only requires both heartbeat values >= 1 (no ordering between them)', () => {
    const c = loadConfig({ AGENTWIRE_HEARTBEAT_MS: '1', AGENTWIRE_HEARTBEAT_TIMEOUT_MS: '100000' });
    expect(c.heartbeatMs).toBe(1);
    expect(c.heartbeatTimeoutMs).toBe(100000);
    expectConfigError(() => loadConfig({ AGENTWIRE_HEARTBEAT_TIMEOUT_MS: '0' }), 'AGENTWIRE_HEARTBEAT_TIMEOUT_MS');
  });

  it('threadPolicy must be enqueue or reject', () => {
    expectConfigError(() => loadConfig({ AGENTWIRE_THREAD_POLICY: 'drop' }), 'AGENTWIRE_THREAD_POLICY', 'enqueue or reject', '(got "drop")');
  });

  it('permessage-deflate must be a boolean literal', () => {
    expectConfigError(() => loadConfig({ AGENTWIRE_PERMESSAGE_DEFLATE: 'yes please' }), 'AGENTWIRE_PERMESSAGE_DEFLATE', '(got "yes please")');
    expectConfigError(() => loadConfig({}, { production: 'maybe' }), '--production', '(got "maybe")');
  });

  it('more than one of secret / public key / JWKS URL is an error naming them', () => {
    expectConfigError(
      () => loadConfig({ AGENTWIRE_JWT_SECRET: 's', AGENTWIRE_JWKS_URL: 'https://x.example/jwks' }),
      'AGENTWIRE_JWT_SECRET',
      /only one of/,
      'got AGENTWIRE_JWT_SECRET and AGENTWIRE_JWKS_URL',
    );
    const e = expectConfigError(() => loadConfig({ AGENTWIRE_JWT_PUBLIC_KEY: PEM, AGENTWIRE_JWKS_URL: 'https://x.example/jwks' }), 'AGENTWIRE_JWT_PUBLIC_KEY');
    expect(e.message).toContain('AGENTWIRE_JWT_PUBLIC_KEY and AGENTWIRE_JWKS_URL');
    expectConfigError(
      () => loadConfig({ AGENTWIRE_JWT_SECRET: 's' }, { 'jwt-public-key': PEM }),
      'AGENTWIRE_JWT_SECRET',
      'AGENTWIRE_JWT_SECRET and AGENTWIRE_JWT_PUBLIC_KEY',
    );
  });

  it('production without any key is an error on AGENTWIRE_JWT_SECRET', () => {
    const e = expectConfigError(() => loadConfig({ NODE_ENV: 'production' }), 'AGENTWIRE_JWT_SECRET', /production/);
    expect(e.message).toContain('AGENTWIRE_JWT_PUBLIC_KEY');
    expect(e.message).toContain('AGENTWIRE_JWKS_URL');
    expectConfigError(() => loadConfig({}, parseServeFlags(['--production'])), 'AGENTWIRE_JWT_SECRET', /production/);
  });

  it('production with exactly one key starts', () => {
    expect(loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET }).devMode).toBe(false);
    expect(loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWT_PUBLIC_KEY: PEM }).jwtPublicKey).toBe(PEM.trim());
    expect(loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWKS_URL: 'http://jwks.local/keys' }).jwksUrl).toBe('http://jwks.local/keys');
  });

  it('refuses a bypass key in production', () => {
    expectConfigError(
      () => loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET, AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY }),
      'AGENTWIRE_E2E_BYPASS_KEY',
      /production/,
    );
    expectConfigError(
      () => loadConfig({ AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET, AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY }, { production: true }),
      'AGENTWIRE_E2E_BYPASS_KEY',
      /production/,
    );
  });

  it('refuses a bypass key with only a public key or JWKS', () => {
    expectConfigError(() => loadConfig({ AGENTWIRE_JWT_PUBLIC_KEY: PEM, AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY }), 'AGENTWIRE_E2E_BYPASS_KEY', /HS256/);
    expectConfigError(
      () => loadConfig({ AGENTWIRE_JWKS_URL: 'https://x.example/jwks', AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY }),
      'AGENTWIRE_E2E_BYPASS_KEY',
      /HS256/,
    );
  });

  it('allows a bypass key with a secret or in dev mode', () => {
    expect(loadConfig({ AGENTWIRE_JWT_SECRET: 's', AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY }).e2eBypassKey).toBe(BYPASS_KEY);
    const dev = loadConfig({ AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY });
    expect(dev.devMode).toBe(true);
    expect(dev.e2eBypassKey).toBe(BYPASS_KEY);
  });

  it('refuses a bypass key shorter than 16 characters, in one line naming the setting', () => {
    for (const key of ['k', 'ab', 'x'.repeat(15)]) {
      const e = expectConfigError(
        () => loadConfig({ AGENTWIRE_JWT_SECRET: 's', AGENTWIRE_E2E_BYPASS_KEY: key }),
        'AGENTWIRE_E2E_BYPASS_KEY',
        /at least 16 characters/,
      );
      expect(e.message).not.toContain(key.length > 1 ? key : '"k"');
      expect(e.message.split('\n')).toHaveLength(1);
    }
    expect(loadConfig({ AGENTWIRE_E2E_BYPASS_KEY: 'x'.repeat(16) }).e2eBypassKey).toBe('x'.repeat(16));
  });

  it('production mode is NODE_ENV=production in any letter case', () => {
    for (const value of ['production', 'PRODUCTION', 'Production', ' pRoDuCtIoN ']) {
      expect(loadConfig({ NODE_ENV: value, AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET }).production).toBe(true);
      expectConfigError(() => loadConfig({ NODE_ENV: value }), 'AGENTWIRE_JWT_SECRET', /production/);
      expectConfigError(
        () => loadConfig({ NODE_ENV: value, AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET, AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY }),
        'AGENTWIRE_E2E_BYPASS_KEY',
        /production/,
      );
    }
    expect(loadConfig({ NODE_ENV: 'productionx' }).production).toBe(false);
  });

  it('in production an HS256 secret shorter than 32 bytes is an error naming AGENTWIRE_JWT_SECRET', () => {
    for (const secret of ['abc', 'x'.repeat(31), 'é'.repeat(15)]) {
      const e = expectConfigError(() => loadConfig({ NODE_ENV: 'PRODUCTION', AGENTWIRE_JWT_SECRET: secret }), 'AGENTWIRE_JWT_SECRET', /at least 32 bytes/);
      expect(e.message).not.toContain(secret);
    }
    // Bytes, not characters: 16 two-byte characters are 32 bytes.
    expect(loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWT_SECRET: 'é'.repeat(16) }).production).toBe(true);
    expect(loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWT_SECRET: 'x'.repeat(32) }).production).toBe(true);
    // Outside production a short secret is still allowed (tests, local development).
    expect(loadConfig({ AGENTWIRE_JWT_SECRET: 'abc' }).jwtSecret).toBe('abc');
  });

  it('JWKS URL must be an http(s) URL', () => {
    expectConfigError(() => loadConfig({ AGENTWIRE_JWKS_URL: 'not a url' }), 'AGENTWIRE_JWKS_URL', '(got "not a url")');
    expectConfigError(() => loadConfig({ AGENTWIRE_JWKS_URL: 'ftp://x.example/jwks' }), 'AGENTWIRE_JWKS_URL', /http/);
  });

  it('public key must be a PEM public key', () => {
    expectConfigError(() => loadConfig({ AGENTWIRE_JWT_PUBLIC_KEY: 'abc' }), 'AGENTWIRE_JWT_PUBLIC_KEY', 'BEGIN PUBLIC KEY');
    const privatePem = '-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n';
    const e = expectConfigError(() => loadConfig({ AGENTWIRE_JWT_PUBLIC_KEY: privatePem }), 'AGENTWIRE_JWT_PUBLIC_KEY');
    expect(e.message).not.toContain('MIGH'); // key material is never echoed
  });

  it('Redis URL must be redis:// or rediss:// and its password is not echoed', () => {
    const e = expectConfigError(() => loadConfig({ AGENTWIRE_REDIS_URL: 'http://user:hunter2@redis.local:6379' }), 'AGENTWIRE_REDIS_URL', /redis:\/\//);
    expect(e.message).not.toContain('hunter2');
    expect(loadConfig({ AGENTWIRE_REDIS_URL: 'rediss://:pw@r.example:6380' }).redisUrl).toBe('rediss://:pw@r.example:6380');
  });

  it('Redis Cluster nodes must be host:port, and exclude a Redis URL', () => {
    for (const bad of ['r.local', ' , ', 'r.local:0', 'r.local:65536', 'a:1,,b:2', 'user@r.local:7000', 'r.local:7000/0', Array(65).fill('a:1').join(',')]) {
      expectConfigError(() => loadConfig({ AGENTWIRE_REDIS_CLUSTER_NODES: bad }), 'AGENTWIRE_REDIS_CLUSTER_NODES');
    }
    expectConfigError(
      () => loadConfig({ AGENTWIRE_REDIS_CLUSTER_NODES: 'a:7000', AGENTWIRE_REDIS_URL: 'redis://b:6379' }),
      'AGENTWIRE_REDIS_CLUSTER_NODES',
      /only one of AGENTWIRE_REDIS_URL and AGENTWIRE_REDIS_CLUSTER_NODES/,
    );
  });

  it('allowed origins must be origins', () => {
    expectConfigError(
      () => loadConfig({ AGENTWIRE_ALLOWED_ORIGINS: 'https://ok.example,app.example.com' }),
      'AGENTWIRE_ALLOWED_ORIGINS',
      '(got "app.example.com")',
    );
    expectConfigError(() => loadConfig({ AGENTWIRE_ALLOWED_ORIGINS: 'https://ok.example/path' }), 'AGENTWIRE_ALLOWED_ORIGINS');
    expectConfigError(() => loadConfig({ AGENTWIRE_ALLOWED_ORIGINS: ' , ' }), 'AGENTWIRE_ALLOWED_ORIGINS');
  });

  it('log level must be a pino level or silent', () => {
    expect(loadConfig({ AGENTWIRE_LOG_LEVEL: 'silent' }).logLevel).toBe('silent');
    expect(loadConfig({ AGENTWIRE_LOG_LEVEL: 'WARN' }).logLevel).toBe('warn');
    expectConfigError(() => loadConfig({ AGENTWIRE_LOG_LEVEL: 'verbose' }), 'AGENTWIRE_LOG_LEVEL', '(got "verbose")');
  });

  it('a value-taking setting given as a bare boolean flag needs a value', () => {
    expectConfigError(() => loadConfig({}, { port: true }), 'PORT', /needs a value/);
    expectConfigError(() => loadConfig({}, { 'jwt-secret': true }), 'AGENTWIRE_JWT_SECRET', /needs a value/);
  });

  it('ConfigError carries the setting and a single-line message', () => {
    const e = new ConfigError('X', 'line one\nline two');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('ConfigError');
    expect(e.setting).toBe('X');
    expect(e.message).toBe('X: line one line two');
  });
});

describe('dev mode', () => {
  it('is on with no key outside production', () => {
    expect(loadConfig({}).devMode).toBe(true);
    expect(loadConfig({ NODE_ENV: 'development' }).devMode).toBe(true);
  });

  it('is off as soon as any key is set', () => {
    expect(loadConfig({ AGENTWIRE_JWT_SECRET: 's' }).devMode).toBe(false);
    expect(loadConfig({ AGENTWIRE_JWT_PUBLIC_KEY: PEM }).devMode).toBe(false);
    expect(loadConfig({ AGENTWIRE_JWKS_URL: 'https://x.example/jwks' }).devMode).toBe(false);
    expect(loadConfig({}, { 'jwt-secret': 's' }).devMode).toBe(false);
  });

  it('is off in production', () => {
    expect(loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWT_SECRET: PRODUCTION_SECRET }).devMode).toBe(false);
  });

  it('issuer / audience alone do not leave dev mode', () => {
    const c = loadConfig({ AGENTWIRE_JWT_ISSUER: 'iss', AGENTWIRE_JWT_AUDIENCE: 'aud' });
    expect(c.devMode).toBe(true);
    expect(c.jwtIssuer).toBe('iss');
    expect(c.jwtAudience).toBe('aud');
  });
});

describe('upstream agent settings (PROTOCOL.md section 15)', () => {
  const URL_ENV = { AGENTWIRE_AGENT_URL: 'http://127.0.0.1:8000/run' };
  const SECRET_HEADER = 'sk-live-very-secret-value';

  it('openai without a model is a start-up error naming AGENTWIRE_AGENT_MODEL', () => {
    expectConfigError(
      () => loadConfig({ ...URL_ENV, AGENTWIRE_AGENT_PROTOCOL: 'openai' }),
      'AGENTWIRE_AGENT_MODEL',
      /required with AGENTWIRE_AGENT_PROTOCOL=openai/,
    );
    expect(loadConfig({ ...URL_ENV, AGENTWIRE_AGENT_PROTOCOL: 'openai', AGENTWIRE_AGENT_MODEL: 'm' }).agentModel).toBe('m');
  });

  it('an unknown protocol names the four dialects', () => {
    expectConfigError(() => loadConfig({ ...URL_ENV, AGENTWIRE_AGENT_PROTOCOL: 'grpc' }), 'AGENTWIRE_AGENT_PROTOCOL', /agentwire, ag-ui, ai-sdk, openai/);
  });

  it('invalid AGENTWIRE_AGENT_HEADERS is a start-up error that does not print the value', () => {
    for (const value of [
      `{"authorization": "Bearer ${SECRET_HEADER}"`,
      `["${SECRET_HEADER}"]`,
      `{"authorization": ["${SECRET_HEADER}"]}`,
      `{"x-key": "${SECRET_HEADER}\n"}`,
    ]) {
      const error = expectConfigError(() => loadConfig({ ...URL_ENV, AGENTWIRE_AGENT_HEADERS: value }), 'AGENTWIRE_AGENT_HEADERS');
      expect(error.message).not.toContain(SECRET_HEADER);
    }
    expectConfigError(
      () => loadConfig({ ...URL_ENV, AGENTWIRE_AGENT_HEADERS: '{"x-agentwire-user":"mallory"}' }),
      'AGENTWIRE_AGENT_HEADERS',
      /x-agentwire-user is set by the gateway/,
    );
    expectConfigError(() => loadConfig({ ...URL_ENV, AGENTWIRE_AGENT_HEADERS: '{"bad name":"v"}' }), 'AGENTWIRE_AGENT_HEADERS', /not a valid header name/);
  });

  it('a model or headers without AGENTWIRE_AGENT_URL is an error, not silently the demo agent', () => {
    expectConfigError(() => loadConfig({ AGENTWIRE_AGENT_MODEL: 'm' }), 'AGENTWIRE_AGENT_MODEL', /AGENTWIRE_AGENT_URL is not/);
    expectConfigError(() => loadConfig({ AGENTWIRE_AGENT_HEADERS: '{"a":"b"}' }), 'AGENTWIRE_AGENT_HEADERS', /AGENTWIRE_AGENT_URL is not/);
  });

  it('flags set them like the variables', () => {
    const c = loadConfig(
      {},
      parseServeFlags(['--agent-url', 'http://127.0.0.1:9/v1', '--agent-protocol=openai', '--agent-model', 'qwen', '--agent-connect-timeout-ms', '50']),
    );
    expect(c).toMatchObject({ agentUrl: 'http://127.0.0.1:9/v1', agentProtocol: 'openai', agentModel: 'qwen', agentConnectTimeoutMs: 50 });
  });

  it('redactConfig hides the header values and the URL password and query', () => {
    const c = loadConfig({
      AGENTWIRE_AGENT_URL: 'https://bot:hunter2@agent.example.com/run?key=qwerty',
      AGENTWIRE_AGENT_HEADERS: `{"authorization":"Bearer ${SECRET_HEADER}"}`,
    });
    const text = JSON.stringify(redactConfig(c));
    for (const secret of [SECRET_HEADER, 'hunter2', 'qwerty']) expect(text).not.toContain(secret);
    expect(text).toContain('agent.example.com');
  });
});

describe('redactConfig', () => {
  it('hides secrets and the Redis password', () => {
    const c = loadConfig({
      AGENTWIRE_JWT_SECRET: 'topsecret',
      AGENTWIRE_E2E_BYPASS_KEY: BYPASS_KEY,
      AGENTWIRE_REDIS_URL: 'redis://:hunter2@r.local:6379',
    });
    const text = JSON.stringify(redactConfig(c));
    expect(text).not.toContain('topsecret');
    expect(text).not.toContain(BYPASS_KEY);
    expect(text).not.toContain('hunter2');
    expect(text).toContain('r.local');
  });
});

describe('the settings table is the one source', () => {
  it('each entry fills the config field its sample says, and every field but devMode has an entry', () => {
    for (const s of SETTINGS) expect(s.key).toBe(SAMPLES[s.env]!.key);
    const keys = SETTINGS.map((s) => s.key as string);
    expect(new Set(keys).size).toBe(keys.length);
    const optional = [
      'jwtSecret',
      'jwtPublicKey',
      'jwksUrl',
      'jwtIssuer',
      'jwtAudience',
      'e2eBypassKey',
      'redisUrl',
      'redisClusterNodes',
      'nodeId',
      'chatPage',
      'agentUrl',
      'agentModel',
      'agentHeaders',
      'databaseUrl',
    ];
    expect(new Set([...keys, 'devMode'])).toEqual(new Set([...Object.keys(DEFAULTS), ...optional]));
  });

  it('DEFAULTS (what createGateway falls back to) is loadConfig of an empty environment', () => {
    expect({ ...TABLE_DEFAULTS, devMode: true }).toEqual(DEFAULTS);
    expect(Object.isFrozen(TABLE_DEFAULTS)).toBe(true);
  });

  it('serve --help shows every flag with its variable, default and help text', () => {
    const help = serveHelp();
    for (const s of SETTINGS) {
      expect(help).toContain(`  ${s.flag} `);
      expect(help).toContain(` ${s.env}  (default ${s.defaultText})`);
      expect(help).toContain(s.description);
    }
  });

  it('the markdown table has a header and one row per setting, in table order', () => {
    const rows = settingsMarkdownTable().split('\n');
    expect(rows).toHaveLength(SETTINGS.length + 2);
    SETTINGS.forEach((s, i) => expect(rows[i + 2]).toBe(`| \`${s.env}\` | \`${s.flag}\` | ${s.defaultText} | ${s.description} |`));
  });
});

describe('README settings table', () => {
  const readmeAsCommitted = readFileSync(`${REPO_ROOT}README.md`, 'utf8');

  it('agrees with the settings table (fix: npm run docs:settings)', () => {
    expect(settingsTableDrift(readmeAsCommitted)).toEqual([]);
  });

  it('any edit to one row is reported, naming the line', () => {
    const readme = withSettingsTable(readmeAsCommitted);
    const row = '| `AGENTWIRE_HEARTBEAT_MS` | `--heartbeat-ms` | 25000 |';
    expect(readme).toContain(row);
    const edited = readme.replace(row, '| `AGENTWIRE_HEARTBEAT_MS` | `--heartbeat-ms` | 30000 |');
    const drift = settingsTableDrift(edited);
    expect(drift).toHaveLength(1);
    expect(drift[0]).toMatch(/^README line \d+: is ".*30000.*", table says ".*25000.*"$/);
    expect(settingsTableDrift(readme.replace(`${row} Interval`, '| `AGENTWIRE_HEARTBEAT_MS` | `--heartbeat-ms` | 25000 | interval'))).toHaveLength(1);
    // A deleted row is drift too, and regenerating restores the README exactly.
    const withoutRow = readme.replace(/^\| `AGENTWIRE_HEARTBEAT_MS`.*\n/m, '');
    expect(settingsTableDrift(withoutRow).length).toBeGreaterThan(0);
    expect(withSettingsTable(withoutRow)).toBe(readme);
  });

  it('a README without the markers is an error, not silently skipped', () => {
    expect(() => settingsTableDrift('# no table here\n')).toThrow(/markers/);
  });
});

describe('did-you-mean', () => {
  it('suggests the nearest setting or flag name, an abbreviation, or nothing when none is close', () => {
    expect(didYouMean('AGENTWIRE_HEARTBEAT_MSS', ['AGENTWIRE_HEARTBEAT_MS', 'AGENTWIRE_HEARTBEAT_TIMEOUT_MS'])).toBe('AGENTWIRE_HEARTBEAT_MS');
    expect(didYouMean('heartbeat', ['heartbeat-timeout-ms', 'heartbeat-ms', 'port'])).toBe('heartbeat-ms');
    expect(didYouMean('prot', ['port', 'host', 'log-level'])).toBe('port');
    expect(didYouMean('completely-different', ['port'])).toBeNull();
  });

  it('an unknown serve flag names the nearest flags', () => {
    const e = expectConfigError(() => parseServeFlags(['--heartbeat-mss', '5']), '--heartbeat-mss', /unknown flag/);
    expect(e.message).toBe('--heartbeat-mss: unknown flag (did you mean --heartbeat-ms?)');
    expectConfigError(() => parseServeFlags(['--prodution']), '--prodution', 'did you mean --production?');
    expect(configError(() => parseServeFlags(['--zzzzzzzz=1'])).message).toBe('--zzzzzzzz: unknown flag');
  });
});

describe('unknown AGENTWIRE_* variables', () => {
  it('warns once per unknown variable with the nearest setting', () => {
    expect(unknownVariableWarnings({ AGENTWIRE_HEARTBEAT_MSS: '1' })).toEqual([
      'AGENTWIRE_HEARTBEAT_MSS is not a setting and is ignored (did you mean AGENTWIRE_HEARTBEAT_MS?)',
    ]);
    expect(unknownVariableWarnings({ AGENTWIRE_JWT_SECRT: 'x', AGENTWIRE_QQQQQQQQQQQQQ: '1' })).toEqual([
      'AGENTWIRE_JWT_SECRT is not a setting and is ignored (did you mean AGENTWIRE_JWT_SECRET?)',
      'AGENTWIRE_QQQQQQQQQQQQQ is not a setting and is ignored',
    ]);
  });

  it('is silent for every setting, for the chat/storm variables and for other variables', () => {
    const env: Record<string, string> = { AGENTWIRE_URL: 'ws://x', AGENTWIRE_TOKEN: 't', PATH: '/bin', HEARTBEAT_MSS: '1' };
    for (const s of SETTINGS) env[s.env] = '';
    expect(unknownVariableWarnings(env)).toEqual([]);
  });

  const children = new ChildTracker();
  afterEach(async () => children.killAll());

  it('agentwire serve prints the warning on stderr before anything else', async () => {
    const child = children.spawn(['serve'], { PORT: '0', AGENTWIRE_HEARTBEAT_MSS: '1', AGENTWIRE_HEARTBEAT_MS: 'abc' });
    expect(await child.waitExit()).toEqual({ code: 2, signal: null });
    expect(child.stdout).toBe('');
    expect(child.stderr).toBe(
      'agentwire: warning: AGENTWIRE_HEARTBEAT_MSS is not a setting and is ignored (did you mean AGENTWIRE_HEARTBEAT_MS?)\n' +
        'agentwire: invalid setting AGENTWIRE_HEARTBEAT_MS: must be an integer >= 1 (got "abc")\n',
    );
  });
});

describe('every value of every setting', () => {
  it('loads or fails with one line naming the setting (env) or the flag it came from', () => {
    const raw = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.integer({ min: -5, max: 70_000 }).map(String),
      fc.constantFrom('true', 'false', '0', '1', ' ', '*', 'https://a.example', 'redis://r:1', '9007199254740993'),
    );
    fc.assert(
      fc.property(fc.constantFrom(...SETTINGS.map((s) => s.env)), raw, fc.boolean(), (env, value, asFlag) => {
        const s = SETTINGS.find((candidate) => candidate.env === env)!;
        const load = () => (asFlag ? loadConfig({}, { [s.flag]: value }) : loadConfig({ [s.env]: value }));
        let config: GatewayConfig;
        try {
          config = load();
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          const e = err as ConfigError;
          expect(e.message).not.toMatch(/[\r\n]/);
          expect(e.message.startsWith(`${e.setting}: `)).toBe(true);
          // The rules spanning settings (production, bypass key, upstream agent) name their setting without a source.
          const crossField = ['AGENTWIRE_JWT_SECRET', 'AGENTWIRE_E2E_BYPASS_KEY', 'AGENTWIRE_AGENT_MODEL', 'AGENTWIRE_AGENT_HEADERS'];
          expect([s.env, ...crossField, ...(asFlag && s.env === 'NODE_ENV' ? [s.flag] : [])]).toContain(e.setting);
          if (asFlag && e.setting === s.env && !crossField.includes(s.env)) expect(e.message).toContain(`(from ${s.flag})`);
          return;
        }
        if (value.trim() === '') expect(config[s.key]).toEqual(s.default);
        if (typeof config[s.key] === 'number') expect(Number.isSafeInteger(config[s.key])).toBe(true);
      }),
      fcParams(500, 5_000),
    );
  });
});
