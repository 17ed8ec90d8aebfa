/**
 * Gateway configuration: environment variables and `agentwire serve` flags -> one validated,
 * frozen GatewayConfig. Every problem is a ConfigError whose message is one line,
 * `<SETTING>: <reason>` (PROTOCOL.md section 12). Flags override the environment; an empty
 * value (env or flag) counts as unset.
 */
import { ConfigError } from './errors.js';
import { SETTINGS, flagForEnv } from './settings.js';

export { ConfigError } from './errors.js';
export { SETTINGS, flagForEnv } from './settings.js';
export type { SettingInfo } from './settings.js';

export type ThreadPolicy = 'enqueue' | 'reject';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export interface GatewayConfig {
  port: number;
  host: string;
  production: boolean;
  jwtSecret?: string;
  jwtPublicKey?: string;
  jwksUrl?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  /** True when none of secret / public key / JWKS URL is set and not in production. */
  devMode: boolean;
  e2eBypassKey?: string;
  redisUrl?: string;
  /** Node name in a Redis cluster; random when unset. */
  nodeId?: string;
  runLeaseMs: number;
  runSweepMs: number;
  redisCommandTimeoutMs: number;
  authTimeoutMs: number;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
  runTimeoutMs: number;
  drainTimeoutMs: number;
  maxConnectionsPerUser: number;
  maxActiveRunsPerUser: number;
  threadPolicy: ThreadPolicy;
  demoStepMs: number;
  maxFrameBytes: number;
  inboxLimit: number;
  inboxMaxBytes: number;
  pendingBytesLimit: number;
  rateLimitPerSec: number;
  rateLimitBurst: number;
  slowConsumerBytes: number;
  permessageDeflate: boolean;
  retentionEvents: number;
  retentionMs: number;
  /** Allowed `Origin` values for upgrades (normalized `scheme://host[:port]`); null = any. */
  allowedOrigins: string[] | null;
  logLevel: string;
  /** Serve the chat page; unset = only in dev mode. */
  chatPage?: boolean;
}

/** Largest delay Node's timers accept; larger values silently become 1 ms. */
const MAX_TIMER_MS = 2_147_483_647;
/** A shorter bypass key can be guessed even at the test-token route's throttled rate. */
export const MIN_BYPASS_KEY_CHARS = 16;
/** HS256 keys shorter than the hash output (RFC 7518 section 3.2) are refused in production. */
export const MIN_PRODUCTION_SECRET_BYTES = 32;

/** Flags that may appear without a value (`--production` means `--production=true`). */
const BOOLEAN_FLAGS = new Set(['production', 'permessage-deflate', 'chat-page']);
const KNOWN_FLAGS = new Set([...SETTINGS.map((s) => s.flag.slice(2)), 'help']);

type Flags = Record<string, string | boolean>;
type Raw = { value: string | boolean; source: string };

/**
 * Parses the arguments after `agentwire serve`: `--name value`, `--name=value`, and the
 * value-less boolean flags `--production` / `--permessage-deflate`. `--help` / `-h` yields
 * `{ help: true }` (loadConfig ignores it). Keys are returned without the leading dashes.
 * Unknown flags, stray arguments and missing values throw ConfigError.
 */
export function parseServeFlags(argv: string[]): Record<string, string | boolean> {
  const out: Flags = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h' || arg === '--help') {
      out.help = true;
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') {
      throw new ConfigError(arg, 'unexpected argument (flags look like --name value or --name=value)');
    }
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    if (!KNOWN_FLAGS.has(name)) throw unknownFlag(name);
    if (eq >= 0) {
      out[name] = arg.slice(eq + 1);
      continue;
    }
    const next = argv[i + 1];
    if (BOOLEAN_FLAGS.has(name) || name === 'help') {
      if (next !== undefined && isBoolLiteral(next)) {
        out[name] = next;
        i++;
      } else {
        out[name] = true;
      }
      continue;
    }
    if (next === undefined || looksLikeFlag(next)) {
      throw new ConfigError(`--${name}`, `needs a value (--${name} <value> or --${name}=<value>)`);
    }
    out[name] = next;
    i++;
  }
  return out;
}

/**
 * Builds the gateway configuration from the environment and (optionally) parsed flags.
 * Throws ConfigError on the first invalid setting.
 */
export function loadConfig(env: Record<string, string | undefined>, flags: Flags = {}): GatewayConfig {
  const flagValues = normalizeFlags(flags);

  const raw = (envName: string): Raw | undefined => {
    const flag = flagForEnv(envName).slice(2);
    const fromFlag = flagValues.get(flag);
    if (fromFlag !== undefined && !(typeof fromFlag === 'string' && fromFlag.trim() === '')) {
      return { value: fromFlag, source: `--${flag}` };
    }
    const fromEnv = env[envName];
    if (fromEnv !== undefined && fromEnv.trim() !== '') return { value: fromEnv, source: envName };
    return undefined;
  };

  const fail = (envName: string, r: Raw | undefined, reason: string): ConfigError =>
    new ConfigError(envName, r && r.source !== envName ? `${reason} (from ${r.source})` : reason);

  const text = (envName: string, trim = true): string | undefined => {
    const r = raw(envName);
    if (!r) return undefined;
    if (typeof r.value !== 'string') throw fail(envName, r, 'needs a value');
    return trim ? r.value.trim() : r.value;
  };

  const int = (envName: string, def: number, min: number, max: number, showRange = false): number => {
    const r = raw(envName);
    if (!r) return def;
    const range = showRange ? `from ${min} to ${max}` : undefined;
    if (typeof r.value !== 'string') throw fail(envName, r, `needs a value (an integer ${range ?? `>= ${min}`})`);
    const s = r.value.trim();
    const got = `(got ${JSON.stringify(r.value)})`;
    const tooLow = `must be an integer ${range ?? `>= ${min}`} ${got}`;
    if (!/^[+-]?\d+$/.test(s)) throw fail(envName, r, tooLow);
    const n = Number(s) + 0; // + 0 turns "-0" into 0
    if (n < min) throw fail(envName, r, tooLow);
    if (n > max || !Number.isSafeInteger(n)) throw fail(envName, r, `must be an integer ${range ?? `<= ${max}`} ${got}`);
    return n;
  };

  const bool = (envName: string, def: boolean): boolean => {
    const r = raw(envName);
    if (!r) return def;
    const parsed = parseBool(r.value);
    if (parsed === undefined) throw fail(envName, r, `must be true, false, 1 or 0 (got ${JSON.stringify(r.value)})`);
    return parsed;
  };

  // --- mode --------------------------------------------------------------------------------
  let production: boolean;
  const prodFlag = flagValues.get('production');
  if (prodFlag !== undefined && !(typeof prodFlag === 'string' && prodFlag.trim() === '')) {
    const parsed = parseBool(prodFlag);
    if (parsed === undefined) {
      throw new ConfigError('--production', `must be true, false, 1 or 0 (got ${JSON.stringify(prodFlag)})`);
    }
    production = parsed;
  } else {
    production = (env.NODE_ENV ?? '').trim().toLowerCase() === 'production';
  }

  // --- listener ----------------------------------------------------------------------------
  const port = int('PORT', 8080, 0, 65535, true);
  const host = text('HOST') ?? '127.0.0.1';

  // --- auth --------------------------------------------------------------------------------
  const jwtSecret = text('AGENTWIRE_JWT_SECRET', false);
  const jwtPublicKey = parsePem(text('AGENTWIRE_JWT_PUBLIC_KEY', false), raw('AGENTWIRE_JWT_PUBLIC_KEY'), fail);
  const jwksUrl = parseUrl('AGENTWIRE_JWKS_URL', ['http:', 'https:'], 'an http(s) URL', text, raw, fail);
  const jwtIssuer = text('AGENTWIRE_JWT_ISSUER');
  const jwtAudience = text('AGENTWIRE_JWT_AUDIENCE');

  const keySettings = [
    ['AGENTWIRE_JWT_SECRET', jwtSecret],
    ['AGENTWIRE_JWT_PUBLIC_KEY', jwtPublicKey],
    ['AGENTWIRE_JWKS_URL', jwksUrl],
  ] as const;
  const keysSet = keySettings.filter(([, v]) => v !== undefined).map(([name]) => name);
  if (keysSet.length > 1) {
    throw new ConfigError(
      keysSet[0]!,
      `only one of AGENTWIRE_JWT_SECRET, AGENTWIRE_JWT_PUBLIC_KEY, AGENTWIRE_JWKS_URL may be set (got ${keysSet.join(' and ')})`,
    );
  }
  if (production && keysSet.length === 0) {
    throw new ConfigError(
      'AGENTWIRE_JWT_SECRET',
      'production mode needs one of AGENTWIRE_JWT_SECRET, AGENTWIRE_JWT_PUBLIC_KEY or AGENTWIRE_JWKS_URL',
    );
  }
  if (production && jwtSecret !== undefined && Buffer.byteLength(jwtSecret, 'utf8') < MIN_PRODUCTION_SECRET_BYTES) {
    throw new ConfigError(
      'AGENTWIRE_JWT_SECRET',
      `must be at least ${MIN_PRODUCTION_SECRET_BYTES} bytes in production mode (got ${Buffer.byteLength(jwtSecret, 'utf8')})`,
    );
  }
  const devMode = !production && keysSet.length === 0;

  const e2eBypassKey = text('AGENTWIRE_E2E_BYPASS_KEY', false);
  if (e2eBypassKey !== undefined) {
    if (production) {
      throw new ConfigError(
        'AGENTWIRE_E2E_BYPASS_KEY',
        'must not be set in production mode (the server refuses to start with a bypass key in production)',
      );
    }
    if (e2eBypassKey.length < MIN_BYPASS_KEY_CHARS) {
      throw new ConfigError(
        'AGENTWIRE_E2E_BYPASS_KEY',
        `must be at least ${MIN_BYPASS_KEY_CHARS} characters (got ${e2eBypassKey.length})`,
      );
    }
    if (jwtSecret === undefined && !devMode) {
      throw new ConfigError(
        'AGENTWIRE_E2E_BYPASS_KEY',
        `needs AGENTWIRE_JWT_SECRET or dev mode: test tokens are signed with the HS256 secret (got only ${keysSet.join(', ')})`,
      );
    }
  }

  // --- engine ------------------------------------------------------------------------------
  const redisUrl = parseUrl('AGENTWIRE_REDIS_URL', ['redis:', 'rediss:'], 'a redis:// or rediss:// URL', text, raw, fail);
  const nodeId = text('AGENTWIRE_NODE_ID');
  if (nodeId !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(nodeId)) {
    throw fail('AGENTWIRE_NODE_ID', raw('AGENTWIRE_NODE_ID'), `must be 1..64 of [A-Za-z0-9._-] (got ${JSON.stringify(nodeId)})`);
  }
  const runLeaseMs = int('AGENTWIRE_RUN_LEASE_MS', 15000, 100, MAX_TIMER_MS);
  const runSweepMs = int('AGENTWIRE_RUN_SWEEP_MS', 2000, 10, MAX_TIMER_MS);
  const redisCommandTimeoutMs = int('AGENTWIRE_REDIS_COMMAND_TIMEOUT_MS', 2000, 100, MAX_TIMER_MS);

  // --- timing and limits -------------------------------------------------------------------
  const authTimeoutMs = int('AGENTWIRE_AUTH_TIMEOUT_MS', 5000, 1, MAX_TIMER_MS);
  const heartbeatMs = int('AGENTWIRE_HEARTBEAT_MS', 25000, 1, MAX_TIMER_MS);
  const heartbeatTimeoutMs = int('AGENTWIRE_HEARTBEAT_TIMEOUT_MS', 10000, 1, MAX_TIMER_MS);
  const runTimeoutMs = int('AGENTWIRE_RUN_TIMEOUT_MS', 120000, 1, MAX_TIMER_MS);
  const drainTimeoutMs = int('AGENTWIRE_DRAIN_TIMEOUT_MS', 10000, 0, MAX_TIMER_MS);
  const maxConnectionsPerUser = int('AGENTWIRE_MAX_CONNECTIONS_PER_USER', 32, 1, Number.MAX_SAFE_INTEGER);
  const maxActiveRunsPerUser = int('AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER', 32, 1, Number.MAX_SAFE_INTEGER);

  const threadPolicyRaw = raw('AGENTWIRE_THREAD_POLICY');
  let threadPolicy: ThreadPolicy = 'enqueue';
  if (threadPolicyRaw) {
    const v = typeof threadPolicyRaw.value === 'string' ? threadPolicyRaw.value.trim().toLowerCase() : '';
    if (v !== 'enqueue' && v !== 'reject') {
      throw fail(
        'AGENTWIRE_THREAD_POLICY',
        threadPolicyRaw,
        `must be enqueue or reject (got ${JSON.stringify(threadPolicyRaw.value)})`,
      );
    }
    threadPolicy = v;
  }

  const demoStepMs = int('AGENTWIRE_DEMO_STEP_MS', 20, 0, MAX_TIMER_MS);
  const maxFrameBytes = int('AGENTWIRE_MAX_FRAME_BYTES', 65536, 1, Number.MAX_SAFE_INTEGER);
  const inboxLimit = int('AGENTWIRE_INBOX_LIMIT', 64, 1, Number.MAX_SAFE_INTEGER);
  const inboxMaxBytes = int('AGENTWIRE_INBOX_MAX_BYTES', 256 * 1024, 1, Number.MAX_SAFE_INTEGER);
  const pendingBytesLimit = int('AGENTWIRE_PENDING_BYTES_LIMIT', 32 * 1024 * 1024, 1, Number.MAX_SAFE_INTEGER);
  const rateLimitPerSec = int('AGENTWIRE_RATE_LIMIT_PER_SEC', 20, 1, Number.MAX_SAFE_INTEGER);
  const rateLimitBurst = int('AGENTWIRE_RATE_LIMIT_BURST', 40, 1, Number.MAX_SAFE_INTEGER);
  const slowConsumerBytes = int('AGENTWIRE_SLOW_CONSUMER_BYTES', 1048576, 1, Number.MAX_SAFE_INTEGER);
  const permessageDeflate = bool('AGENTWIRE_PERMESSAGE_DEFLATE', false);
  const retentionEvents = int('AGENTWIRE_RETENTION_EVENTS', 1000, 1, Number.MAX_SAFE_INTEGER);
  const retentionMs = int('AGENTWIRE_RETENTION_MS', 86400000, 1, Number.MAX_SAFE_INTEGER);

  const chatPageRaw = raw('AGENTWIRE_CHAT_PAGE');
  const chatPage = chatPageRaw ? bool('AGENTWIRE_CHAT_PAGE', false) : undefined;
  const allowedOrigins = parseOrigins(text('AGENTWIRE_ALLOWED_ORIGINS'), raw('AGENTWIRE_ALLOWED_ORIGINS'), fail);

  const logLevelRaw = raw('AGENTWIRE_LOG_LEVEL');
  let logLevel = 'info';
  if (logLevelRaw) {
    const v = typeof logLevelRaw.value === 'string' ? logLevelRaw.value.trim().toLowerCase() : '';
    if (!(LOG_LEVELS as readonly string[]).includes(v)) {
      throw fail(
        'AGENTWIRE_LOG_LEVEL',
        logLevelRaw,
        `must be one of ${LOG_LEVELS.join(', ')} (got ${JSON.stringify(logLevelRaw.value)})`,
      );
    }
    logLevel = v;
  }

  const config: GatewayConfig = {
    port,
    host,
    production,
    devMode,
    authTimeoutMs,
    heartbeatMs,
    heartbeatTimeoutMs,
    runTimeoutMs,
    drainTimeoutMs,
    maxConnectionsPerUser,
    maxActiveRunsPerUser,
    threadPolicy,
    demoStepMs,
    maxFrameBytes,
    inboxLimit,
    inboxMaxBytes,
    pendingBytesLimit,
    rateLimitPerSec,
    rateLimitBurst,
    slowConsumerBytes,
    permessageDeflate,
    retentionEvents,
    retentionMs,
    allowedOrigins,
    logLevel,
    runLeaseMs,
    runSweepMs,
    redisCommandTimeoutMs,
  };
  if (nodeId !== undefined) config.nodeId = nodeId;
  if (jwtSecret !== undefined) config.jwtSecret = jwtSecret;
  if (jwtPublicKey !== undefined) config.jwtPublicKey = jwtPublicKey;
  if (jwksUrl !== undefined) config.jwksUrl = jwksUrl;
  if (jwtIssuer !== undefined) config.jwtIssuer = jwtIssuer;
  if (jwtAudience !== undefined) config.jwtAudience = jwtAudience;
  if (e2eBypassKey !== undefined) config.e2eBypassKey = e2eBypassKey;
  if (redisUrl !== undefined) config.redisUrl = redisUrl;
  if (chatPage !== undefined) config.chatPage = chatPage;
  return config;
}

/** A copy of the config safe to log: secrets and keys replaced by `[redacted]`. */
export function redactConfig(config: GatewayConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const key of ['jwtSecret', 'jwtPublicKey', 'e2eBypassKey'] as const) {
    if (out[key] !== undefined) out[key] = '[redacted]';
  }
  if (config.redisUrl !== undefined) {
    try {
      const url = new URL(config.redisUrl);
      if (url.password) url.password = 'redacted';
      out.redisUrl = url.toString();
    } catch {
      out.redisUrl = '[redacted]';
    }
  }
  return out;
}

// --- helpers ---------------------------------------------------------------------------------

type Fail = (envName: string, r: Raw | undefined, reason: string) => ConfigError;

function normalizeFlags(flags: Flags): Map<string, string | boolean> {
  const out = new Map<string, string | boolean>();
  for (const [key, value] of Object.entries(flags)) {
    const name = key.replace(/^--/, '');
    if (!KNOWN_FLAGS.has(name)) throw unknownFlag(name);
    if (name === 'help') continue;
    out.set(name, value);
  }
  return out;
}

function unknownFlag(name: string): ConfigError {
  const close = [...KNOWN_FLAGS].filter((known) => editDistance(known, name) <= 2 || known.startsWith(name));
  const hint = close.length > 0 ? ` (did you mean ${close.map((c) => `--${c}`).join(' or ')}?)` : '';
  return new ConfigError(`--${name}`, `unknown flag${hint}`);
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

function isBoolLiteral(s: string): boolean {
  return parseBool(s) !== undefined;
}

function looksLikeFlag(s: string): boolean {
  return s === '-h' || /^--[A-Za-z]/.test(s);
}

function parseBool(value: string | boolean): boolean | undefined {
  if (typeof value === 'boolean') return value;
  const v = value.trim().toLowerCase();
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  return undefined;
}

function parsePem(value: string | undefined, r: Raw | undefined, fail: Fail): string | undefined {
  if (value === undefined) return undefined;
  // PEMs passed through environment files often have their newlines written as `\n`.
  const pem = !value.includes('\n') && value.includes('\\n') ? value.replace(/\\n/g, '\n') : value;
  if (!pem.includes('BEGIN PUBLIC KEY')) {
    throw fail(
      'AGENTWIRE_JWT_PUBLIC_KEY',
      r,
      'must be a PEM public key containing "-----BEGIN PUBLIC KEY-----" (SPKI; certificates and private keys are not accepted)',
    );
  }
  return pem.trim();
}

function parseUrl(
  envName: string,
  protocols: string[],
  what: string,
  text: (envName: string) => string | undefined,
  raw: (envName: string) => Raw | undefined,
  fail: Fail,
): string | undefined {
  const value = text(envName);
  if (value === undefined) return undefined;
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || !protocols.includes(url.protocol)) {
    const shown = envName === 'AGENTWIRE_REDIS_URL' ? redactUrlText(value) : value;
    throw fail(envName, raw(envName), `must be ${what} (got ${JSON.stringify(shown)})`);
  }
  return value;
}

function redactUrlText(value: string): string {
  return value.replace(/\/\/([^/@]*)@/, '//***@');
}

function parseOrigins(value: string | undefined, r: Raw | undefined, fail: Fail): string[] | null {
  if (value === undefined) return null;
  const entries = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (entries.includes('*')) return null;
  if (entries.length === 0) {
    throw fail('AGENTWIRE_ALLOWED_ORIGINS', r, `must be a comma-separated list of origins (got ${JSON.stringify(value)})`);
  }
  const origins: string[] = [];
  for (const entry of entries) {
    const origin = originOf(entry);
    if (origin === undefined) {
      throw fail(
        'AGENTWIRE_ALLOWED_ORIGINS',
        r,
        `each entry must be an origin like https://app.example.com (got ${JSON.stringify(entry)})`,
      );
    }
    if (!origins.includes(origin)) origins.push(origin);
  }
  return origins;
}

/** `scheme://host[:port]` of an http(s) origin entry; undefined when it has a path, query, fragment or credentials. */
function originOf(entry: string): string | undefined {
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return undefined;
  }
  return url.origin;
}
