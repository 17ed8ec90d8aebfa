import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from './helpers/manualClock.js';
import { TEST_SECRET, startGateway, stopAdvancing, type TestGateway } from './helpers/gateway.js';
import type { TestClient } from './helpers/wsClient.js';

/** Token expiry on open connections vs refresh_token (PROTOCOL.md sections 2 and 6). */

let env: TestGateway | undefined;
let clock: ManualClock | undefined;
afterEach(async () => {
  if (env) await stopAdvancing(env, clock, 1000, 30);
  env = undefined;
  clock = undefined;
});

const sign = (payload: Record<string, unknown>) =>
  new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(TEST_SECRET));
const expOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;

describe('token expiry vs refresh_token', () => {
  it('a refresh_token sent before exp keeps the connection open even while an earlier frame is still being handled', async () => {
    clock = new ManualClock(Date.now());
    env = await startGateway({ clock, drainTimeoutMs: 500, heartbeatMs: 3_600_000, heartbeatTimeoutMs: 3_600_000 });
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
    const alice: TestClient = await env.ready('alice', { token });
    alice.send({ type: 'user_message', id: 'm1', thread_id: 't1', text: 'stall' });
    const fresh = await env.token('alice', 600);
    alice.send({ type: 'refresh_token', id: 'r1', token: fresh });
    // The refresh was sent well before exp; exp then passes.
    await clock.advance(expOf(token) - clock.now() + 3000);
    release();
    const refreshed = await alice.waitFor((f) => f.type === 'token_refreshed' || f.type === 'error', 3000, 'refresh answer').catch(() => null);
    expect(alice.closeCode).toBeNull();
    expect(refreshed).toMatchObject({ type: 'token_refreshed', id: 'r1' });
  });

  it('a token whose exp has passed is never answered token_refreshed', async () => {
    env = await startGateway({ drainTimeoutMs: 500 });
    const alice = await env.ready('alice');
    // exp 2 s ago: inside the verifier's 5 s clock tolerance, but the sweeper closes at exp.
    const stale = await sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 2 });
    const from = alice.frames.length;
    alice.send({ type: 'refresh_token', id: 'r1', token: stale });
    const answer = await alice.waitFor(() => true, 3000, 'answer', from);
    expect(answer).toMatchObject({ type: 'error', code: 'token_expired', ref: 'r1' });
  });

  it('a token whose exp has passed never gets connection_ready (4401 token_expired at once)', async () => {
    env = await startGateway({ drainTimeoutMs: 500 });
    const stale = await sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 2 });
    const alice = await env.connect('alice', { token: stale });
    expect(await alice.waitClosed()).toEqual({ code: 4401, reason: 'token_expired' });
    expect(alice.frames.filter((f) => f.type === 'connection_ready')).toEqual([]);
  });
});
