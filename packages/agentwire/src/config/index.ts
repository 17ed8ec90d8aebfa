/**
 * Gateway configuration: environment variables and `agentwire serve` flags -> one validated,
 * frozen GatewayConfig, by one pass over the settings table (settings.ts) followed by the rules
 * that span settings. Every problem is a ConfigError whose message is one line,
 * `<SETTING>: <reason>` (PROTOCOL.md section 12). Flags override the environment; an empty
 * value (env or flag) counts as unset.
 */
import { didYouMean } from './didYouMean.js';
import { ConfigError } from './errors.js';
import { InvalidValue, booleanOrUndefined, type RawValue } from './parsers.js';
import { SETTINGS, isBooleanSetting, type AnySetting, type GatewayConfig } from './settings.js';

export { ConfigError } from './errors.js';
export { serveHelp, settingsMarkdownTable, settingsTableDrift, withSettingsTable } from './docs.js';
export { DEFAULTS, LOG_LEVELS, SETTINGS, flagForEnv } from './settings.js';
export type { AnySetting, GatewayConfig, SettingInfo } from './settings.js';

/** A shorter bypass key can be guessed even at the test-token route's throttled rate. */
export const MIN_BYPASS_KEY_CHARS = 16;
/** HS256 keys shorter than the hash output (RFC 7518 section 3.2) are refused in production. */
export const MIN_PRODUCTION_SECRET_BYTES = 32;

/** Flag name (no dashes) -> its setting. */
const BY_FLAG = new Map(SETTINGS.map((s) => [s.flag.slice(2), s] as const));
const KNOWN_FLAGS = [...BY_FLAG.keys(), 'help'];

/**
 * `AGENTWIRE_*` variables that are not gateway settings but are read by the other commands
 * (`agentwire chat` and `storm`); a shell exporting them for those must not get a warning.
 */
const OTHER_AGENTWIRE_VARIABLES = ['AGENTWIRE_URL', 'AGENTWIRE_TOKEN'];
const KNOWN_VARIABLES = new Set([...SETTINGS.map((s) => s.env), ...OTHER_AGENTWIRE_VARIABLES]);

type Flags = Record<string, RawValue>;

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
    const known = knownFlag(name);
    if (eq >= 0) {
      out[name] = arg.slice(eq + 1);
      continue;
    }
    const next = argv[i + 1];
    if (known === 'help' || isBooleanSetting(known)) {
      if (next !== undefined && booleanOrUndefined(next) !== undefined) {
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
  const values: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    // Optional settings left unset stay absent rather than present-but-undefined.
    const value = readSetting(s, flagValues.get(s.flag.slice(2)), env[s.env]) ?? s.default;
    if (value !== undefined) values[s.key] = value;
  }
  const parsed = values as Omit<GatewayConfig, 'devMode'>;
  return { ...parsed, devMode: checkAuthRules(parsed) };
}

/** The setting's value from its flag, else its environment variable; undefined when both are unset. */
function readSetting(s: AnySetting, fromFlag: RawValue | undefined, fromEnv: string | undefined): unknown {
  const parse = s.parse as (value: RawValue) => unknown;
  if (fromFlag !== undefined && !isBlank(fromFlag)) {
    try {
      return parse(fromFlag);
    } catch (error) {
      if (!(error instanceof InvalidValue)) throw error;
      // A flag with its own convention (--production for NODE_ENV) is named itself.
      if (s.parseEnv) throw new ConfigError(s.flag, error.message);
      throw new ConfigError(s.env, `${error.message} (from ${s.flag})`);
    }
  }
  if (fromEnv === undefined || isBlank(fromEnv)) return undefined;
  try {
    return s.parseEnv ? s.parseEnv(fromEnv) : parse(fromEnv);
  } catch (error) {
    if (!(error instanceof InvalidValue)) throw error;
    throw new ConfigError(s.env, error.message);
  }
}

/** The rules that span settings: which JWT keys may be set together, production and bypass-key limits. Returns dev mode. */
function checkAuthRules(c: Omit<GatewayConfig, 'devMode'>): boolean {
  const keysSet = (
    [
      ['AGENTWIRE_JWT_SECRET', c.jwtSecret],
      ['AGENTWIRE_JWT_PUBLIC_KEY', c.jwtPublicKey],
      ['AGENTWIRE_JWKS_URL', c.jwksUrl],
    ] as const
  )
    .filter(([, v]) => v !== undefined)
    .map(([name]) => name);
  if (keysSet.length > 1) {
    throw new ConfigError(
      keysSet[0]!,
      `only one of AGENTWIRE_JWT_SECRET, AGENTWIRE_JWT_PUBLIC_KEY, AGENTWIRE_JWKS_URL may be set (got ${keysSet.join(' and ')})`,
    );
  }
  if (c.production && keysSet.length === 0) {
    throw new ConfigError('AGENTWIRE_JWT_SECRET', 'production mode needs one of AGENTWIRE_JWT_SECRET, AGENTWIRE_JWT_PUBLIC_KEY or AGENTWIRE_JWKS_URL');
  }
  if (c.production && c.jwtSecret !== undefined && Buffer.byteLength(c.jwtSecret, 'utf8') < MIN_PRODUCTION_SECRET_BYTES) {
    throw new ConfigError(
      'AGENTWIRE_JWT_SECRET',
      `must be at least ${MIN_PRODUCTION_SECRET_BYTES} bytes in production mode (got ${Buffer.byteLength(c.jwtSecret, 'utf8')})`,
    );
  }
  const devMode = !c.production && keysSet.length === 0;
  checkAgentRules(c);
  if (c.redisUrl !== undefined && c.redisClusterNodes !== undefined) {
    throw new ConfigError('AGENTWIRE_REDIS_CLUSTER_NODES', 'only one of AGENTWIRE_REDIS_URL and AGENTWIRE_REDIS_CLUSTER_NODES may be set');
  }

  if (c.e2eBypassKey !== undefined) {
    if (c.production) {
      throw new ConfigError('AGENTWIRE_E2E_BYPASS_KEY', 'must not be set in production mode (the server refuses to start with a bypass key in production)');
    }
    if (c.e2eBypassKey.length < MIN_BYPASS_KEY_CHARS) {
      throw new ConfigError('AGENTWIRE_E2E_BYPASS_KEY', `must be at least ${MIN_BYPASS_KEY_CHARS} characters (got ${c.e2eBypassKey.length})`);
    }
    if (c.jwtSecret === undefined && !devMode) {
      throw new ConfigError(
        'AGENTWIRE_E2E_BYPASS_KEY',
        `needs AGENTWIRE_JWT_SECRET or dev mode: test tokens are signed with the HS256 secret (got only ${keysSet.join(', ')})`,
      );
    }
  }
  return devMode;
}

/** The upstream agent's settings: the model the openai dialect needs, and nothing set for an agent that is not. */
function checkAgentRules(c: Omit<GatewayConfig, 'devMode'>): void {
  if (c.agentUrl === undefined) {
    if (c.agentModel !== undefined) throw new ConfigError('AGENTWIRE_AGENT_MODEL', 'is set but AGENTWIRE_AGENT_URL is not (no upstream agent to ask)');
    if (c.agentHeaders !== undefined)
      throw new ConfigError('AGENTWIRE_AGENT_HEADERS', 'is set but AGENTWIRE_AGENT_URL is not (no upstream agent to send them to)');
    return;
  }
  if (c.agentProtocol === 'openai' && c.agentModel === undefined) {
    throw new ConfigError('AGENTWIRE_AGENT_MODEL', 'is required with AGENTWIRE_AGENT_PROTOCOL=openai (the model to ask for, e.g. llama3.2)');
  }
}

/**
 * One warning line per `AGENTWIRE_*` variable in `env` that no setting reads, with the nearest
 * setting names: a misspelled setting would otherwise be ignored without a word.
 */
export function unknownVariableWarnings(env: Record<string, string | undefined>): string[] {
  const warnings: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('AGENTWIRE_') || KNOWN_VARIABLES.has(name)) continue;
    const close = didYouMean(name, KNOWN_VARIABLES);
    const hint = close !== null ? ` (did you mean ${close}?)` : '';
    warnings.push(`${name} is not a setting and is ignored${hint}`);
  }
  return warnings;
}

/** A copy of the config safe to log: secrets and keys replaced by `[redacted]`. */
export function redactConfig(config: GatewayConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const key of ['jwtSecret', 'jwtPublicKey', 'e2eBypassKey', 'agentHeaders'] as const) {
    if (out[key] !== undefined) out[key] = '[redacted]';
  }
  for (const key of ['redisUrl', 'databaseUrl'] as const) {
    const value = config[key];
    if (value === undefined) continue;
    try {
      const url = new URL(value);
      if (url.password) url.password = 'redacted';
      out[key] = url.toString();
    } catch {
      out[key] = '[redacted]';
    }
  }
  if (config.agentUrl !== undefined) out.agentUrl = redactedUrl(config.agentUrl);
  return out;
}

/** A URL without its password and query (either may carry a credential). */
export function redactedUrl(value: string): string {
  try {
    const url = new URL(value);
    if (url.password) url.password = 'redacted';
    if (url.search) url.search = '?redacted';
    return url.toString();
  } catch {
    return '[redacted]';
  }
}

// --- helpers ---------------------------------------------------------------------------------

function isBlank(value: RawValue): boolean {
  return typeof value === 'string' && value.trim() === '';
}

function normalizeFlags(flags: Flags): Map<string, RawValue> {
  const out = new Map<string, RawValue>();
  for (const [key, value] of Object.entries(flags)) {
    const name = key.replace(/^--/, '');
    if (knownFlag(name) === 'help') continue;
    out.set(name, value);
  }
  return out;
}

/** The setting a flag name (without dashes) sets, or 'help'; anything else is a ConfigError with a did-you-mean. */
function knownFlag(name: string): AnySetting | 'help' {
  if (name === 'help') return 'help';
  const s = BY_FLAG.get(name);
  if (s !== undefined) return s;
  const close = didYouMean(name, KNOWN_FLAGS);
  const hint = close !== null ? ` (did you mean --${close}?)` : '';
  throw new ConfigError(`--${name}`, `unknown flag${hint}`);
}

function looksLikeFlag(s: string): boolean {
  return s === '-h' || /^--[A-Za-z]/.test(s);
}
