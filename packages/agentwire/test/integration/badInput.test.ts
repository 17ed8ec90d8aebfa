import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../helpers/manualClock.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { seqProblem, type Frame, type TestClient } from '../helpers/wsClient.js';

/**
 * Bad input and limits after connection_ready (PROTOCOL.md sections 1, 4, 5 and 8): every error
 * code of the contract with its exact frame shape, the connection surviving each, the closes for
 * oversized frames, inbox overflow, rate-limit abuse and slow consumers, and a second user's
 * connection that is never affected.
 */

let env: TestGateway | undefined;
afterEach(async () => {
  await env?.stop();
  env = undefined;
});

interface Setup {
  env: TestGateway;
  alice: TestClient;
  bob: TestClient;
}

async function setup(options: Parameters<typeof startGateway>[0] = {}): Promise<Setup> {
  env = await startGateway({ drainTimeoutMs: 500, ...options });
  const alice = await env.ready('alice');
  const bob = await env.ready('bob');
  return { env, alice, bob };
}

let pingCounter = 0;

/** A ping answered by a pong with the same id: the connection is open and dispatching. */
async function expectAlive(client: TestClient): Promise<void> {
  const id = `alive-${++pingCounter}`;
  client.send({ type: 'ping', id });
  const pong = await client.waitFor((f) => f.type === 'pong' && f.id === id, 5000, `pong ${id}`);
  expect(pong).toEqual({ type: 'pong', id, server_time: expect.any(String) });
  expect(client.closeCode).toBeNull();
}

/** The other user's connection still works and has received nothing but its own pongs. */
async function expectBystanderUntouched(bob: TestClient): Promise<void> {
  await expectAlive(bob);
  expect(bob.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'bob' });
  expect(bob.frames.slice(1).every((f) => f.type === 'pong' && String(f.id).startsWith('alive-'))).toBe(true);
}

/** Sends `frame` and resolves with the next error frame after it. */
async function errorFor(client: TestClient, frame: Frame | string | Buffer): Promise<Frame> {
  const from = client.frames.length;
  if (Buffer.isBuffer(frame)) client.ws.send(frame, { binary: true });
  else client.send(frame);
  return client.waitFor((f) => f.type === 'error', 5000, 'error frame', from);
}

const error = (code: string, ref: string | number | null, path?: string) =>
  path === undefined
    ? { type: 'error', code, message: expect.stringMatching(/\S/), ref }
    : { type: 'error', code, message: expect.stringMatching(/\S/), ref, path };

describe('error frames after connection_ready, each leaving the connection open', () => {
  it('invalid_json', async () => {
    const { alice, bob } = await setup();
    expect(await errorFor(alice, '{"type":"ping",')).toEqual(error('invalid_json', null));
    await expectAlive(alice);
    await expectBystanderUntouched(bob);
  });

  it('invalid_message with path "type": missing type, non-string type, non-object frame', async () => {
    const { alice, bob } = await setup();
    expect(await errorFor(alice, { id: 'x1' })).toEqual(error('invalid_message', 'x1', 'type'));
    await expectAlive(alice);
    expect(await errorFor(alice, { type: 5, id: 'x2' })).toEqual(error('invalid_message', 'x2', 'type'));
    await expectAlive(alice);
    expect(await errorFor(alice, { type: null, id: 7 })).toEqual(error('invalid_message', 7, 'type'));
    await expectAlive(alice);
    expect(await errorFor(alice, '[1,2]')).toEqual(error('invalid_message', null, 'type'));
    await expectAlive(alice);
    await expectBystanderUntouched(bob);
  });

  it('invalid_message with the path of the bad field of a user_message', async () => {
    const { env, alice, bob } = await setup();
    const cases: Array<[Frame, string | null, string]> = [
      [{ type: 'user_message', id: 'm1', thread_id: 'bad thread!', text: 'hi' }, 'm1', 'thread_id'],
      [{ type: 'user_message', id: 'm2', thread_id: 'x'.repeat(129), text: 'hi' }, 'm2', 'thread_id'],
      [{ type: 'user_message', id: 'm3', text: 'hi' }, 'm3', 'thread_id'],
      [{ type: 'user_message', id: 'm4', thread_id: 't1', text: 'x'.repeat(32769) }, 'm4', 'text'],
      [{ type: 'user_message', id: 'm5', thread_id: 't1', text: '' }, 'm5', 'text'],
      [{ type: 'user_message', id: 'i'.repeat(129), thread_id: 't1', text: 'hi' }, 'i'.repeat(129), 'id'],
      [{ type: 'user_message', id: '', thread_id: 't1', text: 'hi' }, '', 'id'],
      [{ type: 'user_message', thread_id: 't1', text: 'hi' }, null, 'id'],
      [{ type: 'cancel', id: 'c1' }, 'c1', 'run_id'],
    ];
    for (const [frame, ref, path] of cases) {
      expect(await errorFor(alice, frame)).toEqual(error('invalid_message', ref, path));
      await expectAlive(alice);
    }
    // None of them started anything.
    expect(env.gateway.runs.liveRuns).toBe(0);
    expect((await env.gateway.engine.head('alice')).lastSeq).toBe(0);
    // The limits are inclusive: the longest valid id, thread and text are accepted.
    const ack = await alice.message('i'.repeat(128), 'T'.repeat(128), 'x'.repeat(32768));
    expect(ack).toMatchObject({ type: 'ack', status: 'started', id: 'i'.repeat(128), thread_id: 'T'.repeat(128) });
    await alice.runEvents(ack.run_id);
    await expectBystanderUntouched(bob);
  });

  it('unknown_type', async () => {
    const { alice, bob } = await setup();
    expect(await errorFor(alice, { type: 'subscribe', id: 'u1' })).toEqual(error('unknown_type', 'u1'));
    await expectAlive(alice);
    expect(await errorFor(alice, { type: '', id: 2 })).toEqual(error('unknown_type', 2));
    await expectAlive(alice);
    await expectBystanderUntouched(bob);
  });

  it('unsupported_binary, in order with the other frames', async () => {
    const { alice, bob } = await setup();
    alice.send({ type: 'ping', id: 'before' });
    expect(await errorFor(alice, Buffer.from('{"type":"ping","id":"bin"}'))).toEqual(error('unsupported_binary', null));
    alice.send({ type: 'ping', id: 'after' });
    await alice.waitFor((f) => f.type === 'pong' && f.id === 'after', 5000, 'pong after');
    expect(alice.frames.slice(1).map((f) => f.id ?? f.code)).toEqual(['before', 'unsupported_binary', 'after']);
    await expectAlive(alice);
    await expectBystanderUntouched(bob);
  });

  it('thread_busy under the reject policy (and the id may be retried)', async () => {
    const { env, alice, bob } = await setup({ threadPolicy: 'reject' });
    const first = await alice.message('m1', 't1', '/hang busy');
    expect(first).toMatchObject({ type: 'ack', status: 'started' });
    expect(await alice.message('m2', 't1', 'second')).toEqual(error('thread_busy', 'm2'));
    await expectAlive(alice);
    expect(env.gateway.runs.liveRuns).toBe(1);
    alice.send({ type: 'cancel', id: 'c1', run_id: first.run_id });
    await alice.runEvents(first.run_id);
    // thread_busy released the id: the same id now starts a run.
    const from = alice.frames.length;
    alice.send({ type: 'user_message', id: 'm2', thread_id: 't1', text: 'second' });
    const retry = await alice.waitFor((f) => f.id === 'm2' || f.ref === 'm2', 5000, 'reply to the retry', from);
    expect(retry).toMatchObject({ type: 'ack', status: 'started' });
    await alice.runEvents(retry.run_id);
    await expectBystanderUntouched(bob);
  });

  it('run_not_found for an unknown and for an ended run', async () => {
    const { alice, bob } = await setup();
    expect(await errorFor(alice, { type: 'cancel', id: 'c1', run_id: 'run_nope' })).toEqual(error('run_not_found', 'c1'));
    await expectAlive(alice);
    const ack = await alice.message('m1', 't1', 'quick one');
    await alice.runEvents(ack.run_id);
    expect(await errorFor(alice, { type: 'cancel', id: 'c2', run_id: ack.run_id })).toEqual(error('run_not_found', 'c2'));
    await expectAlive(alice);
    await expectBystanderUntouched(bob);
  });

  it("forbidden when cancelling another user's run, which keeps running", async () => {
    const { env, alice, bob } = await setup();
    const ack = await bob.message('b1', 't1', '/hang mine');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    await bob.waitFor((f) => f.type === 'agent_started' && f.run_id === ack.run_id, 5000, 'agent_started');
    expect(await errorFor(alice, { type: 'cancel', id: 'c1', run_id: ack.run_id })).toEqual(error('forbidden', 'c1'));
    await expectAlive(alice);
    expect(env.gateway.runs.liveRuns).toBe(1);
    // Alice never sees bob's events; bob cancels his own run.
    bob.send({ type: 'cancel', id: 'c2', run_id: ack.run_id });
    const events = await bob.runEvents(ack.run_id);
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    expect(alice.events()).toEqual([]);
    await expectAlive(bob);
  });

  it('already_authenticated', async () => {
    const { env, alice, bob } = await setup();
    expect(await errorFor(alice, { type: 'auth', token: await env.token('bob') })).toEqual(error('already_authenticated', null));
    await expectAlive(alice);
    await expectBystanderUntouched(bob);
  });
});

describe('rate limit (ManualClock refills the bucket)', () => {
  it('burst + N frames at once get exactly N rate_limited errors; refilled tokens work again', async () => {
    const clock = new ManualClock();
    const { alice, bob } = await setup({ clock, heartbeatMs: 3_600_000, rateLimitPerSec: 2, rateLimitBurst: 5 });
    for (let id = 1; id <= 8; id++) alice.send({ type: 'ping', id });
    await alice.waitForCount((f) => f.type === 'pong' || f.type === 'error', 8, 5000, 'answers');
    expect(alice.frames.slice(1)).toEqual([
      ...[1, 2, 3, 4, 5].map((id) => ({ type: 'pong', id, server_time: expect.any(String) })),
      error('rate_limited', 6),
      error('rate_limited', 7),
      error('rate_limited', 8),
    ]);
    // One second refills 2 tokens (2/s): two pings pass, the third is limited again.
    await clock.advance(1000);
    for (let id = 9; id <= 11; id++) alice.send({ type: 'ping', id });
    await alice.waitForCount((f) => f.type === 'pong' || f.type === 'error', 11, 5000, 'answers');
    expect(alice.frames.slice(9)).toEqual([
      { type: 'pong', id: 9, server_time: expect.any(String) },
      { type: 'pong', id: 10, server_time: expect.any(String) },
      error('rate_limited', 11),
    ]);
    // The bucket never holds more than the burst, however long the pause.
    await clock.advance(60_000);
    for (let id = 12; id <= 18; id++) alice.send({ type: 'ping', id });
    await alice.waitForCount((f) => f.type === 'pong' || f.type === 'error', 18, 5000, 'answers');
    expect(alice.frames.slice(12).map((f) => f.type)).toEqual(['pong', 'pong', 'pong', 'pong', 'pong', 'error', 'error']);
    expect(alice.frames.filter((f) => f.code === 'rate_limited')).toHaveLength(6);
    expect(alice.closeCode).toBeNull();
    // Bob has a bucket of his own.
    for (let id = 1; id <= 5; id++) bob.send({ type: 'ping', id: `alive-b${id}` });
    await bob.waitForCount((f) => f.type === 'pong', 5, 5000, 'bob pongs');
    expect(bob.frames.filter((f) => f.type === 'error')).toEqual([]);
    await clock.advance(1000);
    await expectBystanderUntouched(bob);
  });

  it('more than abuseLimit rate-limited frames in a row close with 1008', async () => {
    const clock = new ManualClock();
    const { env, alice, bob } = await setup({ clock, heartbeatMs: 3_600_000, rateLimitPerSec: 1, rateLimitBurst: 2, abuseLimit: 3 });
    for (let id = 1; id <= 7; id++) alice.send({ type: 'ping', id });
    expect(await alice.waitClosed()).toEqual({ code: 1008, reason: 'rate_limit_abuse' });
    expect(alice.frames.slice(1)).toEqual([
      { type: 'pong', id: 1, server_time: expect.any(String) },
      { type: 'pong', id: 2, server_time: expect.any(String) },
      error('rate_limited', 3),
      error('rate_limited', 4),
      error('rate_limited', 5),
    ]);
    await expectBystanderUntouched(bob);
    // A frame that passes resets the count: limited, limited, limited, pass, limited x3 stays open.
    const carol = await env.ready('carol');
    for (let id = 1; id <= 5; id++) carol.send({ type: 'ping', id });
    await carol.waitForCount((f) => f.type === 'pong' || f.type === 'error', 5, 5000, 'answers');
    await clock.advance(1000);
    for (let id = 6; id <= 9; id++) carol.send({ type: 'ping', id });
    await carol.waitForCount((f) => f.type === 'pong' || f.type === 'error', 9, 5000, 'answers');
    expect(carol.frames.slice(1).map((f) => f.type)).toEqual(['pong', 'pong', 'error', 'error', 'error', 'pong', 'error', 'error', 'error']);
    expect(carol.closeCode).toBeNull();
    await clock.advance(1000);
    await expectAlive(carol);
  });
});

describe('closing limits', () => {
  it('a frame over maxFrameBytes closes with 1009; one of exactly maxFrameBytes is fine', async () => {
    const { alice, bob } = await setup({ maxFrameBytes: 1024 });
    // Padded by a field the ping ignores: a ping id itself is at most 128 characters.
    const frameOf = (size: number) => {
      const base = JSON.stringify({ type: 'ping', id: 'big', pad: '' });
      return JSON.stringify({ type: 'ping', id: 'big', pad: 'x'.repeat(size - base.length) });
    };
    expect(Buffer.byteLength(frameOf(1024))).toBe(1024);
    alice.send(frameOf(1024));
    await alice.waitForType('pong');
    alice.send(frameOf(1025));
    expect((await alice.waitClosed()).code).toBe(1009);
    expect(alice.frames.map((f) => f.type)).toEqual(['connection_ready', 'pong']);
    await expectBystanderUntouched(bob);
  });

  it('more than inboxLimit frames before connection_ready close with 1008', async () => {
    const { env, bob } = await setup({ inboxLimit: 4 });
    const token = await env.token('alice');
    const flood = await env.connect('alice', { via: 'none' });
    await flood.opened;
    for (let id = 1; id <= 5; id++) flood.send({ type: 'ping', id });
    flood.send({ type: 'auth', token });
    expect(await flood.waitClosed()).toEqual({ code: 1008, reason: 'inbox_overflow' });
    expect(flood.frames).toEqual([]);
    await expectBystanderUntouched(bob);
  });

  it('exactly inboxLimit held frames are all dispatched after connection_ready, in order', async () => {
    const { env, bob } = await setup({ inboxLimit: 4 });
    const token = await env.token('alice');
    const held = await env.connect('alice', { via: 'none' });
    await held.opened;
    for (let id = 1; id <= 4; id++) held.send({ type: 'ping', id });
    held.send({ type: 'auth', token });
    await held.waitForCount((f) => f.type === 'pong', 4, 5000, 'pongs');
    expect(held.frames.map((f) => f.id ?? f.type)).toEqual(['connection_ready', 1, 2, 3, 4]);
    await expectAlive(held);
    await expectBystanderUntouched(bob);
  });

  it('a client that stops reading while events flow is closed with 4008 slow_consumer', async () => {
    const { env, bob } = await setup({
      slowConsumerBytes: 64 * 1024,
      rateLimitPerSec: 100_000,
      rateLimitBurst: 100_000,
    });
    // Same user, two connections: the writer's runs fan out to the reader, which stops reading.
    const reader = await env.ready('alice');
    const writer = await env.ready('alice');
    reader.ws.pause();
    const text = 'many words '.repeat(2900); // ~32 KB, carried by agent_started and tool_executing
    const closing = async () => (await env.gateway.metrics.connections.get()).values.find((v) => v.labels.state === 'CLOSING')?.value ?? 0;
    let runs = 0;
    while ((await closing()) === 0 && runs < 400) {
      const ack = await writer.message(`m${runs}`, 't1', text);
      expect(ack).toMatchObject({ type: 'ack', status: 'started' });
      // Once the writer has the terminal event, every event of the run was handed to the reader too.
      await writer.runEvents(ack.run_id);
      runs++;
    }
    // ~64 runs (about 4 MB) fill the loopback buffers here; 400 leaves a wide margin.
    expect(await closing()).toBe(1);
    expect(runs).toBeLessThan(400);
    expect(writer.closeCode).toBeNull();
    reader.ws.resume();
    expect(await reader.waitClosed(20_000)).toEqual({ code: 4008, reason: 'slow_consumer' });
    // What the reader did get is a gap-free prefix of the user's events.
    const got = reader.events();
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(writer.events().length);
    expect(seqProblem(got, 0)).toBeNull();
    await expectAlive(writer);
    await expectBystanderUntouched(bob);
  });
});
