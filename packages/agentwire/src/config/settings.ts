/**
 * The one table of every setting `agentwire serve` understands: its environment variable, its
 * flag, its parser (validation and bounds), its typed default, its help text and the
 * GatewayConfig field it fills. From it come `loadConfig`, `agentwire serve --help`, the
 * README's settings table (`npm run docs:settings`) and the Gateway's defaults (DEFAULTS).
 */
import type { ThreadPolicy } from '../runs/runStore.js';
import { AGENT_PROTOCOLS, DEFAULT_CONNECT_TIMEOUT_MS, type AgentProtocol } from '../upstream/index.js';
import { MAX_TIMER_MS, boolean, headersJson, hostPorts, integer, matching, oneOf, origins, pemPublicKey, text, url, type Parser } from './parsers.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const THREAD_POLICIES: readonly ThreadPolicy[] = ['enqueue', 'reject'];

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
  /** Nodes of a Redis Cluster (exclusive with redisUrl). */
  redisClusterNodes?: Array<{ host: string; port: number }>;
  /** postgres:// URL selecting the PostgreSQL history store (section 14); unset = history folded from the log. */
  databaseUrl?: string;
  databasePoolSize: number;
  databaseStatementTimeoutMs: number;
  archiveBatchEvents: number;
  archiveQueueEvents: number;
  archiveQueueBytes: number;
  /** Node name in a Redis cluster; random when unset. */
  nodeId?: string;
  runLeaseMs: number;
  runSweepMs: number;
  redisCommandTimeoutMs: number;
  httpRequestTimeoutMs: number;
  maxSockets: number;
  authTimeoutMs: number;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
  runTimeoutMs: number;
  drainTimeoutMs: number;
  maxConnectionsPerUser: number;
  maxActiveRunsPerUser: number;
  threadPolicy: ThreadPolicy;
  demoStepMs: number;
  streamFlushMs: number;
  maxFrameBytes: number;
  inboxLimit: number;
  inboxMaxBytes: number;
  pendingBytesLimit: number;
  rateLimitPerSec: number;
  rateLimitBurst: number;
  slowConsumerBytes: number;
  permessageDeflate: boolean;
  retentionEvents: number;
  retentionBytes: number;
  retentionMs: number;
  historyTurns: number;
  /** Serve the chat page; unset = only in dev mode. */
  chatPage?: boolean;
  /** The upstream agent's URL (section 15); unset = the demo agent. */
  agentUrl?: string;
  agentProtocol: AgentProtocol;
  agentModel?: string;
  /** Extra request headers to the upstream agent (credentials): never logged. */
  agentHeaders?: Readonly<Record<string, string>>;
  agentConnectTimeoutMs: number;
  /** Allowed `Origin` values for upgrades (normalized `scheme://host[:port]`); null = any. */
  allowedOrigins: string[] | null;
  logLevel: string;
}

/** The config fields settings fill; `devMode` is derived from them. */
export type SettingKey = Exclude<keyof GatewayConfig, 'devMode'>;
/** The fields that always have a value: their settings have a default. */
type DefaultedKey = { [K in SettingKey]-?: undefined extends GatewayConfig[K] ? never : K }[SettingKey];

export interface SettingInfo<K extends SettingKey = SettingKey> {
  /** Environment variable, e.g. `AGENTWIRE_HEARTBEAT_MS`. */
  readonly env: string;
  /** Command-line flag including the dashes, e.g. `--heartbeat-ms`. */
  readonly flag: string;
  /** The GatewayConfig field the setting fills. */
  readonly key: K;
  /** Reads a flag value, or the environment variable when `parseEnv` is absent. Throws InvalidValue. */
  readonly parse: Parser<Exclude<GatewayConfig[K], undefined>>;
  /**
   * Reads the environment variable when it follows another convention than the flag
   * (NODE_ENV: production or not, never an error). Errors in such a setting's flag name the flag.
   */
  readonly parseEnv?: (value: string) => Exclude<GatewayConfig[K], undefined>;
  /** The value when the setting is unset; undefined leaves the field absent. */
  readonly default: GatewayConfig[K];
  /** The default as shown to people (help, README): the value, `(unset)`, or a word for it. */
  readonly defaultText: string;
  readonly description: string;
}

/** One entry for each config field; `AnySetting` keeps each entry's parser typed for its field. */
export type AnySetting = { [K in SettingKey]: SettingInfo<K> }[SettingKey];

export const UNSET = '(unset)';

/**
 * The flag for an environment variable: without `AGENTWIRE_`, lower-cased, `_` -> `-`.
 * `PORT` -> `--port`, `AGENTWIRE_JWT_SECRET` -> `--jwt-secret`. (`NODE_ENV` is the exception:
 * its flag is `--production`, see SETTINGS.)
 */
export function flagForEnv(env: string): string {
  return `--${env
    .replace(/^AGENTWIRE_/, '')
    .toLowerCase()
    .replace(/_/g, '-')}`;
}

interface SettingSpec<K extends SettingKey> {
  env: string;
  key: K;
  parse: Parser<Exclude<GatewayConfig[K], undefined>>;
  default: GatewayConfig[K];
  description: string;
  flag?: string;
  parseEnv?: (value: string) => Exclude<GatewayConfig[K], undefined>;
  /** Shown instead of the default when the value alone would mislead (`null` origins = any). */
  shownDefault?: string;
}

function setting<K extends SettingKey>(spec: SettingSpec<K>): SettingInfo<K> {
  const { shownDefault, flag, ...rest } = spec;
  return Object.freeze({
    ...rest,
    flag: flag ?? flagForEnv(spec.env),
    defaultText:
      shownDefault ??
      (spec.default === undefined
        ? UNSET
        : Array.isArray(spec.default)
          ? (spec.default as readonly string[]).join(',')
          : String(spec.default as string | number | boolean)),
  });
}

/** Delays are bounded by what Node's timers accept; counts and sizes by exact integers. */
const timerMs = (min: number) => integer(min, MAX_TIMER_MS);
const count = (min: number) => integer(min, Number.MAX_SAFE_INTEGER);
const trimmedText = text({ trim: true });
/** Secrets keep every character: leading or trailing spaces are part of the key. */
const secretText = text({ trim: false });

/**
 * Entries an archive catch-up reads from the log at once, whatever AGENTWIRE_ARCHIVE_BATCH_EVENTS
 * says: write-behind batches are bounded in bytes by the queue, a read is not (a Redis log bounds
 * its entries in count, not in bytes), so it stays at the batch size it had before batches grew.
 */
export const ARCHIVE_CATCH_UP_READ_EVENTS = 2000;

export const SETTINGS: ReadonlyArray<AnySetting> = Object.freeze([
  setting({ env: 'PORT', key: 'port', parse: integer(0, 65535, true), default: 8080, description: 'TCP port to listen on (0 = pick a free port).' }),
  setting({ env: 'HOST', key: 'host', parse: trimmedText, default: '127.0.0.1', description: 'Interface to listen on (0.0.0.0 for all).' }),
  setting({
    env: 'NODE_ENV',
    flag: '--production',
    key: 'production',
    parse: boolean,
    parseEnv: (value) => value.trim().toLowerCase() === 'production',
    default: false,
    shownDefault: 'development',
    description:
      'NODE_ENV=production in any letter case (or the flag --production) is production mode: a JWT key is required, an HS256 secret must be at least 32 bytes and the E2E bypass key is refused.',
  }),
  setting({ env: 'AGENTWIRE_JWT_SECRET', key: 'jwtSecret', parse: secretText, default: undefined, description: 'Shared secret for HS256 tokens.' }),
  setting({
    env: 'AGENTWIRE_JWT_PUBLIC_KEY',
    key: 'jwtPublicKey',
    parse: pemPublicKey,
    default: undefined,
    description: 'PEM public key ("BEGIN PUBLIC KEY") for RS256/ES256 tokens.',
  }),
  setting({
    env: 'AGENTWIRE_JWKS_URL',
    key: 'jwksUrl',
    parse: url(['http:', 'https:'], 'an http(s) URL'),
    default: undefined,
    description: 'http(s) URL of a JWKS for RS256/ES256 tokens.',
  }),
  setting({ env: 'AGENTWIRE_JWT_ISSUER', key: 'jwtIssuer', parse: trimmedText, default: undefined, description: 'Required `iss` claim, when set.' }),
  setting({ env: 'AGENTWIRE_JWT_AUDIENCE', key: 'jwtAudience', parse: trimmedText, default: undefined, description: 'Required `aud` claim, when set.' }),
  setting({
    env: 'AGENTWIRE_E2E_BYPASS_KEY',
    key: 'e2eBypassKey',
    parse: secretText,
    default: undefined,
    description: 'Enables POST /v1/auth/test-token guarded by this key (at least 16 characters; refused in production; needs HS256 or dev mode).',
  }),
  setting({
    env: 'AGENTWIRE_REDIS_URL',
    key: 'redisUrl',
    parse: url(['redis:', 'rediss:'], 'a redis:// or rediss:// URL', true),
    default: undefined,
    description: 'redis:// or rediss:// URL selecting the Redis engine; unset = in-memory engine.',
  }),
  setting({
    env: 'AGENTWIRE_REDIS_CLUSTER_NODES',
    key: 'redisClusterNodes',
    parse: hostPorts,
    default: undefined,
    description:
      'Comma-separated host:port of Redis Cluster nodes (Redis 7+): the Redis engine on a Redis Cluster instead; exclusive with AGENTWIRE_REDIS_URL.',
  }),
  setting({
    env: 'AGENTWIRE_DATABASE_URL',
    key: 'databaseUrl',
    parse: url(['postgres:', 'postgresql:'], 'a postgres:// or postgresql:// URL', true),
    default: undefined,
    description:
      'postgres:// URL selecting the PostgreSQL history store (thread history archived write-behind, migrations applied at start-up); unset = history folded from the retained log.',
  }),
  setting({
    env: 'AGENTWIRE_DATABASE_POOL_SIZE',
    key: 'databasePoolSize',
    parse: integer(1, 1000),
    default: 10,
    description: 'With PostgreSQL: connections this node opens at most (the archive writer uses one at a time).',
  }),
  setting({
    env: 'AGENTWIRE_DATABASE_STATEMENT_TIMEOUT_MS',
    key: 'databaseStatementTimeoutMs',
    parse: timerMs(100),
    default: 5000,
    description: 'With PostgreSQL: deadline of every statement (server-side statement_timeout and client-side query deadline).',
  }),
  setting({
    env: 'AGENTWIRE_ARCHIVE_BATCH_EVENTS',
    key: 'archiveBatchEvents',
    parse: integer(1, 10_000),
    default: 5000,
    description: `With PostgreSQL: most events archived in one transaction (batches form while the previous one is written; a catch-up from the log reads at most ${ARCHIVE_CATCH_UP_READ_EVENTS} at a time).`,
  }),
  setting({
    env: 'AGENTWIRE_ARCHIVE_QUEUE_EVENTS',
    key: 'archiveQueueEvents',
    parse: count(1),
    default: 100_000,
    description: 'With PostgreSQL: events waiting to be archived; beyond it they are dropped from the queue and archived later from the log.',
  }),
  setting({
    env: 'AGENTWIRE_ARCHIVE_QUEUE_BYTES',
    key: 'archiveQueueBytes',
    parse: count(1024),
    default: 64 * 1024 * 1024,
    description: 'With PostgreSQL: bytes of events waiting to be archived; beyond it they are dropped from the queue and archived later from the log.',
  }),
  setting({
    env: 'AGENTWIRE_NODE_ID',
    key: 'nodeId',
    parse: matching(/^[A-Za-z0-9._-]{1,64}$/, '1..64 of [A-Za-z0-9._-]'),
    default: undefined,
    description: 'Name of this gateway node in a Redis cluster (logs, run ownership); random when unset.',
  }),
  setting({
    env: 'AGENTWIRE_RUN_LEASE_MS',
    key: 'runLeaseMs',
    parse: timerMs(100),
    default: 15000,
    description: 'With Redis: a node that has not renewed its runs for this long is presumed dead; its runs end with run_lost.',
  }),
  setting({
    env: 'AGENTWIRE_RUN_SWEEP_MS',
    key: 'runSweepMs',
    parse: timerMs(10),
    default: 2000,
    description: 'With Redis: how often each node looks for runs of dead nodes.',
  }),
  setting({
    env: 'AGENTWIRE_REDIS_COMMAND_TIMEOUT_MS',
    key: 'redisCommandTimeoutMs',
    parse: timerMs(100),
    default: 2000,
    description:
      'With Redis: deadline of every Redis command; past it the connection or message gets 1013 engine_unavailable (the command is treated as in doubt).',
  }),
  setting({
    env: 'AGENTWIRE_HTTP_REQUEST_TIMEOUT_MS',
    key: 'httpRequestTimeoutMs',
    parse: timerMs(100),
    default: 30000,
    description:
      'Time an HTTP request (headers and body) of the server `serve` starts may take to arrive; past it the answer is 408 and the connection closes, so slow clients cannot hold sockets.',
  }),
  setting({
    env: 'AGENTWIRE_MAX_SOCKETS',
    key: 'maxSockets',
    parse: count(1),
    default: 16384,
    description:
      "TCP connections (HTTP and WebSocket, idle or not) the gateway's server holds open at once; one more is closed as it is accepted and counted in agentwire_sockets_refused_total. Keep it under the open-file limit (ulimit -n) less the sockets of upstream runs, Redis and PostgreSQL.",
  }),
  setting({
    env: 'AGENTWIRE_AUTH_TIMEOUT_MS',
    key: 'authTimeoutMs',
    parse: timerMs(1),
    default: 5000,
    description: 'Time a connection has to authenticate before it is closed with 4408.',
  }),
  setting({ env: 'AGENTWIRE_HEARTBEAT_MS', key: 'heartbeatMs', parse: timerMs(1), default: 25000, description: 'Interval between WebSocket pings.' }),
  setting({
    env: 'AGENTWIRE_HEARTBEAT_TIMEOUT_MS',
    key: 'heartbeatTimeoutMs',
    parse: timerMs(1),
    default: 10000,
    description: 'A connection that has not answered a ping within this is terminated.',
  }),
  setting({
    env: 'AGENTWIRE_RUN_TIMEOUT_MS',
    key: 'runTimeoutMs',
    parse: timerMs(1),
    default: 120000,
    description: 'A run still going after this ends with agent_error code timeout.',
  }),
  setting({
    env: 'AGENTWIRE_DRAIN_TIMEOUT_MS',
    key: 'drainTimeoutMs',
    parse: timerMs(0),
    default: 10000,
    description: 'On shutdown, time runs in flight get to finish (0 = end them at once).',
  }),
  setting({
    env: 'AGENTWIRE_MAX_CONNECTIONS_PER_USER',
    key: 'maxConnectionsPerUser',
    parse: count(1),
    default: 32,
    description: 'Connections per user; one more is closed with 4429.',
  }),
  setting({
    env: 'AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER',
    key: 'maxActiveRunsPerUser',
    parse: count(1),
    default: 32,
    description: 'Runs of one user running or queued at once (all threads, all nodes); one more message gets error too_many_runs.',
  }),
  setting({
    env: 'AGENTWIRE_THREAD_POLICY',
    key: 'threadPolicy',
    parse: oneOf(THREAD_POLICIES),
    default: 'enqueue',
    description: 'A message on a busy thread: enqueue (ack queued) or reject (error thread_busy).',
  }),
  setting({
    env: 'AGENTWIRE_DEMO_STEP_MS',
    key: 'demoStepMs',
    parse: timerMs(0),
    default: 20,
    description:
      "Pause between the demo agent's steps (0 allowed); between the words of its streamed answer it waits at least AGENTWIRE_STREAM_FLUSH_MS, so each word is one delta.",
  }),
  setting({
    env: 'AGENTWIRE_STREAM_FLUSH_MS',
    key: 'streamFlushMs',
    parse: timerMs(0),
    default: 20,
    description:
      'Longest a streamed fragment of an answer or of reasoning is held to be merged with the next ones into one delta event (0 = no merging); a merged delta is also sent at 4 KiB and before any other event of its run.',
  }),
  setting({
    env: 'AGENTWIRE_AGENT_URL',
    key: 'agentUrl',
    parse: url(['http:', 'https:'], 'an http(s) URL', true),
    default: undefined,
    description:
      'http(s) URL of an upstream agent: every run is one POST to it (for openai: the OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1); unset = the demo agent.',
  }),
  setting({
    env: 'AGENTWIRE_AGENT_PROTOCOL',
    key: 'agentProtocol',
    parse: oneOf(AGENT_PROTOCOLS),
    default: 'agentwire',
    description: "The upstream agent's dialect: agentwire (NDJSON or SSE steps), ag-ui, ai-sdk (UI message stream) or openai (chat completions).",
  }),
  setting({
    env: 'AGENTWIRE_AGENT_MODEL',
    key: 'agentModel',
    parse: trimmedText,
    default: undefined,
    description: 'The model the openai dialect asks for (required with it).',
  }),
  setting({
    env: 'AGENTWIRE_AGENT_HEADERS',
    key: 'agentHeaders',
    parse: headersJson,
    default: undefined,
    description: 'JSON object of extra request headers to the upstream agent, e.g. {"authorization":"Bearer …"}; never logged or echoed.',
  }),
  setting({
    env: 'AGENTWIRE_AGENT_CONNECT_TIMEOUT_MS',
    key: 'agentConnectTimeoutMs',
    parse: timerMs(1),
    default: DEFAULT_CONNECT_TIMEOUT_MS,
    description: 'The upstream agent must answer (status line and headers) within this, or the run ends with agent_failed.',
  }),
  setting({
    env: 'AGENTWIRE_MAX_FRAME_BYTES',
    key: 'maxFrameBytes',
    parse: count(1),
    default: 65536,
    description: 'Largest inbound frame; a larger one closes the connection with 1009.',
  }),
  setting({
    env: 'AGENTWIRE_INBOX_LIMIT',
    key: 'inboxLimit',
    parse: count(1),
    default: 64,
    description: 'Frames held before a connection is ready; overflow closes with 1008.',
  }),
  setting({
    env: 'AGENTWIRE_INBOX_MAX_BYTES',
    key: 'inboxMaxBytes',
    parse: count(1),
    default: 256 * 1024,
    description: 'Bytes of raw frames held before a connection is ready; overflow closes with 1008.',
  }),
  setting({
    env: 'AGENTWIRE_PENDING_BYTES_LIMIT',
    key: 'pendingBytesLimit',
    parse: count(1),
    default: 32 * 1024 * 1024,
    description: 'Bytes held by all connections not yet ready together; beyond it a frame closes its connection with 1013 and upgrades get 503.',
  }),
  setting({
    env: 'AGENTWIRE_RATE_LIMIT_PER_SEC',
    key: 'rateLimitPerSec',
    parse: count(1),
    default: 20,
    description: 'Inbound frames per second per connection (token bucket refill).',
  }),
  setting({
    env: 'AGENTWIRE_RATE_LIMIT_BURST',
    key: 'rateLimitBurst',
    parse: count(1),
    default: 40,
    description: 'Inbound frame burst per connection (token bucket size).',
  }),
  setting({
    env: 'AGENTWIRE_SLOW_CONSUMER_BYTES',
    key: 'slowConsumerBytes',
    parse: count(1),
    default: 1024 * 1024,
    description: 'Unsent outbound bytes above which a connection is closed with 4008.',
  }),
  setting({
    env: 'AGENTWIRE_PERMESSAGE_DEFLATE',
    key: 'permessageDeflate',
    parse: boolean,
    default: false,
    description: 'WebSocket permessage-deflate compression (true/false/1/0).',
  }),
  setting({
    env: 'AGENTWIRE_RETENTION_EVENTS',
    key: 'retentionEvents',
    parse: count(1),
    default: 10000,
    description: 'Durable events kept per user for resume (older history: the history routes).',
  }),
  setting({
    env: 'AGENTWIRE_RETENTION_BYTES',
    key: 'retentionBytes',
    parse: count(1024),
    default: 8 * 1024 * 1024,
    description:
      'In-memory engine: bytes of event JSON kept per user (the newest event is always kept); the oldest events go first when either this or AGENTWIRE_RETENTION_EVENTS is exceeded.',
  }),
  setting({
    env: 'AGENTWIRE_HISTORY_TURNS',
    key: 'historyTurns',
    parse: count(0),
    default: 20,
    description: 'Earlier turns of a thread an agent receives with each run (user messages and answers); 0 sends none.',
  }),
  setting({
    env: 'AGENTWIRE_RETENTION_MS',
    key: 'retentionMs',
    parse: count(1),
    default: 86_400_000,
    description:
      "Age after which durable events may be dropped. With Redis, a user's keys expire between this and this plus a tenth of it (at most a minute more) after the user's last append.",
  }),
  setting({
    env: 'AGENTWIRE_CHAT_PAGE',
    key: 'chatPage',
    parse: boolean,
    default: undefined,
    description: 'Serve the browser chat page at / (true/false); unset = only in dev mode. Outside dev mode the page asks for a token.',
  }),
  setting({
    env: 'AGENTWIRE_ALLOWED_ORIGINS',
    key: 'allowedOrigins',
    parse: origins,
    default: null,
    shownDefault: '(any)',
    description: 'Comma-separated Origin allow-list for upgrades (others get 4403) and for CORS of the history routes; unset or * = any.',
  }),
  setting({
    env: 'AGENTWIRE_LOG_LEVEL',
    key: 'logLevel',
    parse: oneOf(LOG_LEVELS),
    default: 'info',
    description: 'fatal, error, warn, info, debug, trace or silent.',
  }),
]);

/** Flags that may appear without a value (`--production` means `--production=true`). */
export function isBooleanSetting(s: AnySetting): boolean {
  return s.parse === (boolean as Parser<unknown>);
}

/**
 * Every setting's default, typed: the defaults of `createGateway` options that are settings
 * come from here, so the library and `agentwire serve` cannot drift apart.
 */
export const DEFAULTS: Readonly<Pick<GatewayConfig, DefaultedKey>> = Object.freeze(
  Object.fromEntries(SETTINGS.filter((s) => s.default !== undefined).map((s) => [s.key, s.default])) as Pick<GatewayConfig, DefaultedKey>,
);
