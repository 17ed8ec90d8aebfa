import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { GUARANTEE_IDS, GUARANTEES, type GuaranteeId, type Violation } from './guarantees.js';
import { LogHistogram, summarize, type Summary } from './stats.js';
import { barChartSvg, histogramSvg, lineChartSvg } from './svg.js';
import type { StormOptions, WorkerPlan, WorkerResult } from './types.js';

/** One guarantee's verdict in a report: held or not, with the violations found. */
export interface GuaranteeResult {
  id: GuaranteeId;
  description: string;
  status: 'PASS' | 'FAIL';
  violations: number;
  examples: Violation[];
}

/** A storm's outcome: configuration, connection and message statistics, and each guarantee's verdict. */
export interface StormReport {
  tool: 'agentwire storm';
  reportVersion: 1;
  passed: boolean;
  settings: {
    url: string;
    connections: number;
    users: number;
    rate: number;
    messages: number;
    auth: 'token-secret' | 'bypass-key';
    durationSec: number;
    keepSending: boolean;
    workers: number;
    sourceAddresses: string[];
    threads: number;
    readyTimeoutMs: number;
    settleTimeoutMs: number;
  };
  startedAt: string;
  finishedAt: string;
  elapsedMs: number;
  totals: {
    connectionsPlanned: number;
    connectionsOpened: number;
    connectionsReady: number;
    connectFailures: number;
    connectionsClosed: number;
    messagesSent: number;
    runsAcked: number;
    runsDone: number;
    eventsReceived: number;
    errorFrames: number;
    violations: number;
  };
  guarantees: GuaranteeResult[];
  /** Connect start (socket created) -> connection_ready, ms: handshake, auth and setup. */
  timeToReady: Summary;
  /** Connect start -> open (WebSocket handshake complete), ms. */
  connectTime: Summary;
  /** Receive time minus the event's ts, ms. */
  eventLatency: Summary;
  latencyOverTime: { second: number; count: number; p50: number | null; p99: number | null }[];
  closesByCode: Record<string, number>;
  /** Upgraded connections by the local (source) address their socket used. */
  connectionsBySourceAddress: Record<string, number>;
  errorFramesByCode: Record<string, number>;
  workers: { index: number; pid: number; connections: number; users: number; fatal: string | null }[];
  /** Problems that kept the probe itself from running completely (exit status 3). */
  fatal: string[];
}

export const REPORT_FILES = {
  markdown: 'report.md',
  json: 'report.json',
  readyHistogram: 'time-to-ready.svg',
  latencyOverTime: 'event-latency.svg',
  closesByCode: 'closes-by-code.svg',
} as const;

/** Merges the workers' results into one report. `readyTimes` are returned for the histogram. */
export function buildReport(
  options: StormOptions,
  plans: WorkerPlan[],
  results: WorkerResult[],
  startedAt: number,
  finishedAt: number,
): { report: StormReport; readyTimes: number[] } {
  const counts = Object.fromEntries(GUARANTEE_IDS.map((id) => [id, 0])) as Record<GuaranteeId, number>;
  const examples = Object.fromEntries(GUARANTEE_IDS.map((id) => [id, [] as Violation[]])) as Record<GuaranteeId, Violation[]>;
  const readyTimes: number[] = [];
  const connectTimes: number[] = [];
  const latency = new LogHistogram();
  const bySecond = new Map<number, LogHistogram>();
  const closesByCode: Record<string, number> = {};
  const errorFramesByCode: Record<string, number> = {};
  const bySource: Record<string, number> = {};
  const totals: StormReport['totals'] = {
    connectionsPlanned: options.connections,
    connectionsOpened: 0,
    connectionsReady: 0,
    connectFailures: 0,
    connectionsClosed: 0,
    messagesSent: 0,
    runsAcked: 0,
    runsDone: 0,
    eventsReceived: 0,
    errorFrames: 0,
    violations: 0,
  };
  const fatal: string[] = [];
  for (const result of results) {
    for (const id of GUARANTEE_IDS) {
      counts[id] += result.counts[id] ?? 0;
      for (const example of result.examples[id] ?? []) if (examples[id].length < 5) examples[id].push(example);
    }
    for (const t of result.readyTimes) readyTimes.push(t);
    for (const t of result.connectTimes) connectTimes.push(t);
    latency.merge(result.latency);
    for (const [second, data] of Object.entries(result.latencyBySecond)) {
      const key = Number(second);
      let histogram = bySecond.get(key);
      if (!histogram) {
        histogram = new LogHistogram();
        bySecond.set(key, histogram);
      }
      histogram.merge(data);
    }
    for (const [code, n] of Object.entries(result.closesByCode)) closesByCode[code] = (closesByCode[code] ?? 0) + n;
    for (const [address, n] of Object.entries(result.bySourceAddress)) bySource[address] = (bySource[address] ?? 0) + n;
    for (const [code, n] of Object.entries(result.errorFrames)) {
      errorFramesByCode[code] = (errorFramesByCode[code] ?? 0) + n;
      totals.errorFrames += n;
    }
    totals.connectionsOpened += result.progress.connected;
    totals.connectionsReady += result.progress.ready;
    totals.connectFailures += result.progress.failed;
    totals.connectionsClosed += result.progress.closed;
    totals.messagesSent += result.progress.messagesSent;
    totals.runsAcked += result.progress.runsAcked;
    totals.runsDone += result.progress.runsDone;
    totals.eventsReceived += result.eventsReceived;
    if (result.fatal) fatal.push(`worker ${result.index}: ${result.fatal}`);
  }
  const guarantees: GuaranteeResult[] = GUARANTEE_IDS.map((id) => ({
    id,
    description: GUARANTEES[id],
    status: counts[id] === 0 ? 'PASS' : 'FAIL',
    violations: counts[id],
    examples: examples[id],
  }));
  totals.violations = guarantees.reduce((sum, g) => sum + g.violations, 0);
  const report: StormReport = {
    tool: 'agentwire storm',
    reportVersion: 1,
    passed: totals.violations === 0 && fatal.length === 0,
    settings: {
      url: options.url,
      connections: options.connections,
      users: options.users,
      rate: options.rate,
      messages: options.messages,
      auth: options.auth.kind === 'secret' ? 'token-secret' : 'bypass-key',
      durationSec: options.durationSec,
      keepSending: options.keepSending,
      workers: plans.length,
      sourceAddresses: options.sourceAddresses,
      threads: options.threads,
      readyTimeoutMs: options.readyTimeoutMs,
      settleTimeoutMs: options.settleTimeoutMs,
    },
    startedAt: new Date(startedAt).toISOString(),
    finishedAt: new Date(finishedAt).toISOString(),
    elapsedMs: Math.round(finishedAt - startedAt),
    totals,
    guarantees,
    timeToReady: summarize(readyTimes),
    connectTime: summarize(connectTimes),
    eventLatency: latency.summary(),
    latencyOverTime: [...bySecond.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([second, h]) => ({ second, count: h.count, p50: h.percentile(50), p99: h.percentile(99) })),
    closesByCode: sortCodes(closesByCode),
    connectionsBySourceAddress: sortCodes(bySource),
    errorFramesByCode,
    workers: plans.map((plan) => {
      const result = results.find((r) => r.index === plan.index);
      return {
        index: plan.index,
        pid: result?.pid ?? 0,
        connections: plan.connections.length,
        users: plan.users.length,
        fatal: result ? result.fatal : 'no result',
      };
    }),
    fatal,
  };
  return { report, readyTimes };
}

function sortCodes(codes: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(codes).sort((a, b) => a[0].localeCompare(b[0], 'en', { numeric: true })));
}

const ms = (value: number | null) => (value === null ? '–' : `${value} ms`);

/** The report as Markdown. */
export function reportMarkdown(report: StormReport): string {
  const s = report.settings;
  const t = report.totals;
  const lines: string[] = [];
  lines.push(`# agentwire storm report: ${report.passed ? 'PASS' : 'FAIL'}`, '');
  lines.push(`${report.startedAt} – ${report.finishedAt} (${(report.elapsedMs / 1000).toFixed(1)} s) against \`${s.url}\``, '');
  if (report.fatal.length > 0) {
    lines.push('## The probe did not run completely', '');
    for (const f of report.fatal) lines.push(`- ${f}`);
    lines.push('');
  }
  lines.push('## Settings', '', '| setting | value |', '| --- | --- |');
  lines.push(`| connections | ${s.connections} |`, `| users | ${s.users} |`, `| rate | ${s.rate} connections/s |`);
  lines.push(`| messages per user | ${s.messages} |`, `| threads per user | ${s.threads} |`, `| auth | ${s.auth} |`);
  lines.push(`| duration (hold) | ${s.durationSec} s${s.keepSending ? ', sending' : ''} |`, `| workers | ${s.workers} |`);
  const used = Object.entries(report.connectionsBySourceAddress)
    .map(([a, n]) => `${a} ×${n}`)
    .join(', ');
  lines.push(`| source addresses | ${s.sourceAddresses.length ? s.sourceAddresses.join(', ') : '(system)'}${used ? ` (used: ${used})` : ''} |`);
  lines.push(`| ready timeout | ${s.readyTimeoutMs} ms |`, `| settle timeout | ${s.settleTimeoutMs} ms |`, '');
  lines.push('## Totals', '', '| | count |', '| --- | --- |');
  lines.push(`| connections planned | ${t.connectionsPlanned} |`, `| opened | ${t.connectionsOpened} |`, `| ready | ${t.connectionsReady} |`);
  lines.push(`| failed to open | ${t.connectFailures} |`, `| closed | ${t.connectionsClosed} |`, `| messages sent | ${t.messagesSent} |`);
  lines.push(`| runs acked | ${t.runsAcked} |`, `| runs done | ${t.runsDone} |`, `| events received | ${t.eventsReceived} |`);
  lines.push(`| error frames | ${t.errorFrames} |`, `| violations | ${t.violations} |`, '');
  lines.push('## Guarantees', '', '| guarantee | status | violations | meaning |', '| --- | --- | --- | --- |');
  for (const g of report.guarantees) lines.push(`| \`${g.id}\` | ${g.status} | ${g.violations} | ${g.description} |`);
  lines.push('');
  const failed = report.guarantees.filter((g) => g.status === 'FAIL');
  if (failed.length > 0) {
    lines.push('### First violations', '');
    for (const g of failed) {
      lines.push(`**${g.id}** (${g.violations}):`, '');
      for (const v of g.examples) {
        lines.push(`- ${v.atMs === null ? '' : `+${v.atMs} ms `}${v.user}${v.connection ? `/${v.connection}` : ''}: ${v.detail.replace(/\|/g, '\\|')}`);
      }
      lines.push('');
    }
  }
  lines.push('## Timings', '', '| measure | count | p50 | p90 | p99 | max |', '| --- | --- | --- | --- | --- | --- |');
  for (const [name, sum] of [
    ['time to ready (connect → connection_ready)', report.timeToReady],
    ['handshake (connect → open)', report.connectTime],
    ['event latency (receive − ts)', report.eventLatency],
  ] as const) {
    lines.push(`| ${name} | ${sum.count} | ${ms(sum.p50)} | ${ms(sum.p90)} | ${ms(sum.p99)} | ${ms(sum.max)} |`);
  }
  lines.push('', `![time to ready](${REPORT_FILES.readyHistogram})`, '', `![event latency over time](${REPORT_FILES.latencyOverTime})`, '');
  lines.push('## Closes by code', '', '| code | count |', '| --- | --- |');
  for (const [code, n] of Object.entries(report.closesByCode)) lines.push(`| ${code}${code === '1011' ? ' (server fault)' : ''} | ${n} |`);
  lines.push('', `![closes by code](${REPORT_FILES.closesByCode})`, '');
  if (Object.keys(report.errorFramesByCode).length > 0) {
    lines.push('## Error frames', '', '| code | count |', '| --- | --- |');
    for (const [code, n] of Object.entries(report.errorFramesByCode)) lines.push(`| ${code} | ${n} |`);
    lines.push('');
  }
  return lines.join('\n');
}

/** Writes report.md, report.json and the three SVG charts into `dir` (created if needed). */
export async function writeReport(dir: string, report: StormReport, readyTimes: number[]): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const files: [string, string][] = [
    [REPORT_FILES.markdown, reportMarkdown(report)],
    [REPORT_FILES.json, `${JSON.stringify(report, null, 2)}\n`],
    [REPORT_FILES.readyHistogram, histogramSvg('Time to ready (connect → connection_ready)', readyTimes, 'ms')],
    [
      REPORT_FILES.latencyOverTime,
      lineChartSvg(
        'Event latency over time (receive − ts)',
        [
          { name: 'p50', color: '#4477aa', points: report.latencyOverTime.filter((p) => p.p50 !== null).map((p) => [p.second, p.p50!] as const) },
          { name: 'p99', color: '#cc3311', points: report.latencyOverTime.filter((p) => p.p99 !== null).map((p) => [p.second, p.p99!] as const) },
        ],
        'seconds since start',
        'ms',
      ),
    ],
    [REPORT_FILES.closesByCode, barChartSvg('Closes by code', Object.entries(report.closesByCode), 'close code', 'connections', (code) => code !== '1000')],
  ];
  const written: string[] = [];
  for (const [name, content] of files) {
    const file = path.join(dir, name);
    await writeFile(file, content);
    written.push(file);
  }
  return written;
}
