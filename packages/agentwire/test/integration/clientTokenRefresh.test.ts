import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { createClient, type AgentwireClient, type ClientEventMap, type ClientOptions } from '@agentwire/client/node';
import { MIN_REFRESH_DELAY_MS, refreshDelay, refreshRetryDelay, tokenExpiresAt } from '../../../client/src/tokenRefresh.js';
import { forge } from '../helpers/jwt.js';
import { ManualClock } from '../helpers/manualClock.js';
import { Waiters, within } from '../helpers/waitFor.js';

/**
 * The client SDK's token refresh (PROTOCOL.md sections 2, 5, 6) against a fake gateway: a plain
 * `ws` server in the test that speaks `connection_ready`, `refresh_token` / `token_refreshed`,
 * `error` and close 4401 as the test tells it. The client's timers run on a ManualClock whose
 * time is also the server_time the fake sends, so 80 % of a token's lifetime is a clock advance.
 */

const T0 = 1_700_000_000_000;
const SECRET = 'client-refresh-test-secret-0123456789-abcdef';

/** A token for `sub` expiring `lifetimeSec` after `issuedAt` (ms). */
function token(sub: string, issuedAt: number, lifetimeSec: number): string {
  const iat = Math.floor(issuedAt / 1000);
  return forge({ alg: 'HS256', typ: 'JWT' }, { sub, iat, exp: iat + lifetimeSec }, SECRET);
}

interface Peer {
  readonly ws: WebSocket;
  readonly token: string | undefined;
  readonly url: string;
  readonly frames: Array<Record<string, any>>;
  closed: boolean;
}

class FakeGateway {
  readonly peers: Peer[] = [];
  readonly waiters = new Waiters(() => `peers=${this.peers.length}; frames=${JSON.stringify(this.peers.map((p) => p.frames.map((f) => f.type)))}`);
  readonly url: string;

  /** Only `FakeGateway.start()` constructs one (it waits until the server listens). */
  constructor(
    readonly wss: WebSocketServer,
    readonly clock: ManualClock,
  ) {
    this.url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/ws`;
    wss.on('connection', (ws, req) => {
      const offered = String(req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((entry) => entry.trim());
      const jwt = offered.find((entry) => entry.startsWith('jwt.'))?.slice(4);
      const peer: Peer = { ws, token: jwt, url: req.url ?? '', frames: [], closed: false };
      this.peers.push(peer);
      ws.on('message', (data) => {
        peer.frames.push(JSON.parse((data as Buffer).toString()) as Record<string, any>);
        this.waiters.notify();
      });
      ws.on('close', () => {
        peer.closed = true;
        this.waiters.notify();
      });
      ws.send(
        JSON.stringify({
          type: 'connection_ready',
          protocol: 'agentwire.v1',
          connection_id: `c${this.peers.length}`,
          user_id: 'alice',
          epoch: 'e1',
          last_seq: 0,
          resumed: req.url?.includes('last_seq') ?? false,
          replayed: 0,
          heartbeat_ms: 20_000,
          server_time: new Date(this.clock.now()).toISOString(),
        }),
      );
      this.waiters.notify();
    });
  }

  static async start(clock: ManualClock): Promise<FakeGateway> {
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      handleProtocols: (offered) => (offered.has('agentwire.v1') ? 'agentwire.v1' : false),
    });
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
    return new FakeGateway(wss, clock);
  }

  /** Resolves with the n-th (1-based) connection's next frame of `type` beyond the first `skip`. */
  frame(connection: number, type: string, skip = 0): Promise<Record<string, any>> {
    return this.waiters.until(
      () => this.peers[connection - 1]?.frames.filter((f) => f.type === type)[skip],
      5000,
      `${type} #${skip + 1} on connection ${connection}`,
    );
  }

  connection(n: number): Promise<Peer> {
    return this.waiters.until(() => this.peers[n - 1], 5000, `connection ${n}`);
  }

  framesOf(connection: number, type: string): Array<Record<string, any>> {
    return this.peers[connection - 1]?.frames.filter((f) => f.type === type) ?? [];
  }

  async close(): Promise<void> {
    for (const peer of this.peers) peer.ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

async function setup(
  provider: ClientOptions['token'],
  clock = new ManualClock(T0),
): Promise<{ clock: ManualClock; server: FakeGateway; client: AgentwireClient }> {
  const server = await FakeGateway.start(clock);
  cleanups.push(() => server.close());
  const client = createClient({ url: server.url, token: provider, clock, random: () => 0.5, minDelayMs: 10, maxDelayMs: 40, pingIntervalMs: 0 });
  cleanups.push(() => client.close());
  await within(client.connect(), 'connection_ready');
  return { clock, server, client };
}

function next<K extends keyof ClientEventMap>(client: AgentwireClient, event: K): Promise<ClientEventMap[K]> {
  return within(
    new Promise((resolve) => {
      const off = client.on(event, (payload) => {
        off();
        resolve(payload);
      });
    }),
    `client event ${event}`,
  );
}

/** A provider handing out a new 100 s token on every call, issued at the clock's time. */
function freshTokens(clock: { now(): number }, lifetimeSec = 100) {
  const issued: string[] = [];
  const provider = () => {
    const t = token('alice', clock.now(), lifetimeSec);
    issued.push(t);
    return t;
  };
  return { issued, provider };
}

describe('token refresh: pure timing', () => {
  it('reads exp without verifying, and nothing from tokens without a usable one', () => {
    expect(tokenExpiresAt(token('a', T0, 100))).toBe(T0 + 100_000);
    expect(tokenExpiresAt(forge({ alg: 'HS256' }, { sub: 'a' }, SECRET))).toBeNull();
    expect(tokenExpiresAt(forge({ alg: 'HS256' }, { sub: 'a', exp: '1' }, SECRET))).toBeNull();
    for (const junk of ['', 'a', 'a.!!.c', 'a.b.c', `a.${'A'.repeat(20_000)}.c`]) expect(tokenExpiresAt(junk)).toBeNull();
  });

  it('refreshes at 80 % of the lifetime, clamped to at least 1 s and never when already expired', () => {
    expect(refreshDelay(T0, T0 + 100_000, T0)).toBe(80_000);
    expect(refreshDelay(T0, T0 + 100_000, T0 + 50_000)).toBe(30_000);
    expect(refreshDelay(T0, T0 + 500, T0)).toBe(MIN_REFRESH_DELAY_MS);
    expect(refreshDelay(T0, T0 + 100_000, T0 + 90_000)).toBe(MIN_REFRESH_DELAY_MS);
    expect(refreshDelay(T0, T0 + 1000, T0 + 1000)).toBeNull();
    expect(refreshDelay(T0, T0 + 1e15, T0)).toBe(2_147_483_647);
    expect(refreshRetryDelay(T0 + 20_000, T0)).toBe(10_000);
    expect(refreshRetryDelay(T0 + 1500, T0)).toBeNull();
  });
});

describe('token refresh over a socket', () => {
  it('sends refresh_token at 80 % of the lifetime on the open connection, and again for the refreshed token', async () => {
    const clock = new ManualClock(T0);
    const tokens = freshTokens(clock);
    const { server, client } = await setup(tokens.provider, clock);
    expect(tokens.issued).toHaveLength(1);

    await clock.advance(79_000);
    expect(server.framesOf(1, 'refresh_token')).toHaveLength(0);
    await clock.advance(1000);
    const refresh = await server.frame(1, 'refresh_token');
    expect(refresh).toEqual({ type: 'refresh_token', id: expect.any(String), token: tokens.issued[1] });
    const refreshed = next(client, 'token_refreshed');
    server.peers[0]!.ws.send(JSON.stringify({ type: 'token_refreshed', id: refresh.id, expires_at: new Date(T0 + 180_000).toISOString() }));
    expect(await refreshed).toMatchObject({ id: refresh.id });

    // The second token was issued at 80 s for 100 s: its refresh falls at 160 s.
    await clock.advance(79_000);
    expect(server.framesOf(1, 'refresh_token')).toHaveLength(1);
    await clock.advance(1000);
    expect((await server.frame(1, 'refresh_token', 1)).token).toBe(tokens.issued[2]);
    expect(server.peers).toHaveLength(1);
    expect(client.state).toBe('ready');
  });

  it('a refresh refused with token_expired makes the client ask its provider again and reconnect, resuming', async () => {
    const clock = new ManualClock(T0);
    const tokens = freshTokens(clock);
    const { server, client } = await setup(tokens.provider, clock);
    await clock.advance(80_000);
    const refresh = await server.frame(1, 'refresh_token');
    const disconnected = next(client, 'disconnect');
    server.peers[0]!.ws.send(JSON.stringify({ type: 'error', code: 'token_expired', message: 'token expired', ref: refresh.id }));
    expect(await disconnected).toMatchObject({ code: 4401, reason: 'token_expired', wasReady: true, delayMs: 0 });
    const second = await server.connection(2);
    expect(second.token).toBe(tokens.issued[2]);
    expect(second.url).toContain('last_seq=0');
    expect(second.url).toContain('epoch=e1');
    await within(client.connect(), 'ready again');
    expect(client.state).toBe('ready');
  });

  it('a refresh answered with a transient error is tried again later on the same connection', async () => {
    const clock = new ManualClock(T0);
    const tokens = freshTokens(clock);
    const { server, client } = await setup(tokens.provider, clock);
    await clock.advance(80_000);
    const refresh = await server.frame(1, 'refresh_token');
    const refused = next(client, 'server_error');
    server.peers[0]!.ws.send(JSON.stringify({ type: 'error', code: 'rate_limited', message: 'slow down', ref: refresh.id }));
    expect(await refused).toMatchObject({ code: 'rate_limited', ref: refresh.id });
    // 20 s were left: the next try comes after half of them.
    await clock.advance(9_000);
    expect(server.framesOf(1, 'refresh_token')).toHaveLength(1);
    await clock.advance(1_000);
    await server.frame(1, 'refresh_token', 1);
    expect(server.peers).toHaveLength(1);
  });

  it('a close 4401 token_expired gets a fresh token from the provider and a resumed reconnect', async () => {
    const clock = new ManualClock(T0);
    const tokens = freshTokens(clock);
    const { server, client } = await setup(tokens.provider, clock);
    const disconnected = next(client, 'disconnect');
    server.peers[0]!.ws.close(4401, 'token_expired');
    expect(await disconnected).toMatchObject({ code: 4401, reason: 'token_expired', delayMs: 0 });
    const second = await server.connection(2);
    expect(second.token).toBe(tokens.issued[1]);
    expect(second.url).toContain('epoch=e1');
  });

  it('never refreshes a fixed token string, nor a token without exp', async () => {
    for (const provider of [token('alice', T0, 100), () => forge({ alg: 'HS256' }, { sub: 'alice' }, SECRET)]) {
      const { server, clock } = await setup(provider);
      await clock.advance(200_000);
      expect(server.framesOf(1, 'refresh_token')).toHaveLength(0);
      expect(clock.pendingTimers).toBe(0);
    }
  });

  it('a provider that has nothing fresher is asked again later, not flooded', async () => {
    const fixed = token('alice', T0, 100);
    let calls = 0;
    const { server, clock } = await setup(() => {
      calls += 1;
      return fixed;
    });
    await clock.advance(100_000);
    expect(server.framesOf(1, 'refresh_token')).toHaveLength(0);
    // Dial, then at 80 s, 90 s, 95 s, 97.5 s, 98.75 s: the tries thin out toward expiry.
    expect(calls).toBeLessThanOrEqual(6);
  });
});
