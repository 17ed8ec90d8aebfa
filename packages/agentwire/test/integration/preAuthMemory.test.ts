import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, expect, it } from 'vitest';
import { signToken } from '../../src/auth/index.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { TEST_SECRET } from '../helpers/gateway.js';
import { TestClient } from '../helpers/wsClient.js';

/**
 * Issue 8 item 2 (PROTOCOL.md section 4): frames held before connection_ready are bounded in
 * bytes. A gateway in a child process (so its RSS is its own) gets 20 unauthenticated
 * connections, each sending 64 pings whose id is `[{},{},…]`, just under 64 KiB (a frame that
 * grows ~21x when parsed and kept), then an auth frame. Its peak RSS may grow by less than 256 MiB;
 * a monitoring client's app-level ping round trips are reported. Linux only (reads /proc).
 */

const CONNECTIONS = 20;
const FRAMES_PER_CONNECTION = 64;

const children = new ChildTracker();
afterEach(() => children.killAll());

function statusKib(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm'));
  if (!line) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(line[1]);
}

/** A ping whose id is `[{},{},…]`, the frame at most `bytes` bytes. */
function pingOfEmptyObjects(bytes: number): string {
  const envelope = '{"type":"ping","id":}'.length;
  const count = Math.floor((bytes - envelope - 2 + 1) / 3);
  return `{"type":"ping","id":[${Array.from({ length: count }, () => '{}').join(',')}]}`;
}

const token = async (userId: string) => (await signToken(TEST_SECRET, { sub: userId, ttlSec: 600 })).token;

it('20 connections x 64 held [{},…] frames of ~64 KiB grow the RSS by < 256 MiB while a monitor keeps its connection', async () => {
  const child = children.spawn(['serve'], { PORT: '0', AGENTWIRE_JWT_SECRET: TEST_SECRET, AGENTWIRE_LOG_LEVEL: 'error' });
  const [, url] = await child.waitForStdout(/^agentwire listening on (ws:\/\/127\.0\.0\.1:\d+\/ws)$/m, 20_000);
  const pid = child.pid!;
  const monitor = new TestClient(url!, { token: await token('monitor') });
  await monitor.ready(10_000);

  let pings = 0;
  const roundTrips: number[] = [];
  const ping = async () => {
    const id = `m${++pings}`;
    const sentAt = performance.now();
    monitor.send({ type: 'ping', id });
    await monitor.waitFor((f) => f.type === 'pong' && f.id === id, 10_000, `pong ${id}`);
    return performance.now() - sentAt;
  };
  // Paced below the monitor's own rate limit (20 frames/s): a load generator's pause, not a wait.
  const pause = () => new Promise((resolve) => setTimeout(resolve, 60));
  for (let i = 0; i < 20; i++) await ping(); // warm-up (within the burst of 40)
  await pause();
  // Resets the peak (VmHWM) to the current RSS, so the peak below is this attack's.
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const baselineKib = statusKib(pid, 'VmRSS');

  let flooding = true;
  const monitoring = (async () => {
    while (flooding || roundTrips.length < 100) {
      roundTrips.push(await ping());
      await pause();
    }
  })();

  const frame = pingOfEmptyObjects(64 * 1024 - 16);
  const flooders = Array.from({ length: CONNECTIONS }, () => new TestClient(url!, { via: 'none' }));
  await Promise.all(flooders.map((client) => client.opened));
  const sent = flooders.flatMap((client) =>
    Array.from({ length: FRAMES_PER_CONNECTION }, () => new Promise<void>((resolve) => client.ws.send(frame, () => resolve()))),
  );
  await Promise.all(sent);
  await ping();
  await Promise.all(flooders.map(async (client, i) => client.send({ type: 'auth', token: await token(`flood-${i}`) })));
  // Each flooder is either closed by a bound or has every held frame answered.
  await Promise.all(
    flooders.map((client) =>
      Promise.race([client.closed, client.waitForCount((f) => f.type === 'error' || f.type === 'pong', FRAMES_PER_CONNECTION, 60_000, 'held frames answered')]),
    ),
  );
  flooding = false;
  await monitoring;

  const growthMib = (statusKib(pid, 'VmHWM') - baselineKib) / 1024;
  const sorted = [...roundTrips].sort((a, b) => a - b);
  const p99 = sorted[Math.ceil(sorted.length * 0.99) - 1]!;
  const closes = flooders.map((client) => client.closeCode);
  console.log(
    `pre-auth flood: RSS baseline ${(baselineKib / 1024).toFixed(0)} MiB, peak growth ${growthMib.toFixed(0)} MiB; ` +
      `monitor ping p50 ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms over ${sorted.length}; ` +
      `flooder closes ${JSON.stringify(closes)}`,
  );
  expect(child.running).toBe(true);
  expect(growthMib).toBeLessThan(256);
  // The monitor's p99 is reported above, not asserted: an absolute time depends on what else the
  // machine runs (main measured 487 ms, under the 500 ms target, on a busy machine).
  expect(monitor.closeCode).toBeNull();
  for (const client of [monitor, ...flooders]) client.close();
}, 120_000);
