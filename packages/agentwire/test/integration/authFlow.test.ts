import { SignJWT, type JWTPayload } from 'jose';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { LocalRunStore } from '../../src/runs/runStore.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { ManualClock } from '../helpers/manualClock.js';
import { TEST_SECRET, startGateway, type TestGateway } from '../helpers/gateway.js';
import { TestClient, type ConnectOptions, type Frame } from '../helpers/wsClient.js';

/**
 * Authentication over real sockets (PROTOCOL.md section 2): the three ways in, subprotocol
 * selection (section 1), every refusal and its close code, the auth deadline, held frames, the
 * test-token route, the production guard, auth metrics and the Origin allow-list.
 */

const OTHER_SECRET = 'another-secret-that-is-also-long-enough-0123456789';
/** At least 32 bytes: what production mode asks of an HS256 secret. */
const LONG_SECRET = 'x'.repeat(32);
const nowSec = (): number => Math.floor(Date.now() / 1000);

let envs: TestGateway[] = [];
const children = new ChildTracker();

afterEach(async () => {
  await children.killAll();
  await Promise.all(envs.map((env) => env.stop()));
  envs = [];
});

/** Each env's run store, which owns the message-id claims. */
const runStores = new WeakMap<TestGateway, LocalRunStore>();

async function start(options: Parameters<typeof startGateway>[0] = {}): Promise<TestGateway> {
  const runStore = new LocalRunStore();
  const env = await startGateway({ drainTimeoutMs: 500, runStore, ...options });
  runStores.set(env, runStore);
  envs.push(env);
  return env;
}

/** A client with a token chosen by the test (the env's `connect` always signs a valid one). */
function rawClient(env: TestGateway, options: ConnectOptions): TestClient {
  const client = new TestClient(env.url, options);
  env.clients.push(client);
  return client;
}

/** A pino logger at warn whose JSON lines the test can read. */
function captureLogger(): { logger: Logger; lines(): Array<Record<string, unknown>>; text(): string } {
  const chunks: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (chunk: string) => void chunks.push(chunk) });
  return {
    logger,
    text: () => chunks.join(''),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

async function hs256(claims: JWTPayload, secret = TEST_SECRET): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(secret));
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function algNoneToken(sub: string): string {
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub, exp: nowSec() + 600 })}.`;
}

async function metricValue(env: TestGateway, line: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${env.port}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? 0 : Number(found.slice(line.length + 1));
}

async function transitionsTo(env: TestGateway, state: string): Promise<number> {
  const { values } = await env.gateway.metrics.transitions.get();
  return values.filter((v) => v.labels.to === state).reduce((sum, v) => sum + v.value, 0);
}

async function connectionsIn(env: TestGateway, state: string): Promise<number> {
  const { values } = await env.gateway.metrics.connections.get();
  return values.find((v) => v.labels.state === state)?.value ?? 0;
}

/**
 * The message id was never claimed: the run store (which owns the claims), asked to settle an
 * enqueue of it without creating anything, finds no claim.
 */
async function neverClaimed(env: TestGateway, userId: string, messageId: string): Promise<boolean> {
  const probe = { runId: 'run_probe', userId, threadId: 't1', messageId, text: '' };
  return (await runStores.get(env)!.enqueue(probe, 'enqueue', 32, { replayOnly: true })) === 'absent';
}

/**
 * Connects with upgrade credentials that must be refused: the handshake completes ('open'
 * fires), a user_message is sent right at open, and 4401 with `reason` arrives. Then checks on
 * the server side that the early frame was never processed: its id was never claimed, no run
 * is live, nothing was appended to the user's log, no error frame was sent, and the connection
 * never became AUTHENTICATED.
 */
async function expectRefusedAtUpgrade(env: TestGateway, options: ConnectOptions, expected: { reason: string; userId: string }): Promise<void> {
  const client = rawClient(env, options);
  const messageId = `early-${Math.random().toString(36).slice(2)}`;
  let sentAtOpen = false;
  client.ws.once('open', () => {
    client.send({ type: 'user_message', id: messageId, thread_id: 't1', text: '/hang started too early' });
    sentAtOpen = true;
  });
  await client.opened;
  expect(sentAtOpen).toBe(true);
  // The frame reaches the server before the client's echo of the close frame, so once the
  // socket is closed the server has read (and must have dropped) it.
  expect(await client.waitClosed()).toEqual({ code: 4401, reason: expected.reason });
  expect(client.frames).toEqual([]);
  expect(env.gateway.runs.liveRuns).toBe(0);
  expect((await env.gateway.engine.head(expected.userId)).lastSeq).toBe(0);
  expect(await transitionsTo(env, 'AUTHENTICATED')).toBe(0);
  expect((await env.gateway.metrics.errorsSent.get()).values.reduce((sum, v) => sum + v.value, 0)).toBe(0);
  expect(await neverClaimed(env, expected.userId, messageId)).toBe(true);
}

describe('the three ways to authenticate', () => {
  it('Authorization: Bearer header reaches connection_ready as the token subject', async () => {
    const env = await start();
    const client = await env.ready('alice', { via: 'header' });
    expect(client.frames[0]).toMatchObject({ type: 'connection_ready', protocol: 'agentwire.v1', user_id: 'alice' });
    expect(client.ws.protocol).toBe('agentwire.v1');
  });

  it('jwt.<token> subprotocol reaches connection_ready as the token subject', async () => {
    const env = await start();
    const client = await env.ready('bob', { via: 'subprotocol' });
    expect(client.frames[0]).toMatchObject({ type: 'connection_ready', protocol: 'agentwire.v1', user_id: 'bob' });
  });

  it('an auth frame reaches connection_ready as the token subject', async () => {
    const env = await start();
    const client = await env.ready('carol', { via: 'frame' });
    expect(client.frames[0]).toMatchObject({ type: 'connection_ready', protocol: 'agentwire.v1', user_id: 'carol' });
    expect(client.ws.protocol).toBe('agentwire.v1');
  });

  it('header and subprotocol carrying the same token authenticate', async () => {
    const env = await start();
    const token = await env.token('dave');
    const client = rawClient(env, { token, via: 'subprotocol', headers: { authorization: `Bearer ${token}` } });
    expect(await client.ready()).toMatchObject({ user_id: 'dave' });
  });
});

describe('subprotocol selection (section 1)', () => {
  it('selects agentwire.v1 when it is offered together with a jwt.* entry', async () => {
    const env = await start();
    const token = await env.token('alice');
    const client = rawClient(env, { token, via: 'subprotocol' });
    await client.ready();
    expect(client.ws.protocol).toBe('agentwire.v1');
  });

  it('echoes the jwt.<token> entry when it is the only one offered', async () => {
    const env = await start();
    const token = await env.token('alice');
    const client = rawClient(env, { token, via: 'subprotocol', offerProtocol: false });
    expect(await client.ready()).toMatchObject({ user_id: 'alice' });
    expect(client.ws.protocol).toBe(`jwt.${token}`);
  });
});

describe('refused upgrade credentials: open, then 4401, and no frame is processed', () => {
  it('header and subprotocol tokens that differ', async () => {
    const env = await start();
    const alice = await env.token('alice');
    const bob = await env.token('bob');
    await expectRefusedAtUpgrade(
      env,
      { token: alice, via: 'subprotocol', headers: { authorization: `Bearer ${bob}` } },
      { reason: 'token_invalid', userId: 'bob' },
    );
    expect(await env.gateway.engine.head('alice')).toMatchObject({ lastSeq: 0 });
  });

  it('an expired token (subprotocol) gets token_expired', async () => {
    const env = await start();
    const token = await hs256({ sub: 'alice', iat: nowSec() - 600, exp: nowSec() - 120 });
    await expectRefusedAtUpgrade(env, { token, via: 'subprotocol' }, { reason: 'token_expired', userId: 'alice' });
  });

  it('an expired token (header) gets token_expired', async () => {
    const env = await start();
    const token = await hs256({ sub: 'alice', iat: nowSec() - 600, exp: nowSec() - 120 });
    await expectRefusedAtUpgrade(env, { token, via: 'header' }, { reason: 'token_expired', userId: 'alice' });
  });

  it('a token signed with another secret gets token_invalid', async () => {
    const env = await start();
    const token = await hs256({ sub: 'mallory', exp: nowSec() + 600 }, OTHER_SECRET);
    await expectRefusedAtUpgrade(env, { token, via: 'header' }, { reason: 'token_invalid', userId: 'mallory' });
  });

  it('an alg:none token gets token_invalid', async () => {
    const env = await start();
    await expectRefusedAtUpgrade(env, { token: algNoneToken('mallory'), via: 'subprotocol' }, { reason: 'token_invalid', userId: 'mallory' });
  });

  it('a wrong or missing audience gets token_invalid when an audience is configured', async () => {
    const env = await start({ auth: { secret: TEST_SECRET, audience: 'x' } });
    const wrong = await hs256({ sub: 'alice', aud: 'y', exp: nowSec() + 600 });
    await expectRefusedAtUpgrade(env, { token: wrong, via: 'subprotocol' }, { reason: 'token_invalid', userId: 'alice' });
    const missing = await hs256({ sub: 'alice', exp: nowSec() + 600 });
    await expectRefusedAtUpgrade(env, { token: missing, via: 'header' }, { reason: 'token_invalid', userId: 'alice' });
    // The same gateway accepts the right audience, so the refusals above were about `aud`.
    const right = await hs256({ sub: 'alice', aud: 'x', exp: nowSec() + 600 });
    expect(await rawClient(env, { token: right, via: 'subprotocol' }).ready()).toMatchObject({ user_id: 'alice' });
  });
});

describe('auth frame', () => {
  it('an empty token closes with 4401 token_missing', async () => {
    const env = await start();
    const client = rawClient(env, { token: '', via: 'frame' });
    expect(await client.waitClosed()).toEqual({ code: 4401, reason: 'token_missing' });
    expect(client.frames).toEqual([]);
  });

  it('an auth frame without a token closes with 4401 token_missing', async () => {
    const env = await start();
    const client = rawClient(env, { via: 'none' });
    await client.opened;
    client.send({ type: 'auth' });
    expect(await client.waitClosed()).toEqual({ code: 4401, reason: 'token_missing' });
    expect(client.frames).toEqual([]);
  });

  it('a badly signed token closes with 4401 token_invalid, an expired one with token_expired', async () => {
    const env = await start();
    const bad = rawClient(env, { token: await hs256({ sub: 'alice', exp: nowSec() + 600 }, OTHER_SECRET), via: 'frame' });
    expect(await bad.waitClosed()).toEqual({ code: 4401, reason: 'token_invalid' });
    const expired = rawClient(env, { token: await hs256({ sub: 'alice', exp: nowSec() - 120 }), via: 'frame' });
    expect(await expired.waitClosed()).toEqual({ code: 4401, reason: 'token_expired' });
    const none = rawClient(env, { token: algNoneToken('alice'), via: 'frame' });
    expect(await none.waitClosed()).toEqual({ code: 4401, reason: 'token_invalid' });
    expect([...bad.frames, ...expired.frames, ...none.frames]).toEqual([]);
  });

  it('frames sent before the auth frame are held and dispatched after connection_ready, in order', async () => {
    const env = await start();
    const client = rawClient(env, { via: 'none' });
    await client.opened;
    client.send({ type: 'ping', id: 'p1' });
    client.send({ type: 'user_message', id: 'm1', thread_id: 't1', text: 'count these words' });
    client.send({ type: 'ping', id: 'p2' });
    client.send('not json');
    client.send({ type: 'ping', id: 'p3' });
    client.send({ type: 'auth', token: await env.token('alice') });
    const ack = await client.waitFor((f) => f.type === 'ack' && f.id === 'm1', 5000, 'ack of m1');
    await client.waitFor((f) => f.type === 'pong' && f.id === 'p3', 5000, 'pong p3');
    const control = client.frames.filter((f) => typeof f.seq !== 'number');
    expect(control.map((f) => [f.type, f.id ?? f.code])).toEqual([
      ['connection_ready', undefined],
      ['pong', 'p1'],
      ['ack', 'm1'],
      ['pong', 'p2'],
      ['error', 'invalid_json'],
      ['pong', 'p3'],
    ]);
    expect(client.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'alice', last_seq: 0 });
    expect(ack).toMatchObject({ status: 'started', thread_id: 't1' });
    // The held user_message really ran, as alice.
    const events = await client.runEvents(ack.run_id);
    expect(events[0]).toMatchObject({ type: 'agent_started', seq: 1, message_id: 'm1' });
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
  });

  it('a second auth frame after authentication gets error already_authenticated and the connection stays', async () => {
    const env = await start();
    const viaFrame = await env.ready('alice', { via: 'frame' });
    viaFrame.send({ type: 'auth', token: await env.token('mallory') });
    viaFrame.send({ type: 'ping', id: 1 });
    const pong = await viaFrame.waitFor((f) => f.type === 'pong' && f.id === 1, 5000, 'pong 1');
    expect(viaFrame.frames.slice(1)).toEqual([{ type: 'error', code: 'already_authenticated', message: expect.any(String), ref: null }, pong]);

    const viaSubprotocol = await env.ready('bob');
    viaSubprotocol.send({ type: 'auth', token: await env.token('bob') });
    const error = await viaSubprotocol.waitForType('error');
    expect(error).toEqual({ type: 'error', code: 'already_authenticated', message: expect.any(String), ref: null });
    // Identity never changes: a message still runs as the original user.
    const ack = await viaFrame.message('m1', 't1', 'hello there');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    await viaFrame.runEvents(ack.run_id);
    expect((await env.gateway.engine.head('mallory')).lastSeq).toBe(0);
    expect((await env.gateway.engine.head('alice')).lastSeq).toBeGreaterThan(0);
    expect(viaFrame.closeCode).toBeNull();
    expect(viaSubprotocol.closeCode).toBeNull();
  });
});

describe('auth deadline (ManualClock)', () => {
  it('closes with 4408 once authTimeoutMs has passed without auth, not before', async () => {
    const clock = new ManualClock();
    // Sweeper interval: min(heartbeatMs 25000, heartbeatTimeoutMs 10000, authTimeoutMs 5000) / 5 = 1000 ms.
    const env = await start({ clock, authTimeoutMs: 5000 });
    const client = rawClient(env, { via: 'none' });
    await client.opened; // accepted at t=0: deadline t=5000, swept at t=1000, 2000, ...
    await clock.advance(4999);
    expect(await connectionsIn(env, 'ACCEPTED')).toBe(1);
    expect(await connectionsIn(env, 'CLOSING')).toBe(0);
    expect(client.closeCode).toBeNull();
    await clock.advance(1);
    expect(await client.waitClosed()).toEqual({ code: 4408, reason: 'auth_timeout' });
    expect(client.frames).toEqual([]);
  });

  it('a connection that authenticated in time is not closed by the deadline', async () => {
    const clock = new ManualClock();
    const env = await start({ clock, authTimeoutMs: 5000 });
    const late = rawClient(env, { via: 'none' });
    const onTime = rawClient(env, { via: 'frame', token: await env.token('alice') });
    await onTime.ready();
    await late.opened;
    await clock.advance(5000);
    expect(await late.waitClosed()).toEqual({ code: 4408, reason: 'auth_timeout' });
    onTime.send({ type: 'ping', id: 'still-here' });
    await onTime.waitFor((f) => f.type === 'pong' && f.id === 'still-here', 5000, 'pong');
    expect(onTime.closeCode).toBeNull();
  });
});

describe('test-token route', () => {
  const post = (env: TestGateway, headers: Record<string, string>, body: unknown) =>
    fetch(`http://127.0.0.1:${env.port}/v1/auth/test-token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });

  it('issues a token that authenticates as user_id, with an ISO expires_at', async () => {
    const env = await start({ testTokens: { bypassKey: 'let-me-in', secret: TEST_SECRET } });
    const before = Date.now();
    const res = await post(env, { 'x-e2e-bypass-key': 'let-me-in' }, { user_id: 'e2e-user', ttl_s: 600 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; expires_at: string };
    expect(Object.keys(body).sort()).toEqual(['expires_at', 'token']);
    expect(body.expires_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/);
    const expiresAt = Date.parse(body.expires_at);
    expect(expiresAt).toBeGreaterThanOrEqual(before - 1000 + 600_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 1000 + 600_000);
    const client = rawClient(env, { token: body.token, via: 'header' });
    expect(await client.ready()).toMatchObject({ user_id: 'e2e-user' });
  });

  it('a wrong or missing key gets 401 {"detail":"Invalid E2E bypass key"}', async () => {
    const env = await start({ testTokens: { bypassKey: 'let-me-in', secret: TEST_SECRET } });
    const attempts: Array<Record<string, string>> = [{ 'x-e2e-bypass-key': 'let-me-out' }, { 'x-e2e-bypass-key': '' }, {}];
    for (const headers of attempts) {
      const res = await post(env, headers, { user_id: 'e2e-user' });
      expect(res.status).toBe(401);
      expect(await res.text()).toBe('{"detail":"Invalid E2E bypass key"}');
    }
  });

  it('does not exist without a bypass key (404)', async () => {
    const env = await start();
    const res = await post(env, { 'x-e2e-bypass-key': 'anything' }, { user_id: 'e2e-user' });
    expect(res.status).toBe(404);
    await res.body?.cancel();
  });

  it('after 20 wrong keys from one address within a minute answers 429 with Retry-After, the right key too, until the minute has passed', async () => {
    const clock = new ManualClock(1_000_000);
    const logged = captureLogger();
    const bypassKey = 'the-right-bypass-key-0123';
    const env = await start({ clock, logger: logged.logger, testTokens: { bypassKey, secret: TEST_SECRET } });
    const wrongKeys = Array.from({ length: 20 }, (_, i) => `wrong-guess-${i}`);
    for (const wrong of wrongKeys) {
      const res = await post(env, { 'x-e2e-bypass-key': wrong }, { user_id: 'e2e-user' });
      expect(res.status).toBe(401);
      await res.body?.cancel();
      await clock.advance(1000); // 20 misses within 20 s of the first
    }
    for (const key of ['wrong-guess-21', bypassKey]) {
      const res = await post(env, { 'x-e2e-bypass-key': key }, { user_id: 'e2e-user' });
      expect(res.status).toBe(429);
      expect(res.headers.get('retry-after')).toBe('40');
      await res.body?.cancel();
    }
    await clock.advance(39_000); // 1 s before the minute since the first miss has passed
    const stillLimited = await post(env, { 'x-e2e-bypass-key': bypassKey }, { user_id: 'e2e-user' });
    expect(stillLimited.status).toBe(429);
    expect(stillLimited.headers.get('retry-after')).toBe('1');
    await stillLimited.body?.cancel();
    await clock.advance(1000);
    const allowed = await post(env, { 'x-e2e-bypass-key': bypassKey }, { user_id: 'e2e-user' });
    expect(allowed.status).toBe(200);
    await allowed.body?.cancel();

    // Each wrong key is logged at warn with the address and the count, never the key.
    const warnings = logged.lines().filter((line) => line.msg === 'wrong E2E bypass key');
    expect(warnings).toHaveLength(20);
    expect(warnings.map((line) => line.misses)).toEqual(wrongKeys.map((_, i) => i + 1));
    for (const line of warnings) {
      expect(line.level).toBe(40);
      expect(line.address).toMatch(/127\.0\.0\.1/);
    }
    const text = logged.text();
    for (const key of [...wrongKeys, 'wrong-guess-21', bypassKey]) expect(text).not.toContain(key);
  });

  it('answers a body over 4 KiB with 413 that the client receives, and keeps serving', async () => {
    const env = await start({ testTokens: { bypassKey: 'let-me-in-0123456789', secret: TEST_SECRET } });
    for (const size of [4097, 64 * 1024, 1024 * 1024]) {
      const res = await post(env, { 'x-e2e-bypass-key': 'let-me-in-0123456789' }, { user_id: 'u', pad: 'x'.repeat(size) });
      expect(res.status).toBe(413);
      expect(await res.json()).toEqual({ detail: 'body must be at most 4096 bytes' });
    }
    // Exactly 4 KiB is fine.
    const prefix = JSON.stringify({ user_id: 'e2e-user', pad: '' });
    const exact = JSON.stringify({ user_id: 'e2e-user', pad: 'x'.repeat(4096 - prefix.length) });
    expect(Buffer.byteLength(exact)).toBe(4096);
    const ok = await fetch(`http://127.0.0.1:${env.port}/v1/auth/test-token`, {
      method: 'POST',
      headers: { 'x-e2e-bypass-key': 'let-me-in-0123456789' },
      body: exact,
    });
    expect(ok.status).toBe(200);
    await ok.body?.cancel();
  });
});

describe('a bypass key in production is refused', () => {
  const env = { NODE_ENV: 'production', AGENTWIRE_JWT_SECRET: LONG_SECRET, AGENTWIRE_E2E_BYPASS_KEY: 'bypass-key-0123456789' };

  it('loadConfig throws a ConfigError naming AGENTWIRE_E2E_BYPASS_KEY', () => {
    let error: unknown;
    try {
      loadConfig(env);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).setting).toBe('AGENTWIRE_E2E_BYPASS_KEY');
    expect((error as ConfigError).message).toMatch(/^AGENTWIRE_E2E_BYPASS_KEY: /);
    // Without the bypass key the same configuration is fine.
    expect(loadConfig({ NODE_ENV: 'production', AGENTWIRE_JWT_SECRET: LONG_SECRET }).production).toBe(true);
  });

  it('`agentwire serve` exits non-zero with one line naming the setting', async () => {
    const child = children.spawn(['serve'], { ...env, PORT: '0' });
    const { code } = await child.waitExit(20_000);
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(child.stdout).toBe('');
    const lines = child.stderr.split('\n').filter((line) => line.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('AGENTWIRE_E2E_BYPASS_KEY');
  }, 30_000);
});

describe('auth metrics', () => {
  it('agentwire_auth_total counts each attempt by method and outcome', async () => {
    const env = await start();
    await env.ready('a', { via: 'header' });
    await env.ready('b', { via: 'subprotocol' });
    await env.ready('c', { via: 'frame' });
    await env.ready('d', { via: 'frame' });
    const expired = await hs256({ sub: 'e', exp: nowSec() - 120 });
    const forged = await hs256({ sub: 'f', exp: nowSec() + 600 }, OTHER_SECRET);
    const refusals: Array<[ConnectOptions, number]> = [
      [{ token: expired, via: 'subprotocol' }, 4401],
      [{ token: forged, via: 'header' }, 4401],
      [{ token: '', via: 'frame' }, 4401],
      [{ token: forged, via: 'frame' }, 4401],
      [{ token: expired, via: 'frame' }, 4401],
    ];
    for (const [options, code] of refusals) {
      expect((await rawClient(env, options).waitClosed()).code).toBe(code);
    }
    const count = (method: string, outcome: string) => metricValue(env, `agentwire_auth_total{method="${method}",outcome="${outcome}"}`);
    expect(await count('header', 'ok')).toBe(1);
    expect(await count('subprotocol', 'ok')).toBe(1);
    expect(await count('frame', 'ok')).toBe(2);
    expect(await count('subprotocol', 'token_expired')).toBe(1);
    expect(await count('header', 'token_invalid')).toBe(1);
    expect(await count('frame', 'token_missing')).toBe(1);
    expect(await count('frame', 'token_invalid')).toBe(1);
    expect(await count('frame', 'token_expired')).toBe(1);
    const { values } = await env.gateway.metrics.auth.get();
    expect(values.reduce((sum, v) => sum + v.value, 0)).toBe(9);
  });
});

describe('Origin allow-list', () => {
  it('closes a connection from another origin with 4403 and processes none of its frames', async () => {
    const env = await start({ allowedOrigins: ['http://ok.example'] });
    const ok = await env.ready('alice', { headers: { origin: 'http://ok.example' } });
    expect(ok.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'alice' });

    const evil = await env.connect('alice', { headers: { origin: 'http://evil.example' } });
    evil.ws.once('open', () => evil.send({ type: 'user_message', id: 'x1', thread_id: 't1', text: '/hang no' }));
    await evil.opened;
    expect(await evil.waitClosed()).toEqual({ code: 4403, reason: 'origin_not_allowed' });
    expect(evil.frames).toEqual([]);

    const noOrigin = await env.connect('alice');
    expect(await noOrigin.waitClosed()).toEqual({ code: 4403, reason: 'origin_not_allowed' });

    expect(env.gateway.runs.liveRuns).toBe(0);
    // The allowed connection is untouched.
    ok.send({ type: 'ping', id: 'ok?' });
    await ok.waitFor((f: Frame) => f.type === 'pong' && f.id === 'ok?', 5000, 'pong');
    expect(ok.frames.map((f) => f.type)).toEqual(['connection_ready', 'pong']);
    expect(await neverClaimed(env, 'alice', 'x1')).toBe(true);
  });

  it('compares origins case-insensitively, also when an embedder lists them in capitals', async () => {
    const env = await start({ allowedOrigins: ['https://App.Example'] });
    const ok = await env.ready('alice', { headers: { origin: 'https://app.EXAMPLE' } });
    expect(ok.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'alice' });
  });
});
