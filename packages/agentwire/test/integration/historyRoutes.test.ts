import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { HistoryStore } from '../../src/history/types.js';
import { createRedisBackend, type RedisBackend } from '../../src/redis/index.js';
import { startGateway, TEST_SECRET, type TestGateway } from '../helpers/gateway.js';
import { brokenStore, historyUser, httpCall, type HttpCallOptions, type HttpReply } from '../helpers/historyHttp.js';
import { GatedAgent } from '../helpers/gatedAgent.js';
import { httpGet } from '../helpers/http.js';
import { forge, nowSec } from '../helpers/jwt.js';
import type { Frame, TestClient } from '../helpers/wsClient.js';
import { MACHINE_REDIS, deleteKeysUnder } from '../helpers/machineRedis.js';

// Section 14 over real sockets, on the memory engine and on Redis (the machine's Redis at
// 127.0.0.1:6379, a key prefix of this run's own): with Redis there are two gateways sharing
// the log, and every read goes to the node that did not take the message.

const PREFIX = `hist-${randomUUID().slice(0, 8)}`;
const noop = () => {};

interface Setup {
  readonly agent: GatedAgent;
  /** Where clients send messages. */
  readonly writer: TestGateway;
  /** Where the history routes are read (another node with Redis). */
  readonly reader: TestGateway;
  stop(): Promise<void>;
}

type Mode = 'memory' | 'redis';

async function setup(mode: Mode, history?: HistoryStore, options: { historyTurns?: number } = {}): Promise<Setup> {
  const agent = new GatedAgent();
  if (mode === 'memory') {
    const gateway = await startGateway({ agent, ...options, ...(history ? { history } : {}) });
    return { agent, writer: gateway, reader: gateway, stop: () => gateway.stop() };
  }
  const nodes: TestGateway[] = [];
  const backends: RedisBackend[] = [];
  for (const nodeId of ['a', 'b']) {
    const backend = createRedisBackend({
      url: MACHINE_REDIS,
      keyPrefix: PREFIX,
      retentionMs: 600_000,
      nodeId: `${PREFIX}-${nodeId}`,
      leaseMs: 60_000,
      onError: noop,
    });
    backends.push(backend);
    const { engine, runStore, threadMarks } = backend;
    nodes.push(await startGateway({ agent, engine, runStore, threadMarks, ...options, ...(history ? { history } : {}) }));
  }
  return {
    agent,
    writer: nodes[0]!,
    reader: nodes[1]!,
    async stop() {
      await Promise.all(nodes.map((node) => node.stop()));
      await Promise.all(backends.map((backend) => backend.close()));
    },
  };
}

afterAll(async () => {
  // The run's keys: they would expire with retention, but a test leaves nothing behind.
  await deleteKeysUnder(PREFIX);
});

function call(env: TestGateway, method: string, path: string, options: HttpCallOptions = {}): Promise<HttpReply> {
  return httpCall(env.port, method, path, options);
}

/** A user of the test: a connected client and the token for the routes. */
function user(env: Setup, name: string): Promise<{ id: string; token: string; client: TestClient }> {
  return historyUser(env.writer, name);
}

async function say(client: TestClient, threadId: string, text: string): Promise<Frame> {
  const ack = await client.message(randomUUID(), threadId, text);
  expect(ack.type).toBe('ack');
  return ack;
}

async function completed(client: TestClient, threadId: string, text: string): Promise<Frame> {
  const ack = await say(client, threadId, text);
  await client.runEvents(ack.run_id);
  return ack;
}

describe.each<Mode>(['memory', 'redis'])('history routes (%s engine)', (mode) => {
  let env: Setup | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  it('refuses requests without a valid bearer token with 401 and the reason', async () => {
    env = await setup(mode);
    const expired = forge({ alg: 'HS256', typ: 'JWT' }, { sub: 'u', exp: nowSec() - 60 }, TEST_SECRET);
    const missing = await call(env.reader, 'GET', '/v1/threads');
    expect(missing).toMatchObject({ status: 401, body: { error: 'token_missing' } });
    // JSON answers hold users' and agents' text: never to be sniffed as HTML.
    expect(missing.headers).toMatchObject({ 'content-type': 'application/json', 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' });
    expect(await call(env.reader, 'GET', '/v1/threads', { token: 'not-a-jwt' })).toMatchObject({ status: 401, body: { error: 'token_invalid' } });
    expect(await call(env.reader, 'GET', '/v1/threads/t1/messages', { token: expired })).toMatchObject({ status: 401, body: { error: 'token_expired' } });
    expect(await call(env.reader, 'DELETE', '/v1/threads/t1', { token: expired })).toMatchObject({ status: 401, body: { error: 'token_expired' } });
  });

  it("lists the user's own threads, most recently updated first, with messages; another user's thread is a 404 like a missing one", async () => {
    env = await setup(mode);
    const alice = await user(env, 'alice');
    const bob = await user(env, 'bob');
    const long = `${'x'.repeat(90)} long`;
    const first = await completed(alice.client, 't1', long);
    await completed(alice.client, 't2', 'second thread');
    await completed(alice.client, 't1', 'again on t1');
    await completed(bob.client, 't1', 'bob here');

    const list = await call(env.reader, 'GET', '/v1/threads', { token: alice.token });
    expect(list.status).toBe(200);
    expect(list.body.next_cursor).toBeNull();
    expect(list.body.threads.map((t: any) => [t.thread_id, t.title, t.last_run.status])).toEqual([
      ['t1', long.slice(0, 80), 'completed'],
      ['t2', 'second thread', 'completed'],
    ]);
    const messages = await call(env.reader, 'GET', '/v1/threads/t1/messages', { token: alice.token });
    expect(messages.status).toBe(200);
    expect(messages.body.messages.map((m: any) => [m.role, m.text])).toEqual([
      ['user', long],
      ['assistant', `echo: ${long}`],
      ['user', 'again on t1'],
      ['assistant', 'echo: again on t1'],
    ]);
    expect(messages.body.messages[1]).toMatchObject({
      id: first.run_id,
      run_id: first.run_id,
      status: 'completed',
      thinking: [`about ${long}`],
      tool_calls: [],
      error: null,
    });
    expect(messages.body.messages[0].id).toBe(alice.client.frames.find((f) => f.run_id === first.run_id && f.type === 'agent_started')!.message_id);

    // Bob: his own t1 only; Alice's t2 is exactly a missing thread, for every route.
    const bobs = await call(env.reader, 'GET', '/v1/threads', { token: bob.token });
    expect(bobs.body.threads.map((t: any) => t.thread_id)).toEqual(['t1']);
    expect((await call(env.reader, 'GET', '/v1/threads/t1/messages', { token: bob.token })).body.messages.map((m: any) => m.text)).toEqual([
      'bob here',
      'echo: bob here',
    ]);
    const missing = await call(env.reader, 'GET', '/v1/threads/nope/messages', { token: bob.token });
    for (const reply of [
      await call(env.reader, 'GET', '/v1/threads/t2/messages', { token: bob.token }),
      await call(env.reader, 'PATCH', '/v1/threads/t2', { token: bob.token, body: '{"title":"mine now"}' }),
      await call(env.reader, 'DELETE', '/v1/threads/t2', { token: bob.token }),
      missing,
    ]) {
      expect(reply).toMatchObject({ status: 404, body: { error: 'not_found' } });
    }
    expect((await call(env.reader, 'GET', '/v1/threads', { token: alice.token })).body.threads.map((t: any) => [t.thread_id, t.title])).toEqual([
      ['t1', long.slice(0, 80)],
      ['t2', 'second thread'],
    ]);
  });

  it('a node that answered before answers what any node appended since (its fold is kept and follows the log)', async () => {
    env = await setup(mode);
    const alice = await user(env, 'alice');
    await completed(alice.client, 't1', 'first');
    const threads = async () => (await call(env!.reader, 'GET', '/v1/threads', { token: alice.token })).body.threads.map((t: any) => t.thread_id);
    const texts = async (threadId: string) => (await call(env!.reader, 'GET', `/v1/threads/${threadId}/messages`, { token: alice.token })).body;
    expect(await threads()).toEqual(['t1']);
    await completed(alice.client, 't2', 'second');
    expect(await threads()).toEqual(['t2', 't1']);
    await completed(alice.client, 't1', 'third');
    expect(await threads()).toEqual(['t1', 't2']);
    const page = await texts('t1');
    expect(page.messages.map((m: any) => m.text)).toEqual(['first', 'echo: first', 'third', 'echo: third']);
    expect(page.last_seq).toBe(alice.client.frames.filter((f) => typeof f.seq === 'number').at(-1)!.seq);
  });

  it('pages threads and messages with opaque cursors, and refuses bad parameters with 400', async () => {
    env = await setup(mode);
    const alice = await user(env, 'alice');
    const bob = await user(env, 'bob');
    for (const thread of ['a', 'b', 'c', 'd', 'e']) await completed(alice.client, thread, `hello ${thread}`);
    for (const text of ['one', 'two', 'three']) await completed(alice.client, 'e', text);
    await completed(bob.client, 'zz', 'bob');

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: HttpReply = await call(env.reader, 'GET', `/v1/threads?limit=2${cursor ? `&cursor=${cursor}` : ''}`, { token: alice.token });
      expect(page.status).toBe(200);
      expect(page.body.threads.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.threads.map((t: any) => t.thread_id));
      cursor = page.body.next_cursor;
      // A cursor of Alice's only pages Bob's own data for Bob.
      if (cursor)
        expect((await call(env.reader, 'GET', `/v1/threads?cursor=${cursor}`, { token: bob.token })).body.threads.every((t: any) => t.thread_id === 'zz')).toBe(
          true,
        );
    } while (cursor);
    expect(seen).toEqual(['e', 'd', 'c', 'b', 'a']);

    const newest = await call(env.reader, 'GET', '/v1/threads/e/messages?limit=3', { token: alice.token });
    expect(newest.body.messages.map((m: any) => m.text)).toEqual(['echo: two', 'three', 'echo: three']);
    const older = await call(env.reader, 'GET', `/v1/threads/e/messages?limit=3&cursor=${newest.body.next_cursor}`, { token: alice.token });
    expect(older.body.messages.map((m: any) => m.text)).toEqual(['one', 'echo: one', 'two']);
    const oldest = await call(env.reader, 'GET', `/v1/threads/e/messages?limit=3&cursor=${older.body.next_cursor}`, { token: alice.token });
    expect(oldest.body.messages.map((m: any) => m.text)).toEqual(['hello e', 'echo: hello e']);
    expect(oldest.body.next_cursor).toBeNull();

    for (const query of [
      'limit=0',
      'limit=101',
      'limit=abc',
      'limit=1.5',
      'cursor=',
      'cursor=%%%',
      `cursor=${'A'.repeat(600)}`,
      `cursor=${newest.body.next_cursor}`,
    ]) {
      const reply = await call(env.reader, 'GET', `/v1/threads?${query}`, { token: alice.token });
      expect(reply.status, query).toBe(400);
      expect(reply.body).toMatchObject({ error: 'invalid_request' });
      expect(typeof reply.body.message).toBe('string');
    }
    expect((await call(env.reader, 'GET', '/v1/threads/e/messages?limit=201', { token: alice.token })).status).toBe(400);
    expect((await call(env.reader, 'GET', '/v1/threads/bad%20id/messages', { token: alice.token })).status).toBe(400);
    expect((await call(env.reader, 'GET', '/v1/threads/%E0%A4%A/messages', { token: alice.token })).status).toBe(400);
  });

  it('renames a thread (visible on every node) and refuses hostile bodies', async () => {
    env = await setup(mode);
    const alice = await user(env, 'alice');
    await completed(alice.client, 't1', 'first words');
    const renamed = await call(env.writer, 'PATCH', '/v1/threads/t1', { token: alice.token, body: JSON.stringify({ title: 'Renamed ✓' }) });
    expect(renamed).toMatchObject({ status: 200, body: { thread_id: 't1', title: 'Renamed ✓', last_run: { status: 'completed' } } });
    await completed(alice.client, 't1', 'more words');
    expect((await call(env.reader, 'GET', '/v1/threads', { token: alice.token })).body.threads[0].title).toBe('Renamed ✓');

    for (const body of [
      '',
      'nope',
      '[]',
      'null',
      '"x"',
      '{}',
      '{"title":""}',
      '{"title":5}',
      `{"title":"${'y'.repeat(201)}"}`,
      '{"__proto__":{"title":"x"}}',
      '{"title":{"toString":"x"}}',
    ]) {
      const reply = await call(env.reader, 'PATCH', '/v1/threads/t1', { token: alice.token, body });
      expect(reply.status, body).toBe(400);
      expect(reply.body.error).toBe('invalid_request');
    }
    expect((await call(env.reader, 'PATCH', '/v1/threads/t1', { token: alice.token, body: `{"title":"${'z'.repeat(5000)}"}` })).status).toBe(413);
    expect((await call(env.reader, 'GET', '/v1/threads', { token: alice.token })).body.threads[0].title).toBe('Renamed ✓');
  });

  it('DELETE cancels the thread’s running and queued runs and erases it; the id can be used again', async () => {
    env = await setup(mode);
    const alice = await user(env, 'alice');
    await completed(alice.client, 'keep', 'stays');
    const running = await say(alice.client, 'doomed', '/gated running');
    const queued = await say(alice.client, 'doomed', 'waiting behind');
    expect(queued.status).toBe('queued');
    await alice.client.waitFor((f) => f.type === 'agent_started' && f.run_id === running.run_id);
    const list = await call(env.reader, 'GET', '/v1/threads', { token: alice.token });
    expect(list.body.threads.find((t: any) => t.thread_id === 'doomed').last_run).toEqual({ run_id: queued.run_id, status: 'queued' });

    expect(await call(env.reader, 'DELETE', '/v1/threads/doomed', { token: alice.token })).toMatchObject({ status: 204, body: null });
    const ends = [await alice.client.runEvents(running.run_id), await alice.client.runEvents(queued.run_id)].map((events) => events.at(-1));
    expect(ends.map((e) => [e!.type, e!.status])).toEqual([
      ['agent_completed', 'cancelled'],
      ['agent_completed', 'cancelled'],
    ]);
    expect((await call(env.reader, 'GET', '/v1/threads', { token: alice.token })).body.threads.map((t: any) => t.thread_id)).toEqual(['keep']);
    expect((await call(env.reader, 'GET', '/v1/threads/doomed/messages', { token: alice.token })).status).toBe(404);
    expect((await call(env.reader, 'DELETE', '/v1/threads/doomed', { token: alice.token })).status).toBe(404);

    await completed(alice.client, 'doomed', 'a fresh start');
    const reborn = await call(env.reader, 'GET', '/v1/threads/doomed/messages', { token: alice.token });
    expect(reborn.body.messages.map((m: any) => m.text)).toEqual(['a fresh start', 'echo: a fresh start']);
    expect((await call(env.reader, 'GET', '/v1/threads', { token: alice.token })).body.threads[0]).toMatchObject({
      thread_id: 'doomed',
      title: 'a fresh start',
    });
  });

  it('the epoch/last_seq seam: loading messages mid-answer, then connecting with that position, gives exactly the events after it', async () => {
    env = await setup(mode);
    const alice = await user(env, 'alice');
    await completed(alice.client, 's', 'before');
    const run = await say(alice.client, 's', '/gated stream');
    const parts = ['Hel', 'lo, ', 'wor', 'ld'];
    const isDelta = (f: Frame) => f.run_id === run.run_id && f.type === 'agent_text_delta';
    // The test gateways do not merge (streamFlushMs 0): each fragment is a delta event of its own.
    env.agent.push('s', { type: 'text_delta', text: parts[0]! });
    env.agent.push('s', { type: 'thinking', text: 'mid-answer' });
    env.agent.push('s', { type: 'text_delta', text: parts[1]! });
    await alice.client.waitForCount(isDelta, 2);

    const loaded = await call(env.reader, 'GET', '/v1/threads/s/messages', { token: alice.token });
    expect(loaded.status).toBe(200);
    const answer = loaded.body.messages.at(-1);
    expect(answer).toMatchObject({ run_id: run.run_id, status: 'running', completed_at: null, text: parts.slice(0, 2).join(''), thinking: ['mid-answer'] });

    const resumed = await env.reader.connect(alice.id, { lastSeq: loaded.body.last_seq, epoch: loaded.body.epoch });
    const ready = await resumed.ready();
    expect(ready).toMatchObject({ resumed: true, epoch: loaded.body.epoch });
    env.agent.push('s', { type: 'text_delta', text: parts[2]! });
    env.agent.push('s', { type: 'text_delta', text: parts[3]! });
    env.agent.finish('s', parts.join(''));
    const after = await resumed.runEvents(run.run_id);
    await alice.client.runEvents(run.run_id);
    const all = alice.client.events();
    // Exactly the user's events after last_seq, none before it, none missing.
    expect(resumed.events().map((e) => e.seq)).toEqual(all.filter((e) => e.seq > loaded.body.last_seq).map((e) => e.seq));
    // What the page showed plus what the connection streamed is the whole answer, no fragment twice.
    expect(
      answer.text +
        after
          .filter((e) => e.type === 'agent_text_delta')
          .map((e) => e.text)
          .join(''),
    ).toBe(parts.join(''));
    expect(after.filter((e) => e.type === 'agent_text_delta').map((e) => e.text)).toEqual(parts.slice(2));
    expect(after.at(-1)).toMatchObject({ type: 'agent_completed', text: 'Hello, world' });
  });

  it('agents receive the thread’s earlier turns, of that thread only, oldest first', async () => {
    env = await setup(mode);
    const alice = await user(env, 'alice');
    await completed(alice.client, 'c', 'one');
    await completed(alice.client, 'c', 'two');
    await completed(alice.client, 'other', 'elsewhere');
    await completed(alice.client, 'c', 'three');
    const inputs = await env.agent.started(4);
    expect(inputs[0]!.history).toEqual([]);
    expect(inputs[3]!.history).toEqual([
      { role: 'user', text: 'one' },
      { role: 'assistant', text: 'echo: one', toolCalls: [] },
      { role: 'user', text: 'two' },
      { role: 'assistant', text: 'echo: two', toolCalls: [] },
    ]);
  });

  it('the gateway’s historyTurns bounds the earlier turns agents receive to the newest ones', async () => {
    env = await setup(mode, undefined, { historyTurns: 2 });
    const alice = await user(env, 'alice');
    for (const text of ['one', 'two', 'three']) await completed(alice.client, 'c', text);
    await completed(alice.client, 'c', 'four');
    const inputs = await env.agent.started(4);
    // A turn is one message, the user's or the answer: the newest two of the six earlier ones.
    expect(inputs[3]!.history).toEqual([
      { role: 'user', text: 'three' },
      { role: 'assistant', text: 'echo: three', toolCalls: [] },
    ]);
  });
});

describe('history store failures', () => {
  let env: Setup | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  it('a failing store costs the agent its history, never the run; the routes answer 503', async () => {
    env = await setup('memory', brokenStore(true));
    const alice = await user(env, 'alice');
    await completed(alice.client, 'c', 'one');
    const ack = await say(alice.client, 'c', 'two');
    expect((await alice.client.runEvents(ack.run_id)).at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
    expect((await env.agent.started(2))[1]!.history).toEqual([]);
    expect(await call(env.reader, 'GET', '/v1/threads', { token: alice.token })).toMatchObject({ status: 503, body: { error: 'unavailable' } });
  });

  it('record() is told every entry the gateway appends, in seq order (write-behind archiving)', async () => {
    const recorded: Array<{ userId: string; seq: number }> = [];
    const store = brokenStore(true);
    env = await setup('memory', { ...store, record: (userId, entries) => recorded.push(...entries.map((e) => ({ userId, seq: e.seq }))) });
    const alice = await user(env, 'alice');
    await completed(alice.client, 'c', 'one');
    await completed(alice.client, 'c', 'two');
    expect(recorded).toEqual(alice.client.events().map((e) => ({ userId: alice.id, seq: e.seq })));
  });

  it('an agent that reads no earlier turns (historyTurns: 0) costs no lookup at its run start', async () => {
    let lookups = 0;
    const store: HistoryStore = {
      ...brokenStore(true),
      conversation: () => {
        lookups++;
        return Promise.resolve([]);
      },
    };
    const agent = Object.assign(new GatedAgent(), { historyTurns: 0 });
    const gateway = await startGateway({ agent, history: store });
    env = { agent, writer: gateway, reader: gateway, stop: () => gateway.stop() };
    const alice = await user(env, 'alice');
    await completed(alice.client, 'c', 'one');
    await completed(alice.client, 'c', 'two');
    expect((await agent.started(2)).map((input) => input.history)).toEqual([[], []]);
    expect(lookups).toBe(0);
  });

  it('/readyz is 503 while the history store is unavailable', async () => {
    const store = brokenStore(false);
    const agent = new GatedAgent();
    const gateway = await startGateway({ agent, history: store });
    env = { agent, writer: gateway, reader: gateway, stop: () => gateway.stop() };
    expect((await httpGet(`http://127.0.0.1:${gateway.port}/readyz`)).status).toBe(503);
  });
});
