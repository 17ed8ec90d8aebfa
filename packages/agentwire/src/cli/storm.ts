import {
  ProgressPrinter,
  defaultSourceAddresses,
  defaultWorkers,
  parseSourceAddresses,
  runStorm,
  writeReport,
  type StormOptions,
  type StormReport,
} from '@agentwire/storm';
import { commandArgs, usageError, type CommandSpec } from './args.js';

const HELP = `agentwire storm — load and race probe for any server speaking agentwire.v1

Usage:
  agentwire storm --url ws://host:port/ws --connections N --users U --rate R --messages M
                  (--token-secret S | --bypass-key K) [--duration D [--keep-sending]]
                  [--report DIR] [--workers W] [--source-addresses 127.0.0.1-127.0.0.8] [--json]

  --url U                 endpoint (default $AGENTWIRE_URL or ws://127.0.0.1:8080/ws)
  --connections N         connections to open (default 100)
  --users U               users storm-u0..storm-u<U-1>; connection c belongs to user c % U (default 10)
  --rate R                new connections per second (default 200)
  --messages M            messages each user sends, one at a time, from random connections (default 2)
  --token-secret S        sign HS256 tokens locally (default $AGENTWIRE_JWT_SECRET)
  --bypass-key K          get tokens from POST /v1/auth/test-token (default $AGENTWIRE_E2E_BYPASS_KEY)
  --duration D            keep the connections open D seconds after the messages (default 0)
  --keep-sending          during --duration, each user keeps sending (one run at a time)
  --send-interval-ms N    pause between those messages (default 1000)
  --report DIR            write report.md, report.json and SVG charts into DIR
  --workers W             worker processes (default: one per ${8000} connections)
  --source-addresses A    local addresses to connect from, e.g. 127.0.0.1-127.0.0.8
  --threads T             threads per user the messages rotate over (default 3)
  --user-prefix P         user id prefix (default storm-u)
  --ready-timeout-ms N    open + connection_ready deadline per connection (default 15000)
  --ack-timeout-ms N      deadline for the ack of each message (default 15000)
  --settle-timeout-ms N   deadline for every run to end on every connection (default 30000)
  --max-inflight N        connections opening but not yet ready, at most (default 1000)
  --json                  print the report as JSON on stdout
  -h, --help              this help

Exit status: 0 every guarantee held, 1 a guarantee broke, 2 bad usage, 3 the probe could not run.
`;

const STORM_COMMAND: CommandSpec = {
  name: 'storm',
  help: HELP,
  options: {
    url: { type: 'string', default: process.env.AGENTWIRE_URL ?? 'ws://127.0.0.1:8080/ws' },
    connections: { type: 'string', default: '100' },
    users: { type: 'string', default: '10' },
    rate: { type: 'string', default: '200' },
    messages: { type: 'string', default: '2' },
    'token-secret': { type: 'string' },
    'bypass-key': { type: 'string' },
    duration: { type: 'string', default: '0' },
    'keep-sending': { type: 'boolean', default: false },
    'send-interval-ms': { type: 'string', default: '1000' },
    report: { type: 'string' },
    workers: { type: 'string' },
    'source-addresses': { type: 'string' },
    threads: { type: 'string', default: '3' },
    'user-prefix': { type: 'string', default: 'storm-u' },
    'ready-timeout-ms': { type: 'string', default: '15000' },
    'ack-timeout-ms': { type: 'string', default: '15000' },
    'settle-timeout-ms': { type: 'string', default: '30000' },
    'max-inflight': { type: 'string', default: '1000' },
    json: { type: 'boolean', default: false },
  },
};

/** `agentwire storm`: see HELP and docs/STORM.md. */
export async function runStormCommand(argv: string[]): Promise<number> {
  const parsed = commandArgs(STORM_COMMAND, argv);
  if (typeof parsed === 'number') return parsed;
  const v = parsed.values;
  if (parsed.positionals.length > 0) return usageError('storm', `agentwire storm: unexpected argument "${parsed.positionals[0]}"`);

  let options: StormOptions;
  try {
    options = buildOptions(v);
  } catch (error) {
    return usageError('storm', `agentwire storm: ${(error as Error).message}`);
  }
  const perUser = Math.ceil(options.connections / options.users);
  if (perUser > 32) {
    process.stderr.write(
      `agentwire storm: warning: up to ${perUser} connections per user; a server with the default cap ` +
        `(AGENTWIRE_MAX_CONNECTIONS_PER_USER=32) closes the extra ones with 4429\n`,
    );
  }

  const printer = new ProgressPrinter(process.stderr);
  let outcome;
  try {
    outcome = await runStorm(options, { onProgress: (p, ms) => printer.update(p, ms) });
  } catch (error) {
    process.stderr.write(`\nagentwire storm: ${(error as Error).stack ?? String(error)}\n`);
    return 3;
  }
  const { report, readyTimes } = outcome;
  printer.done(
    {
      planned: report.totals.connectionsPlanned,
      connected: report.totals.connectionsOpened,
      ready: report.totals.connectionsReady,
      closed: report.totals.connectionsClosed,
      failed: report.totals.connectFailures,
      messagesSent: report.totals.messagesSent,
      runsAcked: report.totals.runsAcked,
      runsDone: report.totals.runsDone,
      violations: report.totals.violations,
      phase: 'done',
    },
    report.elapsedMs,
  );
  if (typeof v.report === 'string') {
    try {
      await writeReport(v.report, report, readyTimes);
    } catch (error) {
      process.stderr.write(`agentwire storm: could not write the report: ${(error as Error).message}\n`);
      return 3;
    }
  }
  process.stdout.write(v.json ? `${JSON.stringify(report)}\n` : summary(report, typeof v.report === 'string' ? v.report : null));
  if (report.fatal.length > 0) return 3;
  return report.passed ? 0 : 1;
}

function buildOptions(v: Record<string, string | boolean | undefined>): StormOptions {
  const url = v.url as string;
  let parsedUrl: URL;
  try {
    parsedUrl = new URL(url);
  } catch {
    throw new Error(`--url must be a ws:// or wss:// URL (got "${url}")`);
  }
  if (parsedUrl.protocol !== 'ws:' && parsedUrl.protocol !== 'wss:') throw new Error(`--url must be a ws:// or wss:// URL (got "${url}")`);
  const connections = int(v, 'connections', 1);
  const users = int(v, 'users', 1);
  if (users > connections) throw new Error(`--users (${users}) must not exceed --connections (${connections}): every user needs a connection`);
  const secret = (v['token-secret'] as string | undefined) ?? undefined;
  const key = (v['bypass-key'] as string | undefined) ?? undefined;
  if (secret !== undefined && key !== undefined) throw new Error('give --token-secret or --bypass-key, not both');
  let auth: StormOptions['auth'];
  if (secret !== undefined) auth = { kind: 'secret', secret };
  else if (key !== undefined) auth = { kind: 'bypass', key };
  else if (process.env.AGENTWIRE_JWT_SECRET) auth = { kind: 'secret', secret: process.env.AGENTWIRE_JWT_SECRET };
  else if (process.env.AGENTWIRE_E2E_BYPASS_KEY) auth = { kind: 'bypass', key: process.env.AGENTWIRE_E2E_BYPASS_KEY };
  else throw new Error('--token-secret or --bypass-key is required (or AGENTWIRE_JWT_SECRET / AGENTWIRE_E2E_BYPASS_KEY)');
  if (auth.kind === 'secret' && auth.secret.length === 0) throw new Error('--token-secret is empty');
  const rate = num(v, 'rate', 0.001);
  let sourceAddresses: string[];
  if (typeof v['source-addresses'] === 'string') {
    try {
      sourceAddresses = parseSourceAddresses(v['source-addresses']);
    } catch (error) {
      throw new Error(`--source-addresses: ${(error as Error).message}`, { cause: error });
    }
  } else {
    sourceAddresses = defaultSourceAddresses(url, connections);
  }
  const threadsValue = int(v, 'threads', 1);
  if (!/^[A-Za-z0-9._:-]{1,40}$/.test(v['user-prefix'] as string)) throw new Error('--user-prefix must be 1..40 of [A-Za-z0-9._:-]');
  return {
    url,
    connections,
    users,
    rate,
    messages: int(v, 'messages', 0),
    auth,
    durationSec: num(v, 'duration', 0),
    keepSending: v['keep-sending'] === true,
    sendIntervalMs: int(v, 'send-interval-ms', 0),
    workers: v.workers === undefined ? defaultWorkers(connections) : int(v, 'workers', 1),
    sourceAddresses,
    threads: threadsValue,
    userPrefix: v['user-prefix'] as string,
    readyTimeoutMs: int(v, 'ready-timeout-ms', 1),
    ackTimeoutMs: int(v, 'ack-timeout-ms', 1),
    settleTimeoutMs: int(v, 'settle-timeout-ms', 0),
    maxInflight: int(v, 'max-inflight', 1),
  };
}

function int(v: Record<string, string | boolean | undefined>, name: string, min: number): number {
  const text = String(v[name]);
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new Error(`--${name} must be an integer >= ${min} (got "${text}")`);
  return value;
}

function num(v: Record<string, string | boolean | undefined>, name: string, min: number): number {
  const text = String(v[name]);
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < min) throw new Error(`--${name} must be a number >= ${min} (got "${text}")`);
  return value;
}

function summary(report: StormReport, dir: string | null): string {
  const t = report.totals;
  const lines = [
    `agentwire storm: ${report.passed ? 'PASS' : 'FAIL'} — ${t.connectionsReady}/${t.connectionsPlanned} connections ready, ` +
      `${report.settings.users} users, ${t.runsDone}/${t.runsAcked} runs done, ${t.eventsReceived} events, ${t.violations} violations`,
  ];
  for (const f of report.fatal) lines.push(`  probe problem: ${f}`);
  for (const g of report.guarantees) {
    const first = g.examples[0];
    lines.push(
      `  ${g.status} ${g.id}${g.violations ? ` (${g.violations})` : ''}` +
        (first ? ` — e.g. ${first.user}${first.connection ? `/${first.connection}` : ''}: ${first.detail}` : ''),
    );
  }
  const r = report.timeToReady;
  const l = report.eventLatency;
  lines.push(`  time to ready: p50 ${r.p50 ?? '–'} ms, p90 ${r.p90 ?? '–'} ms, p99 ${r.p99 ?? '–'} ms, max ${r.max ?? '–'} ms`);
  lines.push(`  event latency: p50 ${l.p50 ?? '–'} ms, p99 ${l.p99 ?? '–'} ms, max ${l.max ?? '–'} ms`);
  lines.push(
    `  closes: ${
      Object.entries(report.closesByCode)
        .map(([code, n]) => `${code}×${n}`)
        .join(', ') || 'none'
    }`,
  );
  if (dir) lines.push(`  report: ${dir}/report.md`);
  return `${lines.join('\n')}\n`;
}
