import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../helpers/manualClock.js';
import { TEST_SECRET, startGateway, stopAdvancing, type TestGateway } from '../helpers/gateway.js';
import { TestClient, type Frame } from '../helpers/wsClient.js';

/**
 * Issue 8, items 1, 2 and 9 on the connection side (PROTOCOL.md sections 2, 3, 4, 5, 6 and 9):
 * frame fields are plain data (prototype names, any nesting), a ping id is a short scalar, an
 * exception in one connection's handler closes only that connection with 1011, malformed resume
 * fields are ignored, frames held before connection_ready are bounded in bytes per connection
 * and per gateway, and a token's expiry closes its connection unless refreshed.
 */

let env: TestGateway | undefined;
let clock: ManualClock | undefined;
afterEach(async () => {
  if (env) await stopAdvancing(env, clock, 1000, 30);
  env = undefined;
  clock = undefined;
});

async function start(options: Parameters<typeof startGateway>[0] = {}): Promise<TestGateway> {
  env = await startGateway({ drainTimeoutMs: 500, ...options });
  return env;
}

let pingCounter = 0;

async function expectAlive(client: TestClient): Promise<void> {
  const id = `alive-${++pingCounter}`;
  client.send({ type: 'ping', id });
  await client.waitFor((f) => f.type === 'pong' && f.id === id, 5000, `pong ${id}`);
  expect(client.closeCode).toBeNull();
}

/** Sends raw text and resolves with the next frame after it. */
async function answerTo(client: TestClient, text: string): Promise<Frame> {
  const from = client.frames.length;
  client.send(text);
  return client.waitFor(() => true, 5000, 'an answer', from);
}

const errorOf = (code: string, ref: string | number | null, path?: string) =>
  path === undefined
    ? { type: 'error', code, message: expect.stringMatching(/\S/), ref }
    : { type: 'error', code, message: expect.stringMatching(/\S/), ref, path };

const nested = (depth: number, leaf = '1') => '['.repeat(depth) + leaf + ']'.repeat(depth);
const PROTOTYPE_NAMES = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__', 'isPrototypeOf', '__defineGetter__'];

async function faults(gateway: TestGateway['gateway'], context: string): Promise<number> {
  return (await gateway.metrics.faults.get()).values.find((v) => v.labels.context === context)?.value ?? 0;
}

describe('frame types and keys that are Object.prototype names are just unknown names', () => {
  it('before auth: held, then answered unknown_type in order after connection_ready', async () => {
    const env = await start();
    const client = await env.connect('alice', { via: 'none' });
    await client.opened;
    for (const name of PROTOTYPE_NAMES) client.send(`{"type":"${name}","id":"${name}"}`);
    client.send({ type: 'auth', token: await env.token('alice') });
    await client.waitForCount((f) => f.type === 'error', PROTOTYPE_NAMES.length, 5000, 'errors');
    expect(client.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'alice' });
    expect(client.frames.slice(1)).toEqual(PROTOTYPE_NAMES.map((name) => errorOf('unknown_type', name)));
    await expectAlive(client);
  });

  it('after auth: unknown_type each, and prototype names as keys change nothing', async () => {
    const env = await start();
    const alice = await env.ready('alice');
    const bob = await env.ready('bob');
    for (const name of PROTOTYPE_NAMES) {
      expect(await answerTo(alice, `{"type":"${name}","id":7}`)).toEqual(errorOf('unknown_type', 7));
    }
    // Keys: a "__proto__" or "constructor" field neither supplies "type"/"id" nor breaks a frame.
    expect(await answerTo(alice, '{"__proto__":{"type":"ping","id":"p"}}')).toEqual(errorOf('invalid_message', null, 'type'));
    expect(await answerTo(alice, '{"type":"ping","id":"k1","__proto__":{"id":[1]},"constructor":{"a":1},"toString":5}')).toEqual({
      type: 'pong',
      id: 'k1',
      server_time: expect.any(String),
    });
    expect(await answerTo(alice, '{"type":"cancel","id":"c1","run_id":"r","__proto__":null}')).toEqual(errorOf('run_not_found', 'c1'));
    await expectAlive(alice);
    await expectAlive(bob);
  });
});

describe('ping ids and deep values', () => {
  it('a ping id that is not a 1..128-char string or a finite number gets invalid_message with path id', async () => {
    const env = await start();
    const alice = await env.ready('alice');
    const bob = await env.ready('bob');
    const bad = [nested(6000), nested(10_000), '{"a":{"b":{}}}', 'true', 'null', '""', JSON.stringify('x'.repeat(129)), '1e309', '-1e309'];
    for (const id of bad) {
      const answer = await answerTo(alice, `{"type":"ping","id":${id}}`);
      expect(answer).toMatchObject({ type: 'error', code: 'invalid_message', path: 'id' });
    }
    for (const id of ['x'.repeat(128), 0, -3, 1.5, 1e308]) {
      expect(await answerTo(alice, JSON.stringify({ type: 'ping', id }))).toEqual({ type: 'pong', id, server_time: expect.any(String) });
    }
    expect(await answerTo(alice, '{"type":"ping"}')).toEqual({ type: 'pong', id: null, server_time: expect.any(String) });
    await expectAlive(alice);
    await expectAlive(bob);
  });

  it('values nested 10,000 deep in any field, before and after auth, are answered and end nothing', async () => {
    const env = await start();
    const bob = await env.ready('bob');
    const deep = nested(10_000);
    const frames = [
      `{"type":"user_message","id":"m1","thread_id":"t1","text":${deep}}`,
      `{"type":"cancel","id":${deep},"run_id":${deep}}`,
      `{"type":"ping","id":"d1","extra":${nested(10_000, '{}')}}`,
      `{"type":${deep}}`,
      `{"type":"refresh_token","id":"r1","token":${deep}}`,
      deep,
    ];
    const early = await env.connect('alice', { via: 'none' });
    await early.opened;
    for (const frame of frames) early.send(frame);
    early.send({ type: 'auth', token: await env.token('alice'), last_seq: JSON.parse(nested(1000)) });
    await early.waitForCount((f) => f.type === 'error' || f.type === 'pong', frames.length, 5000, 'answers');
    expect(early.frames.slice(1).map((f) => f.path ?? f.type)).toEqual(['text', 'id', 'pong', 'type', 'token', 'type']);
    for (const frame of frames) await answerTo(early, frame);
    await expectAlive(early);
    // A deep token in the auth frame is no token at all.
    const deepToken = await env.connect('carol', { via: 'none' });
    await deepToken.opened;
    deepToken.send(`{"type":"auth","token":${deep}}`);
    expect(await deepToken.waitClosed()).toEqual({ code: 4401, reason: 'token_missing' });
    await expectAlive(bob);
  });
});

describe('an exception escaping one connection is that connection’s 1011, never the process’s end', () => {
  it('a synchronous throw while dispatching a frame closes that connection with 1011 and counts a fault', async () => {
    const env = await start();
    const alice = await env.ready('alice');
    const bob = await env.ready('bob');
    const runs = env.gateway.runs;
    const submit = runs.submit.bind(runs);
    runs.submit = (userId, message, reply) => {
      if (message.text === 'explode') throw new Error('handler bug');
      return submit(userId, message, reply);
    };
    alice.send({ type: 'user_message', id: 'm1', thread_id: 't1', text: 'explode' });
    expect(await alice.waitClosed()).toEqual({ code: 1011, reason: 'server_fault' });
    expect(await faults(env.gateway, 'dispatch')).toBe(1);
    await expectAlive(bob);
    const ack = await bob.message('b1', 't1', '2+3');
    expect((await bob.runEvents(ack.run_id)).at(-1)).toMatchObject({ type: 'agent_completed' });
    const again = await env.ready('alice');
    await expectAlive(again);
  });

  it('a verifier that throws at the upgrade drops that socket and counts a fault', async () => {
    let explode = true;
    const env = await start({
      auth: {
        verify: (token) => {
          if (explode) throw new Error('verifier bug');
          return Promise.resolve({ ok: true, userId: String(token).slice(0, 8), expiresAt: Date.now() + 3_600_000 });
        },
      },
    });
    const client = await env.connect('alice');
    await expect(client.opened).rejects.toThrow();
    expect(await faults(env.gateway, 'upgrade')).toBe(1);
    explode = false;
    const next = await env.ready('bob');
    await expectAlive(next);
  });
});

describe('malformed resume fields are ignored as if absent (section 3)', () => {
  it('an auth frame with a bad last_seq or epoch proceeds with resumed: false', async () => {
    const env = await start({ authTimeoutMs: 60_000 });
    const seed = await env.ready('alice');
    const ack = await seed.message('m1', 't1', '2+3');
    await seed.runEvents(ack.run_id);
    const { epoch, last_seq: head } = (await env.ready('alice')).frames[0]!;
    const cases: Array<Record<string, unknown>> = [
      { last_seq: -1 },
      { last_seq: 1.5 },
      { last_seq: '7' },
      { last_seq: Infinity },
      { last_seq: [head], epoch },
      { last_seq: head, epoch: 5 },
      { last_seq: head, epoch: 'e'.repeat(129) },
      { last_seq: { n: 1 }, epoch: { e: epoch } },
    ];
    for (const fields of cases) {
      const client = await env.connect('alice', { via: 'none' });
      await client.opened;
      client.send({ type: 'auth', token: await env.token('alice'), ...fields });
      const ready = await client.ready();
      expect(ready, JSON.stringify(fields)).toMatchObject({ resumed: false, replayed: 0, last_seq: head, epoch });
      await expectAlive(client);
      client.close();
    }
    // A good position in the same frame still resumes.
    const good = await env.connect('alice', { via: 'none' });
    await good.opened;
    good.send({ type: 'auth', token: await env.token('alice'), last_seq: head - 1, epoch });
    expect(await good.ready()).toMatchObject({ resumed: true, replayed: 1 });
  });

  it('an upgrade URL with a bad last_seq or an over-long epoch proceeds with resumed: false', async () => {
    const env = await start();
    for (const query of ['last_seq=-1', 'last_seq=1.5', 'last_seq=x&epoch=e', `last_seq=0&epoch=${'e'.repeat(129)}`, 'epoch=e']) {
      const raw = new TestClient(`${env.url}?${query}`, { token: await env.token('alice') });
      env.clients.push(raw);
      expect(await raw.ready(), query).toMatchObject({ resumed: false, replayed: 0 });
      raw.close();
    }
  });
});

describe('frames held before connection_ready are bounded in bytes', () => {
  /** A ping frame of exactly `bytes` bytes. */
  const sized = (id: string, bytes: number) => {
    const base = JSON.stringify({ type: 'ping', id, pad: '' });
    return JSON.stringify({ type: 'ping', id, pad: 'x'.repeat(bytes - base.length) });
  };

  it('one connection holding more than inboxMaxBytes is closed 1008; up to it everything is dispatched', async () => {
    const env = await start({ inboxMaxBytes: 3000, maxFrameBytes: 1024 });
    const token = await env.token('alice');
    const fits = await env.connect('alice', { via: 'none' });
    await fits.opened;
    for (const id of ['a', 'b', 'c']) fits.send(sized(id, 1000));
    fits.send({ type: 'auth', token });
    await fits.waitForCount((f) => f.type === 'pong', 3, 5000, 'pongs');
    expect(fits.frames.map((f) => f.id ?? f.type)).toEqual(['connection_ready', 'a', 'b', 'c']);
    const over = await env.connect('alice', { via: 'none' });
    await over.opened;
    for (const id of ['a', 'b', 'c', 'd']) over.send(sized(id, 1000));
    expect(await over.waitClosed()).toEqual({ code: 1008, reason: 'inbox_overflow' });
    expect(env.gateway.heldBytes).toBe(0);
    await expectAlive(fits);
  });

  it('beyond pendingBytesLimit a held frame closes its connection 1013 and upgrades get 503 until bytes are freed', async () => {
    const env = await start({ inboxMaxBytes: 2000, pendingBytesLimit: 3000, maxFrameBytes: 1024 });
    const bob = await env.ready('bob');
    const first = await env.connect('alice', { via: 'none' });
    const second = await env.connect('alice', { via: 'none' });
    await Promise.all([first.opened, second.opened]);
    // Four frames of 1000 bytes against 3000: whichever connection's frame arrives fourth is closed.
    for (const client of [first, second]) for (const id of ['a', 'b']) client.send(sized(id, 1000));
    const closed = await Promise.race([first, second].map(async (client) => ({ client, ...(await client.closed) })));
    expect({ code: closed.code, reason: closed.reason }).toEqual({ code: 1013, reason: 'overloaded' });
    const survivor = closed.client === first ? second : first;
    expect(env.gateway.heldBytes).toBe(2000);
    // 2000 held: one more maximum frame (1024) would not fit, so new upgrades are refused.
    const refused = await new Promise<{ status: number; retryAfter: string | undefined }>((resolve, reject) => {
      const ws = new WebSocket(env.url);
      ws.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] }));
      ws.once('open', () => reject(new Error('upgrade accepted')));
      ws.on('error', () => {});
    });
    expect(refused).toEqual({ status: 503, retryAfter: '1' });
    // The survivor overflows its own bound: what it held is freed at once, and upgrades work again.
    survivor.send(sized('c', 1000));
    expect(await survivor.waitClosed()).toEqual({ code: 1008, reason: 'inbox_overflow' });
    expect(env.gateway.heldBytes).toBe(0);
    const later = await env.ready('alice');
    await expectAlive(later);
    await expectAlive(bob);
  });
});

describe('token expiry on open connections (section 2) and refresh_token (section 6)', () => {
  async function startWithClock(): Promise<TestGateway> {
    clock = new ManualClock(Date.now());
    return start({ clock, heartbeatMs: 3_600_000, heartbeatTimeoutMs: 3_600_000, authTimeoutMs: 3_600_000 });
  }

  const sign = (payload: Record<string, unknown>) => new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(TEST_SECRET));

  /** The token's exp as the verifier returns it (whole seconds). */
  const expOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;

  it('closes with 4401 token_expired within 2 s of exp; the runs keep running and a new token resumes', async () => {
    const env = await startWithClock();
    const token = await env.token('alice', 60);
    const alice = await env.connect('alice', { token, via: 'frame' });
    await alice.ready();
    const bob = await env.ready('bob');
    const ack = await alice.message('m1', 't1', '/hang until cancelled');
    await alice.waitFor((f) => f.type === 'agent_started', 5000, 'agent_started');
    await clock!.advance(expOf(token) - clock!.now() - 1);
    await expectAlive(alice);
    await clock!.advance(2000);
    expect(await alice.waitClosed()).toEqual({ code: 4401, reason: 'token_expired' });
    expect(env.gateway.runs.liveRuns).toBe(1);
    await expectAlive(bob);
    const back = await env.ready('alice', { lastSeq: alice.events().at(-1)!.seq, epoch: alice.frames[0]!.epoch });
    expect(back.frames[0]).toMatchObject({ resumed: true });
    back.send({ type: 'cancel', id: 'c1', run_id: ack.run_id });
    expect((await back.runEvents(ack.run_id)).at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
  });

  it('refresh_token moves the expiry; a refused refresh leaves it where it was', async () => {
    const env = await startWithClock();
    const token = await env.token('alice', 60);
    const alice = await env.ready('alice', { token });
    // Refused: another user's token, garbage, an expired token, a token of another key.
    const expired = await sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 600 });
    const refusals: Array<[string, string]> = [
      [await env.token('mallory', 600), 'forbidden'],
      ['not.a.jwt', 'token_invalid'],
      [' ', 'token_invalid'],
      [expired, 'token_expired'],
    ];
    for (const [candidate, code] of refusals) {
      const id = `r-${code}-${alice.frames.length}`;
      expect(await answerTo(alice, JSON.stringify({ type: 'refresh_token', id, token: candidate }))).toEqual(errorOf(code, id));
    }
    expect(await answerTo(alice, JSON.stringify({ type: 'refresh_token', id: 'r-x' }))).toEqual(errorOf('invalid_message', 'r-x', 'token'));
    // Accepted: token_refreshed with the new exp, and the old exp passes harmlessly.
    const fresh = await env.token('alice', 600);
    expect(await answerTo(alice, JSON.stringify({ type: 'refresh_token', id: 'r-ok', token: fresh }))).toEqual({
      type: 'token_refreshed',
      id: 'r-ok',
      expires_at: new Date(expOf(fresh)).toISOString(),
    });
    await clock!.advance(expOf(token) - clock!.now() + 5000);
    await expectAlive(alice);
    await clock!.advance(expOf(fresh) - clock!.now() + 1000);
    expect(await alice.waitClosed()).toEqual({ code: 4401, reason: 'token_expired' });
  });

  it('a refused refresh does not move the expiry', async () => {
    const env = await startWithClock();
    const shortToken = await env.token('bob', 30);
    const bob = await env.ready('bob', { token: shortToken });
    expect(await answerTo(bob, JSON.stringify({ type: 'refresh_token', id: 'r1', token: await env.token('carol', 600) }))).toEqual(errorOf('forbidden', 'r1'));
    await clock!.advance(expOf(shortToken) - clock!.now() + 1000);
    expect(await bob.waitClosed()).toEqual({ code: 4401, reason: 'token_expired' });
  });

  it('a refresh_token sent before exp keeps the connection open even while an earlier frame is still being handled', async () => {
    const env = await startWithClock();
    // A user_message whose handling waits (as on a stalled store) holds the dispatch of later frames.
    const runs = env.gateway.runs;
    const submit = runs.submit.bind(runs);
    let release: () => void = () => {};
    const stalled = new Promise<void>((resolve) => (release = resolve));
    runs.submit = async (userId, message, reply) => {
      if (message.text === 'stall') await stalled;
      return submit(userId, message, reply);
    };
    const token = await env.token('alice', 60);
    const alice = await env.ready('alice', { token });
    alice.send({ type: 'user_message', id: 'm1', thread_id: 't1', text: 'stall' });
    const fresh = await env.token('alice', 600);
    alice.send({ type: 'refresh_token', id: 'r1', token: fresh });
    // The refresh was sent well before exp; exp then passes.
    await clock!.advance(expOf(token) - clock!.now() + 3000);
    release();
    const refreshed = await alice.waitFor((f) => f.type === 'token_refreshed' || f.type === 'error', 3000, 'refresh answer').catch(() => null);
    expect(alice.closeCode).toBeNull();
    expect(refreshed).toMatchObject({ type: 'token_refreshed', id: 'r1' });
  });

  it('a token whose exp has passed is never answered token_refreshed', async () => {
    const env = await start();
    const alice = await env.ready('alice');
    // exp 2 s ago: inside the verifier's 5 s clock tolerance, but the sweeper closes at exp.
    const stale = await sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 2 });
    const from = alice.frames.length;
    alice.send({ type: 'refresh_token', id: 'r1', token: stale });
    const answer = await alice.waitFor(() => true, 3000, 'answer', from);
    expect(answer).toMatchObject({ type: 'error', code: 'token_expired', ref: 'r1' });
  });

  it('a token whose exp has passed never gets connection_ready (4401 token_expired at once)', async () => {
    const env = await start();
    const stale = await sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 2 });
    const alice = await env.connect('alice', { token: stale });
    expect(await alice.waitClosed()).toEqual({ code: 4401, reason: 'token_expired' });
    expect(alice.frames.filter((f) => f.type === 'connection_ready')).toEqual([]);
  });
});
