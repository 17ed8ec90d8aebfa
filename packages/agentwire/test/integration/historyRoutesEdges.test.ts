import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from '@agentwire/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryThreadMarks, type ThreadMark, type ThreadMarkStore } from '../../src/history/threadMarks.js';
import { createRedisBackend } from '../../src/redis/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import {
  completedRun,
  historyUser,
  httpCall,
  startHistorySetup,
  type HistorySetup,
  type HttpCallOptions,
  type HttpReply,
  type StoreKind,
} from '../helpers/historyHttp.js';
import { GatedAgent } from '../helpers/gatedAgent.js';
import { NextCallGate } from '../helpers/nextCallGate.js';
import { createTestDatabase } from '../helpers/postgres.js';
import type { TestClient } from '../helpers/wsClient.js';
import { MACHINE_REDIS, deleteKeysUnder } from '../helpers/machineRedis.js';

/**
 * Edges of the history routes (PROTOCOL.md section 14) that hostile-but-valid requests reach, on
 * both stores: the log-folded one and PostgreSQL (a database of this run's own on the machine's
 * PostgreSQL). Each test here failed before the fix its comment names.
 */

let database: { url: string; drop: () => Promise<void> } | undefined;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.drop();
  // The run's keys: they would expire with retention, but a test leaves nothing behind.
  await deleteKeysUnder(PREFIX);
});

const PREFIX = `edges-${randomUUID().slice(0, 8)}`;

/** The real clock moved by `offsetMs`: a gateway whose clock is not the database server's. */
function skewedClock(offsetMs: number): Clock {
  return { ...systemClock, now: () => systemClock.now() + offsetMs };
}

type Setup = HistorySetup;

function setup(kind: StoreKind, clock: Clock = systemClock): Promise<Setup> {
  return startHistorySetup(kind, { databaseUrl: database?.url, clock });
}

/** Status and JSON body only: the tests compare whole answers. */
async function call(env: Setup, method: string, path: string, options: HttpCallOptions = {}): Promise<Pick<HttpReply, 'status' | 'body'>> {
  const { status, body } = await httpCall(env.gateway.port, method, path, options);
  return { status, body };
}

function user(env: Setup, name: string): Promise<{ id: string; token: string; client: TestClient }> {
  return historyUser(env.gateway, name);
}

function completed(env: Setup, client: TestClient, threadId: string, text: string): Promise<string> {
  return completedRun(client, threadId, text, () => env.settled());
}

describe.each<StoreKind>(['log-folded', 'postgres'])('history route edges (%s store)', (kind) => {
  let env: Setup | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  // A title is 1..200 characters, counted in code points, and is answered as given. PostgreSQL's
  // rows were cut to 200 UTF-16 units: 200 emoji came back as 100, and a title of 'a' and 100
  // emoji ended in half a surrogate pair.
  it('a title of astral characters is answered whole, never cut inside a character', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    await completed(env, alice.client, 't', 'first words');
    for (const title of ['😀'.repeat(200), `a${'😀'.repeat(100)}`, `${'x'.repeat(199)}😀`]) {
      const renamed = await call(env, 'PATCH', '/v1/threads/t', { token: alice.token, body: JSON.stringify({ title }) });
      expect(renamed.status).toBe(200);
      expect(renamed.body.title).toBe(title);
      expect((await call(env, 'GET', '/v1/threads', { token: alice.token })).body.threads[0].title).toBe(title);
    }
    const tooLong = await call(env, 'PATCH', '/v1/threads/t', { token: alice.token, body: JSON.stringify({ title: '😀'.repeat(201) }) });
    expect(tooLong).toEqual({ status: 400, body: { error: 'invalid_request', message: 'title must be 1..200 characters' } });
  });

  // A query may hold '?' (RFC 3986): everything after the first one is the query. The routes
  // split the URL at every '?' and read only up to the second, so `?x=?&limit=0` was a 200.
  it('every parameter of the query counts, also after a second "?"', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    await completed(env, alice.client, 't', 'words');
    for (const path of ['/v1/threads?x=?&limit=0', '/v1/threads/t/messages?x=?&limit=0', '/v1/threads?limit=1?']) {
      const reply = await call(env, 'GET', path, { token: alice.token });
      expect({ path, status: reply.status, error: reply.body.error }).toEqual({ path, status: 400, error: 'invalid_request' });
      expect(reply.body.message).toMatch(/^limit /);
    }
    const cursor = await call(env, 'GET', '/v1/threads?cursor=AAAA?', { token: alice.token });
    expect(cursor).toEqual({ status: 400, body: { error: 'invalid_request', message: 'cursor is not valid' } });
  });
});

describe.each<StoreKind>(['log-folded', 'postgres'])('a thread whose newest run is queued (%s store)', (kind) => {
  let env: Setup | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  // `last_run` is the thread's newest run, and `queued` is one of its statuses. The PostgreSQL
  // store knows only archived events (a queued run has none yet): it named the run before it,
  // as running.
  it('lists the queued run as its last_run, in the list and in a rename’s answer', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    const first = await alice.client.message(randomUUID(), 'q', '/gated first');
    await alice.client.waitFor((frame) => frame.type === 'agent_started' && frame.run_id === first.run_id);
    const second = await alice.client.message(randomUUID(), 'q', 'second');
    expect(second).toMatchObject({ type: 'ack', status: 'queued' });
    await env.settled();
    const queued = { run_id: second.run_id, status: 'queued' };
    expect((await call(env, 'GET', '/v1/threads', { token: alice.token })).body.threads.map((t: { last_run: unknown }) => t.last_run)).toEqual([queued]);
    expect((await call(env, 'PATCH', '/v1/threads/q', { token: alice.token, body: '{"title":"named"}' })).body.last_run).toEqual(queued);
    env.agent.finish('q', 'done');
    await alice.client.runEvents(second.run_id);
    await env.settled();
    const last = (await call(env, 'GET', '/v1/threads', { token: alice.token })).body.threads[0].last_run;
    expect(last).toEqual({ run_id: second.run_id, status: 'completed' });
  });
});

describe.each<[StoreKind, number]>([
  ['log-folded', -5000],
  ['log-folded', 5000],
  ['postgres', -5000],
  ['postgres', 5000],
])('a thread id used again after its DELETE (%s store, gateway clock off by %i ms)', (kind, offsetMs) => {
  let env: Setup | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  // "Clear the chat" as a client builds it: DELETE the thread, then go on in the same thread id.
  // PostgreSQL's tombstone kept out every event of the thread stamped up to the database's now()
  // at the deletion, comparing the gateway's clock with the database server's: with the gateway
  // 5 s behind, what was said in the thread in the next 5 s was never archived.
  it('what is said after the deletion is the thread’s history', async () => {
    env = await setup(kind, skewedClock(offsetMs));
    const alice = await user(env, 'alice');
    await completed(env, alice.client, 'main', 'before the clear');
    expect((await call(env, 'DELETE', '/v1/threads/main', { token: alice.token })).status).toBe(204);
    await completed(env, alice.client, 'main', 'after the clear');

    const threads = await call(env, 'GET', '/v1/threads', { token: alice.token });
    expect(threads.body.threads.map((t: { thread_id: string; title: string }) => [t.thread_id, t.title])).toEqual([['main', 'after the clear']]);
    const messages = await call(env, 'GET', '/v1/threads/main/messages', { token: alice.token });
    expect(messages.status).toBe(200);
    expect(messages.body.messages.map((m: { text: string }) => m.text)).toEqual(['after the clear', 'echo: after the clear']);
  });
});

/** Thread marks whose next write waits until the test lets it go (a rename caught between its read and its write). */
class HeldMarks implements ThreadMarkStore {
  readonly #inner: ThreadMarkStore;
  readonly #gate = new NextCallGate();

  constructor(inner: ThreadMarkStore) {
    this.#inner = inner;
  }

  holdNextPut(): { arrived: Promise<void>; release: () => void } {
    return this.#gate.holdNext();
  }

  all(userId: string): Promise<Map<string, ThreadMark>> {
    return this.#inner.all(userId);
  }

  async put(userId: string, threadId: string, mark: ThreadMark, expected?: ThreadMark | null): Promise<boolean> {
    await this.#gate.pass();
    return (await this.#inner.put(userId, threadId, mark, expected)) !== false;
  }
}

describe.each(['memory', 'redis'] as const)('a rename racing a DELETE of its thread (log-folded store, %s marks)', (marksKind) => {
  let stop: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await stop?.();
    stop = undefined;
  });

  // The log-folded store's rename read the thread's marks, then wrote the mark back with the new
  // title: a DELETE that wrote its deletion in between was overwritten, and the deleted thread,
  // messages and all, came back.
  it('the thread stays deleted', async () => {
    const agent = new GatedAgent();
    let marks: HeldMarks;
    let gateway: TestGateway;
    if (marksKind === 'memory') {
      marks = new HeldMarks(new MemoryThreadMarks());
      gateway = await startGateway({ agent, threadMarks: marks });
      stop = () => gateway.stop();
    } else {
      const backend = createRedisBackend({
        url: MACHINE_REDIS,
        keyPrefix: PREFIX,
        retentionMs: 600_000,
        nodeId: `${PREFIX}-a`,
        leaseMs: 60_000,
        onError: () => {},
      });
      marks = new HeldMarks(backend.threadMarks);
      gateway = await startGateway({ agent, engine: backend.engine, runStore: backend.runStore, threadMarks: marks });
      stop = async () => {
        await gateway.stop();
        await backend.close();
      };
    }
    const env = { gateway, agent, settled: async () => {}, stop: async () => {} };
    const alice = await user(env, 'alice');
    await completed(env, alice.client, 't', 'private words');

    const held = marks.holdNextPut();
    const renaming = call(env, 'PATCH', '/v1/threads/t', { token: alice.token, body: JSON.stringify({ title: 'renamed' }) });
    await held.arrived;
    expect((await call(env, 'DELETE', '/v1/threads/t', { token: alice.token })).status).toBe(204);
    held.release();
    expect(await renaming).toEqual({ status: 404, body: { error: 'not_found' } });

    expect((await call(env, 'GET', '/v1/threads', { token: alice.token })).body.threads).toEqual([]);
    expect(await call(env, 'GET', '/v1/threads/t/messages', { token: alice.token })).toEqual({ status: 404, body: { error: 'not_found' } });
  });
});
