/**
 * The table of every setting `agentwire serve` understands: its environment variable, its
 * command-line flag, what it means and its default. `agentwire serve --help` and the README
 * tables are generated from it; `loadConfig` and `parseServeFlags` use it to know which flags exist.
 */
export interface SettingInfo {
  /** Environment variable, e.g. `AGENTWIRE_HEARTBEAT_MS`. */
  readonly env: string;
  /** Command-line flag including the dashes, e.g. `--heartbeat-ms`. */
  readonly flag: string;
  readonly description: string;
  /** Default as shown to people; `(unset)` when the setting has no default. */
  readonly default: string;
}

/**
 * The flag for an environment variable: without `AGENTWIRE_`, lower-cased, `_` -> `-`.
 * `PORT` -> `--port`, `AGENTWIRE_JWT_SECRET` -> `--jwt-secret`. (`NODE_ENV` is the exception:
 * its flag is `--production`, see SETTINGS.)
 */
export function flagForEnv(env: string): string {
  return `--${env.replace(/^AGENTWIRE_/, '').toLowerCase().replace(/_/g, '-')}`;
}

function setting(env: string, defaultValue: string, description: string): SettingInfo {
  return { env, flag: flagForEnv(env), description, default: defaultValue };
}

export const UNSET = '(unset)';

export const SETTINGS: ReadonlyArray<SettingInfo> = Object.freeze([
  setting('PORT', '8080', 'TCP port to listen on (0 = pick a free port).'),
  setting('HOST', '127.0.0.1', 'Interface to listen on (0.0.0.0 for all).'),
  {
    env: 'NODE_ENV',
    flag: '--production',
    description:
      'NODE_ENV=production in any letter case (or the flag --production) is production mode: a JWT key is required, an HS256 secret must be at least 32 bytes and the E2E bypass key is refused.',
    default: 'development',
  },
  setting('AGENTWIRE_JWT_SECRET', UNSET, 'Shared secret for HS256 tokens.'),
  setting('AGENTWIRE_JWT_PUBLIC_KEY', UNSET, 'PEM public key ("BEGIN PUBLIC KEY") for RS256/ES256 tokens.'),
  setting('AGENTWIRE_JWKS_URL', UNSET, 'http(s) URL of a JWKS for RS256/ES256 tokens.'),
  setting('AGENTWIRE_JWT_ISSUER', UNSET, 'Required `iss` claim, when set.'),
  setting('AGENTWIRE_JWT_AUDIENCE', UNSET, 'Required `aud` claim, when set.'),
  setting(
    'AGENTWIRE_E2E_BYPASS_KEY',
    UNSET,
    'Enables POST /v1/auth/test-token guarded by this key (at least 16 characters; refused in production; needs HS256 or dev mode).',
  ),
  setting('AGENTWIRE_REDIS_URL', UNSET, 'redis:// or rediss:// URL selecting the Redis engine; unset = in-memory engine.'),
  setting('AGENTWIRE_NODE_ID', UNSET, 'Name of this gateway node in a Redis cluster (logs, run ownership); random when unset.'),
  setting('AGENTWIRE_RUN_LEASE_MS', '15000', 'With Redis: a node that has not renewed its runs for this long is presumed dead; its runs end with run_lost.'),
  setting('AGENTWIRE_RUN_SWEEP_MS', '2000', 'With Redis: how often each node looks for runs of dead nodes.'),
  setting(
    'AGENTWIRE_REDIS_COMMAND_TIMEOUT_MS',
    '2000',
    'With Redis: deadline of every Redis command; past it the connection or message gets 1013 engine_unavailable (the command is treated as in doubt).',
  ),
  setting('AGENTWIRE_AUTH_TIMEOUT_MS', '5000', 'Time a connection has to authenticate before it is closed with 4408.'),
  setting('AGENTWIRE_HEARTBEAT_MS', '25000', 'Interval between WebSocket pings.'),
  setting('AGENTWIRE_HEARTBEAT_TIMEOUT_MS', '10000', 'A connection that has not answered a ping within this is terminated.'),
  setting('AGENTWIRE_RUN_TIMEOUT_MS', '120000', 'A run still going after this ends with agent_error code timeout.'),
  setting('AGENTWIRE_DRAIN_TIMEOUT_MS', '10000', 'On shutdown, time runs in flight get to finish (0 = end them at once).'),
  setting('AGENTWIRE_MAX_CONNECTIONS_PER_USER', '32', 'Connections per user; one more is closed with 4429.'),
  setting(
    'AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER',
    '32',
    "Runs of one user running or queued at once (all threads, all nodes); one more message gets error too_many_runs.",
  ),
  setting('AGENTWIRE_THREAD_POLICY', 'enqueue', 'A message on a busy thread: enqueue (ack queued) or reject (error thread_busy).'),
  setting('AGENTWIRE_DEMO_STEP_MS', '20', "Pause between the demo agent's steps (0 allowed)."),
  setting('AGENTWIRE_MAX_FRAME_BYTES', '65536', 'Largest inbound frame; a larger one closes the connection with 1009.'),
  setting('AGENTWIRE_INBOX_LIMIT', '64', 'Frames held before a connection is ready; overflow closes with 1008.'),
  setting('AGENTWIRE_INBOX_MAX_BYTES', '262144', 'Bytes of raw frames held before a connection is ready; overflow closes with 1008.'),
  setting(
    'AGENTWIRE_PENDING_BYTES_LIMIT',
    '33554432',
    'Bytes held by all connections not yet ready together; beyond it a frame closes its connection with 1013 and upgrades get 503.',
  ),
  setting('AGENTWIRE_RATE_LIMIT_PER_SEC', '20', 'Inbound frames per second per connection (token bucket refill).'),
  setting('AGENTWIRE_RATE_LIMIT_BURST', '40', 'Inbound frame burst per connection (token bucket size).'),
  setting('AGENTWIRE_SLOW_CONSUMER_BYTES', '1048576', 'Unsent outbound bytes above which a connection is closed with 4008.'),
  setting('AGENTWIRE_PERMESSAGE_DEFLATE', 'false', 'WebSocket permessage-deflate compression (true/false/1/0).'),
  setting('AGENTWIRE_RETENTION_EVENTS', '1000', 'Durable events kept per user for resume.'),
  setting('AGENTWIRE_RETENTION_MS', '86400000', 'Age after which durable events may be dropped.'),
  setting(
    'AGENTWIRE_CHAT_PAGE',
    UNSET,
    'Serve the browser chat page at / (true/false); unset = only in dev mode. Outside dev mode the page asks for a token.',
  ),
  setting('AGENTWIRE_ALLOWED_ORIGINS', '(any)', 'Comma-separated Origin allow-list for upgrades (others get 4403); unset or * = any.'),
  setting('AGENTWIRE_LOG_LEVEL', 'info', 'fatal, error, warn, info, debug, trace or silent.'),
]);
