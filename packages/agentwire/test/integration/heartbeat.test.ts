import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../helpers/manualClock.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { within } from '../helpers/waitFor.js';
import type { Frame } from '../helpers/wsClient.js';

/**
 * Heartbeats (PROTOCOL.md section 8) on a ManualClock. With heartbeatMs 25000,
 * heartbeatTimeoutMs 10000 and the default authTimeoutMs 5000, the gateway's single sweeper runs
 * every max(10, min(1000, min(25000, 10000, 5000) / 5)) = 1000 ms of clock time. A connection is
 * pinged at the first sweep at least heartbeatMs after its last sign of life, and terminated at
 * the first sweep at least heartbeatTimeoutMs after that ping; so a silent peer is gone at most
 * heartbeatMs + heartbeatTimeoutMs + one sweep interval (36000 ms) after its last sign of life.
 */

const HEARTBEAT_MS = 25_000;
const HEARTBEAT_TIMEOUT_MS = 10_000;
const SWEEP_MS = 1000;

let env: TestGateway | undefined;
let rawSockets: WebSocket[] = [];

afterEach(async () => {
  for (const ws of rawSockets) ws.terminate();
  rawSockets = [];
  await env?.stop();
  env = undefined;
});

async function start(clock: ManualClock): Promise<TestGateway> {
  env = await startGateway({ clock, heartbeatMs: HEARTBEAT_MS, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, drainTimeoutMs: 500 });
  return env;
}

/**
 * A WebSocket-level ping from the client and its pong. The server answers it inside `ws`, and
 * the gateway does not count it as a sign of life (it only listens for pongs and messages), so
 * it is a pure ordering barrier: once the pong is back, everything the server wrote before it
 * has reached the client, and everything the client wrote before the ping has been read.
 */
function roundTrip(ws: WebSocket): Promise<void> {
  const pong = new Promise<void>((resolve) => ws.once('pong', () => resolve()));
  ws.ping();
  return within(pong, 'barrier pong');
}

/**
 * Two barriers: the first makes sure a server ping sent during the last `advance` has reached
 * the client (which, when auto-ponging, wrote its pong at once); the second makes sure the
 * server has read that pong.
 */
async function settleHeartbeat(ws: WebSocket): Promise<void> {
  await roundTrip(ws);
  await roundTrip(ws);
}

interface Peer {
  ws: WebSocket;
  frames: Frame[];
  pingsAt: number[];
  closed: Promise<number>;
  ready: Promise<Frame>;
}

/** A raw client, so that `autoPong` can be turned off. Authenticates via the jwt.* subprotocol. */
async function peer(gateway: TestGateway, clock: ManualClock, userId: string, autoPong: boolean): Promise<Peer> {
  const token = await gateway.token(userId);
  const ws = new WebSocket(gateway.url, ['agentwire.v1', `jwt.${token}`], { autoPong });
  rawSockets.push(ws);
  const frames: Frame[] = [];
  const pingsAt: number[] = [];
  ws.on('error', () => {});
  ws.on('ping', () => pingsAt.push(clock.now()));
  const ready = new Promise<Frame>((resolve) => {
    ws.on('message', (data) => {
      const frame = JSON.parse((data as Buffer).toString()) as Frame;
      frames.push(frame);
      if (frame.type === 'connection_ready') resolve(frame);
    });
  });
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await within(ready, `connection_ready of ${userId}`);
  return { ws, frames, pingsAt, closed, ready };
}

async function connectionsIn(gateway: TestGateway, state: string): Promise<number> {
  const { values } = await gateway.gateway.metrics.connections.get();
  return values.find((v) => v.labels.state === state)?.value ?? 0;
}

describe('heartbeat (ManualClock)', () => {
  it('an idle connection whose peer answers pings survives 5 simulated minutes', async () => {
    const clock = new ManualClock();
    const gateway = await start(clock);
    const alice = await peer(gateway, clock, 'alice', true);
    expect(alice.frames[0]).toMatchObject({ type: 'connection_ready', heartbeat_ms: HEARTBEAT_MS });
    for (let t = 0; t < 5 * 60_000; t += SWEEP_MS) {
      await clock.advance(SWEEP_MS);
      await settleHeartbeat(alice.ws);
    }
    expect(clock.now()).toBe(300_000);
    // A ping every heartbeatMs of silence, each answered at once: t = 25 s, 50 s, ..., 300 s.
    expect(alice.pingsAt).toEqual(Array.from({ length: 12 }, (_, i) => (i + 1) * HEARTBEAT_MS));
    expect(alice.ws.readyState).toBe(WebSocket.OPEN);
    expect(await connectionsIn(gateway, 'PROCESSING_READY')).toBe(1);
    expect(await connectionsIn(gateway, 'CLOSING')).toBe(0);
    // Still dispatching frames.
    alice.ws.send(JSON.stringify({ type: 'ping', id: 'still-here' }));
    await within(
      new Promise<void>((resolve) => alice.ws.on('message', (data) => JSON.parse((data as Buffer).toString()).id === 'still-here' && resolve())),
      'pong still-here',
    );
  });

  it('a peer that does not answer pings is terminated within heartbeat + timeout + one sweep', async () => {
    const clock = new ManualClock();
    const gateway = await start(clock);
    // Connect off the sweep grid: the last sign of life is the upgrade at t = 500.
    await clock.advance(500);
    const lastSignOfLife = clock.now();
    const silent = await peer(gateway, clock, 'alice', false);
    const responsive = await peer(gateway, clock, 'bob', true);

    // First sweep >= 500 + 25000 is t = 26000: no ping before it.
    await clock.advance(26_000 - 1 - clock.now());
    await settleHeartbeat(silent.ws);
    expect(silent.pingsAt).toEqual([]);
    await clock.advance(1);
    await settleHeartbeat(silent.ws);
    expect(silent.pingsAt).toEqual([26_000]);

    // First sweep >= 26000 + 10000 is t = 36000: still open one millisecond before.
    await clock.advance(36_000 - 1 - clock.now());
    await settleHeartbeat(silent.ws);
    await settleHeartbeat(responsive.ws);
    expect(silent.ws.readyState).toBe(WebSocket.OPEN);
    expect(await connectionsIn(gateway, 'CLOSING')).toBe(0);
    expect(await connectionsIn(gateway, 'PROCESSING_READY')).toBe(2);

    await clock.advance(1);
    const terminatedAt = clock.now();
    expect(await within(silent.closed, 'close of the silent peer')).toBe(1006);
    expect(terminatedAt).toBe(36_000);
    expect(terminatedAt - lastSignOfLife).toBeLessThanOrEqual(HEARTBEAT_MS + HEARTBEAT_TIMEOUT_MS + SWEEP_MS);
    expect(terminatedAt - lastSignOfLife).toBeGreaterThanOrEqual(HEARTBEAT_MS + HEARTBEAT_TIMEOUT_MS);
    // The silent peer never got a close frame; the responsive one is untouched.
    expect(silent.frames.map((f) => f.type)).toEqual(['connection_ready']);
    await settleHeartbeat(responsive.ws);
    expect(responsive.ws.readyState).toBe(WebSocket.OPEN);
    expect(responsive.pingsAt).toEqual([26_000]);
  });

  it('uses one sweeper timer however many connections there are', async () => {
    const clock = new ManualClock();
    const gateway = await start(clock);
    const base = clock.pendingTimers;
    expect(base).toBeGreaterThanOrEqual(1);

    const ready = [];
    for (let i = 0; i < 10; i++) ready.push(await gateway.ready(`user-${i % 3}`));
    expect(clock.pendingTimers).toBe(base);
    // Connections waiting for an auth frame have a deadline but no timer either.
    const waiting = [];
    for (let i = 0; i < 3; i++) waiting.push(await gateway.connect(`w-${i}`, { via: 'none' }));
    await Promise.all(waiting.map((c) => c.opened));
    expect(await connectionsIn(gateway, 'ACCEPTED')).toBe(3);
    expect(clock.pendingTimers).toBe(base);

    // Heartbeats to all 10 and auth deadlines of all 3 run on that same timer.
    await clock.advance(5000);
    for (const client of waiting) expect((await client.waitClosed()).code).toBe(4408);
    await clock.advance(HEARTBEAT_MS - 5000);
    for (const client of ready) await settleHeartbeat(client.ws);
    expect(clock.pendingTimers).toBe(base);
    expect(await connectionsIn(gateway, 'PROCESSING_READY')).toBe(10);

    // Closing connections leaves the count alone too, and shutdown clears every timer.
    for (const client of ready.slice(0, 5)) client.close();
    await Promise.all(ready.slice(0, 5).map((c) => c.waitClosed()));
    expect(clock.pendingTimers).toBe(base);
    await gateway.stop();
    env = undefined;
    expect(clock.pendingTimers).toBe(0);
  });
});
