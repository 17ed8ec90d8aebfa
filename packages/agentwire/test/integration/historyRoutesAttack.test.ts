import { randomUUID } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { HistoryStore } from '../../src/history/types.js';
import { fcParams } from '../helpers/fastCheck.js';
import { startGateway, TEST_SECRET, type TestGateway } from '../helpers/gateway.js';
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
import { forge, nowSec } from '../helpers/jwt.js';
import { createTestDatabase } from '../helpers/postgres.js';
import type { TestClient } from '../helpers/wsClient.js';

/**
 * Hostile requests to the history routes (PROTOCOL.md section 14), on both history stores: the
 * log-folded one (the gateway's default) and PostgreSQL (a database of this run's own on the
 * machine's PostgreSQL). Every answer is one of the documented ones, never a 5xx; another user's
 * thread is a 404 byte for byte like a missing one; the gateway keeps serving everyone else.
 */

let database: { url: string; drop: () => Promise<void> } | undefined;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.drop();
});

type Setup = HistorySetup;

function setup(kind: StoreKind): Promise<Setup> {
  return startHistorySetup(kind, { databaseUrl: database?.url });
}

/** An answer as these tests compare it: status, text and headers. */
type Reply = Pick<HttpReply, 'status' | 'text' | 'headers'>;

/** Status, text and headers only: the tests compare whole answers. */
async function call(env: Setup, method: string, path: string, options: HttpCallOptions = {}): Promise<Reply> {
  const { status, text, headers } = await httpCall(env.gateway.port, method, path, options);
  return { status, text, headers };
}

/** Sends raw bytes on a socket of its own and resolves with everything the server sent before closing it (or `untilText` appeared). */
function raw(env: Setup, bytes: string | Buffer, untilText?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(env.gateway.port, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (untilText && text.includes(untilText)) {
        socket.destroy();
        resolve(text);
      }
    });
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
    socket.write(bytes);
  });
}

function user(env: Setup, name: string): Promise<{ id: string; token: string; client: TestClient }> {
  return historyUser(env.gateway, name);
}

function completed(env: Setup, client: TestClient, threadId: string, text: string): Promise<string> {
  return completedRun(client, threadId, text, () => env.settled());
}

/** The documented answers of section 14 (and 405/413 of the routes); never a 5xx. */
const DOCUMENTED: ReadonlyMap<number, readonly string[]> = new Map([
  [400, ['invalid_request']],
  [401, ['token_missing', 'token_invalid', 'token_expired']],
  [404, ['not_found']],
  [405, ['method_not_allowed']],
  [413, ['invalid_request']],
]);

function expectDocumented(reply: Reply, what: string): void {
  if (reply.status === 200 || reply.status === 204) return;
  const codes = DOCUMENTED.get(reply.status);
  expect(codes, `${what} answered ${reply.status} ${reply.text}`).toBeDefined();
  expect(codes, `${what}: ${reply.text}`).toContain((JSON.parse(reply.text) as { error: string }).error);
}

/** Headers that may differ between two answers of the same kind. */
const varying = (headers: HttpReply['headers']) => Object.fromEntries(Object.entries(headers).filter(([name]) => name !== 'date'));

const b64 = (text: string) => Buffer.from(text).toString('base64url');

describe.each<StoreKind>(['log-folded', 'postgres'])('history routes under attack (%s store)', (kind) => {
  let env: Setup | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  it('any hostile path, cursor, limit, method and token gets a documented answer and never shows another user’s thread', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    const bob = await user(env, 'bob');
    await completed(env, alice.client, 'secret-thread', 'alice-secret words');
    await completed(env, bob.client, 'mine', 'bob words');
    const expired = forge({ alg: 'HS256', typ: 'JWT' }, { sub: bob.id, exp: nowSec() - 60 }, TEST_SECRET);

    const threadId = fc.oneof(
      fc.constantFrom(
        'secret-thread',
        'mine',
        '__proto__',
        'constructor',
        'prototype',
        'hasOwnProperty',
        '..',
        '.',
        '%2e%2e',
        '%2E%2E%2Fsecret-thread',
        '..%2Fsecret-thread',
        'secret-thread%00',
        '%00',
        '%',
        '%E0%A4%A',
        '%C3%BC',
        '%F0%9F%92%A5',
        'a'.repeat(128),
        'a'.repeat(129),
        'x'.repeat(9000),
        'secret-thread%2F..',
        'SECRET-THREAD',
        'mine?',
      ),
      fc.string({ maxLength: 40 }).map(encodeURIComponent),
      fc.stringMatching(/^[A-Za-z0-9._:%-]{1,20}$/),
    );
    const cursor = fc.oneof(
      fc.string({ maxLength: 30 }),
      // The longest still fits Node's 16 KiB of request head with the longest thread id.
      fc.constantFrom('', '=', '====', 'AAAA', '-_-_', 'x'.repeat(513), 'x'.repeat(5000)),
      fc.jsonValue({ maxDepth: 3 }).map((value) => b64(JSON.stringify(value))),
      fc
        .tuple(
          fc.oneof(
            fc.date({ noInvalidDate: true }).map((date) => date.toISOString()),
            fc.constantFrom('1', '2026-02-30', '+275760-09-13T00:00:00.000Z', '0000-01-01T00:00:00.000Z', 'Infinity', '2026-12-04', '2026-12-04T10:00:00Z'),
          ),
          fc.oneof(fc.constantFrom('secret-thread', 'mine', 'a\u0000b', '__proto__'), fc.string({ maxLength: 10 })),
        )
        .map((key) => b64(JSON.stringify(key))),
      fc
        .tuple(fc.oneof(fc.integer(), fc.double(), fc.constant(2 ** 63)), fc.oneof(fc.integer(), fc.constant(-1)), fc.constantFrom(0, 1, 2, -1, 0.5))
        .map((position) => b64(JSON.stringify(position))),
      fc
        .tuple(fc.constantFrom('t1.', 'm1.', 't2.', ''), fc.oneof(fc.bigInt({ min: -1n, max: 10n ** 20n }).map(String), fc.string({ maxLength: 5 })))
        .map(([prefix, n]) => b64(prefix + n)),
    );
    const limit = fc.oneof(
      fc.integer({ min: -5, max: 300 }).map(String),
      fc.constantFrom('1e2', '0x10', '', ' 5', '5 ', '10.0', '007', '99999999999999999999', 'NaN'),
    );
    const token = fc.constantFrom<string | undefined>(bob.token, bob.token, undefined, 'garbage', expired, `${bob.token}x`);
    const method = fc.constantFrom('GET', 'GET', 'PATCH', 'DELETE', 'POST', 'PUT', 'HEAD', 'OPTIONS');
    const shape = fc.constantFrom('/v1/threads', '/v1/threads/<id>', '/v1/threads/<id>/messages', '/v1/threads/<id>/messages/', '/v1/threads/<id>/x');

    await fc.assert(
      fc.asyncProperty(
        method,
        shape,
        threadId,
        fc.option(cursor, { nil: undefined }),
        fc.option(limit, { nil: undefined }),
        token,
        fc.boolean(),
        async (verb, pattern, id, cursorValue, limitValue, bearer, tokenInQuery) => {
          const query = new URLSearchParams();
          if (cursorValue !== undefined) query.set('cursor', cursorValue);
          if (limitValue !== undefined) query.set('limit', limitValue);
          // A token in the query is never read: only the Authorization header counts.
          if (tokenInQuery) query.set('access_token', alice.token);
          const path = `${pattern.replace('<id>', id)}${query.size > 0 ? `?${query}` : ''}`;
          const body = verb === 'PATCH' ? JSON.stringify({ title: 'pwned' }) : undefined;
          const reply = await call(env!, verb, path, { ...(bearer ? { token: bearer } : {}), ...(body ? { body } : {}) });
          const what = `${verb} ${path.slice(0, 200)}`;
          // Paths that are not a route of section 14 fall through to the gateway's 404.
          if (reply.status === 404 && reply.text.includes('"detail"')) return;
          if (verb !== 'HEAD') expectDocumented(reply, what);
          else expect([200, 401, 404, 405]).toContain(reply.status);
          expect(reply.text).not.toContain('alice-secret');
          expect(reply.text).not.toContain('secret-thread"');
        },
      ),
      fcParams(120, 15_000),
    );

    // Alice's thread is untouched, the gateway still serves her.
    const list = await call(env, 'GET', '/v1/threads', { token: alice.token });
    expect(JSON.parse(list.text)).toMatchObject({ threads: [{ thread_id: 'secret-thread', title: 'alice-secret words' }] });
  }, 40_000);

  it('forged cursors, each a 400 (never a database error): dates JavaScript reads and PostgreSQL does not, NUL, out-of-range numbers', async () => {
    env = await setup(kind);
    const bob = await user(env, 'bob');
    await completed(env, bob.client, 'mine', 'bob words');
    const forged = [
      ['1', 'mine'],
      ['2026-02-30', 'mine'],
      ['2026-12-04T10:00:00Z', 'mine'],
      ['+275760-09-13T00:00:00.000Z', 'mine'],
      ['0000-01-01T00:00:00.000Z', 'mine'],
      ['2026-12-04T10:00:00.000Z', 'a\u0000b'],
      ['2026-12-04T10:00:00.000Z', 'x'.repeat(300)],
      [2 ** 53, 1, 0],
      [1, 2 ** 63, 1],
      [-1, 1, 1],
    ].map((key) => b64(JSON.stringify(key)));
    for (const cursor of [...forged, b64('t1.99999999999999999'), b64('m1.0'), b64('t1.-1'), '%%%', 'x'.repeat(513)]) {
      for (const path of ['/v1/threads', '/v1/threads/mine/messages']) {
        const reply = await call(env, 'GET', `${path}?cursor=${encodeURIComponent(cursor)}`, { token: bob.token });
        // A well-formed position of the other kind of page only pages (the cursor is opaque, not signed).
        if (reply.status === 200) continue;
        expect({ status: reply.status, body: JSON.parse(reply.text) }, `${path} ${Buffer.from(cursor, 'base64url').toString()}`).toEqual({
          status: 400,
          body: { error: 'invalid_request', message: 'cursor is not valid' },
        });
      }
    }
  });

  it('another user’s thread is a 404 with the same status, headers and body as a missing one, for every route', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    const bob = await user(env, 'bob');
    await completed(env, alice.client, 'hers', 'private');
    for (const [method, suffix, body] of [
      ['GET', '/messages', undefined],
      ['GET', '/messages?limit=1&cursor=AAAA', undefined],
      ['PATCH', '', '{"title":"x"}'],
      ['DELETE', '', undefined],
    ] as const) {
      const theirs = await call(env, method, `/v1/threads/hers${suffix}`, { token: bob.token, ...(body ? { body } : {}) });
      const missing = await call(env, method, `/v1/threads/nobodys${suffix}`, { token: bob.token, ...(body ? { body } : {}) });
      expect({ status: theirs.status, text: theirs.text, headers: varying(theirs.headers) }).toEqual({
        status: missing.status,
        text: missing.text,
        headers: varying(missing.headers),
      });
      if (!suffix.includes('cursor')) expect(theirs).toMatchObject({ status: 404, text: '{"error":"not_found"}' });
    }
    expect(JSON.parse((await call(env, 'GET', '/v1/threads/hers/messages', { token: alice.token })).text).messages).toHaveLength(2);
  });

  it('text PostgreSQL cannot hold as is (U+0000, unpaired surrogates) is stored, shown, and leaves other users’ history alone', async () => {
    env = await setup(kind);
    const mallory = await user(env, 'mallory');
    const bob = await user(env, 'bob');
    // The user message (and so the title and the demo answer) holds U+0000 and a lone surrogate.
    const hostile = 'nul \u0000 and \ud800 here';
    // The log-folded store shows them as sent; PostgreSQL as U+FFFD.
    const stored = (text: string) => text.replaceAll('\u0000', '\uFFFD').replaceAll('\ud800', '\uFFFD');
    const ack = await mallory.client.message(`id-\u0000-${randomUUID()}`, 'poison', hostile);
    expect(ack.type).toBe('ack');
    await mallory.client.runEvents(ack.run_id);
    await completed(env, bob.client, 'fine', 'bob is fine');
    await env.settled();

    const threads = JSON.parse((await call(env, 'GET', '/v1/threads', { token: mallory.token })).text);
    expect(threads.threads).toHaveLength(1);
    expect(stored(threads.threads[0].title)).toBe(stored(hostile));
    const messages = JSON.parse((await call(env, 'GET', '/v1/threads/poison/messages', { token: mallory.token })).text);
    expect(messages.messages.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant']);
    expect(stored(messages.messages[1].text)).toBe(stored(`echo: ${hostile}`));
    const renamed = await call(env, 'PATCH', '/v1/threads/poison', { token: mallory.token, body: JSON.stringify({ title: 'a\u0000b' }) });
    expect(renamed.status, renamed.text).toBe(200);
    expect(stored(JSON.parse(renamed.text).title)).toBe('a\uFFFDb');

    expect(JSON.parse((await call(env, 'GET', '/v1/threads/fine/messages', { token: bob.token })).text).messages.map((m: { text: string }) => m.text)).toEqual([
      'bob is fine',
      'echo: bob is fine',
    ]);
  });

  it('a user whose token `sub` holds U+0000 chats without holding up anyone else’s history', async () => {
    env = await setup(kind);
    const nul = await env.gateway.ready(`nul-\u0000-${randomUUID()}`);
    const bob = await user(env, 'bob');
    const ack = await nul.message(randomUUID(), 'poison', 'from a NUL user');
    await nul.runEvents(ack.run_id);
    await completed(env, bob.client, 'fine', 'bob is fine');
    await env.settled();
    expect(JSON.parse((await call(env, 'GET', '/v1/threads/fine/messages', { token: bob.token })).text).messages).toHaveLength(2);
  });

  it('a user whose token `sub` holds U+0000 gets documented answers from every route of their own history', async () => {
    env = await setup(kind);
    const sub = `nul-\u0000-${randomUUID()}`;
    const nul = await env.gateway.ready(sub);
    const ack = await nul.message(randomUUID(), 'own', 'from a NUL user');
    await nul.runEvents(ack.run_id);
    await env.settled();
    const token = await env.gateway.token(sub);
    const answers = [
      await call(env, 'GET', '/v1/threads', { token }),
      await call(env, 'GET', '/v1/threads/own/messages', { token }),
      await call(env, 'PATCH', '/v1/threads/own', { token, body: JSON.stringify({ title: 'renamed' }) }),
      await call(env, 'DELETE', '/v1/threads/own', { token }),
      await call(env, 'GET', '/v1/threads/own/messages', { token }),
    ];
    for (const answer of answers) expect(answer.status, answer.text).toBeLessThan(500);
    expect((await call(env, 'GET', '/readyz')).status).toBe(200);
  });

  it('a token whose `sub` holds an unpaired surrogate is token_invalid: stored as UTF-8 it would be the user with U+FFFD there', async () => {
    env = await setup(kind);
    const victim = await env.gateway.ready('victim-\uFFFD');
    await completed(env, victim, 'private', 'victim words');
    const forged = forge({ alg: 'HS256', typ: 'JWT' }, { sub: 'victim-\ud800', exp: nowSec() + 600 }, TEST_SECRET);
    for (const path of ['/v1/threads', '/v1/threads/private/messages']) {
      const reply = await call(env, 'GET', path, { token: forged });
      expect(reply.text).not.toContain('victim words');
      expect({ status: reply.status, body: JSON.parse(reply.text) }).toEqual({ status: 401, body: { error: 'token_invalid' } });
    }
  });

  it('rename bodies: oversized, deep, slow, chunked without end, and a flood of them, while other users are served', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    await completed(env, alice.client, 't', 'title me');
    const path = '/v1/threads/t';
    const auth = `authorization: Bearer ${alice.token}\r\nhost: x\r\n`;

    // Declared far past the bound: refused before reading, the connection closes.
    const huge = await raw(env, `PATCH ${path} HTTP/1.1\r\n${auth}content-length: 10000000000\r\n\r\n{"title":`);
    expect(huge).toMatch(/^HTTP\/1\.1 413 /);
    expect(huge.toLowerCase()).toContain('connection: close');
    // A chunked body over the discard bound is cut off with 413 and a close.
    const chunk = 'a'.repeat(64 * 1024);
    const chunked = `PATCH ${path} HTTP/1.1\r\n${auth}transfer-encoding: chunked\r\n\r\n${`${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(20)}`;
    expect(await raw(env, chunked)).toMatch(/^HTTP\/1\.1 413 /);
    // Deeply nested JSON inside the size bound is just not a title.
    const deep = '['.repeat(4000) + ']'.repeat(90);
    expect(await call(env, 'PATCH', path, { token: alice.token, body: deep })).toMatchObject({ status: 400 });
    // A content-length that is not a number, and a negative one.
    for (const length of ['abc', '-1', '1e3']) {
      const reply = await raw(env, `PATCH ${path} HTTP/1.1\r\n${auth}content-length: ${length}\r\n\r\n{"title":"x"}`, '\r\n\r\n');
      expect(reply).toMatch(/^HTTP\/1\.1 (400|413) /);
    }

    // Twenty requests whose chunked bodies never end: each waits on its own, nobody else does.
    const stalled: Socket[] = [];
    for (let i = 0; i < 20; i++) {
      const socket = connect(env.gateway.port, '127.0.0.1');
      socket.on('error', () => {});
      socket.write(`PATCH ${path} HTTP/1.1\r\n${auth}transfer-encoding: chunked\r\n\r\n5\r\n{"tit\r\n`);
      stalled.push(socket);
    }
    const other = await user(env, 'other');
    await completed(env, other.client, 'o', 'still served');
    expect(JSON.parse((await call(env, 'GET', '/v1/threads', { token: other.token })).text).threads).toHaveLength(1);
    // The stalled bodies end: each rename is answered in full.
    const answers = stalled.map(
      (socket) =>
        new Promise<string>((resolve) => {
          let text = '';
          socket.on('data', (data: Buffer) => {
            text += data.toString('latin1');
            if (text.includes('}')) resolve(text);
          });
        }),
    );
    for (const socket of stalled) socket.write('7\r\nle":"s"\r\n1\r\n}\r\n0\r\n\r\n');
    for (const answer of await Promise.all(answers)) expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    for (const socket of stalled) socket.destroy();
    expect(JSON.parse((await call(env, 'GET', '/v1/threads', { token: alice.token })).text).threads[0].title).toBe('s');
  });

  it('DELETE racing a streaming run and another DELETE: one 204, the run ends cancelled, the thread is gone everywhere', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    const ack = await alice.client.message(randomUUID(), 'racing', '/gated stream');
    await alice.client.waitFor((frame) => frame.type === 'agent_started' && frame.run_id === ack.run_id);
    for (let i = 0; i < 20; i++) env.agent.push('racing', { type: 'text_delta', text: `part ${i} ` });
    const [first, second] = await Promise.all([
      call(env, 'DELETE', '/v1/threads/racing', { token: alice.token }),
      call(env, 'DELETE', '/v1/threads/racing', { token: alice.token }),
    ]);
    expect([first.status, second.status].sort()).toContain(204);
    for (const reply of [first, second]) expect([204, 404]).toContain(reply.status);
    for (let i = 0; i < 20; i++) env.agent.push('racing', { type: 'text_delta', text: `late ${i} ` });
    const events = await alice.client.runEvents(ack.run_id);
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    await env.settled();
    expect((await call(env, 'GET', '/v1/threads/racing/messages', { token: alice.token })).status).toBe(404);
    expect(JSON.parse((await call(env, 'GET', '/v1/threads', { token: alice.token })).text).threads).toEqual([]);
    expect((await call(env, 'PATCH', '/v1/threads/racing', { token: alice.token, body: '{"title":"back?"}' })).status).toBe(404);
  });
});

describe.each(['log-folded', 'postgres'] as const)('DELETE of a thread with a queued run (%s store)', (kind) => {
  let env: Setup | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  // The queued run the deletion cancels still appends its agent_started (then its cancelled
  // agent_completed) after the deletion: it must not bring the deleted thread back.
  it('the thread stays deleted', async () => {
    env = await setup(kind);
    const alice = await user(env, 'alice');
    const first = await alice.client.message(randomUUID(), 'queued', '/gated stream');
    await alice.client.waitFor((frame) => frame.type === 'agent_started' && frame.run_id === first.run_id);
    const second = await alice.client.message(randomUUID(), 'queued', 'the queued one');
    expect(second).toMatchObject({ type: 'ack', status: 'queued' });
    await env.settled();
    expect((await call(env, 'DELETE', '/v1/threads/queued', { token: alice.token })).status).toBe(204);
    const events = await alice.client.runEvents(second.run_id);
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    await env.settled();
    expect(JSON.parse((await call(env, 'GET', '/v1/threads', { token: alice.token })).text).threads).toEqual([]);
    expect((await call(env, 'GET', '/v1/threads/queued/messages', { token: alice.token })).status).toBe(404);
  });
});

describe('a store whose answer cannot be written as JSON', () => {
  let gateway: TestGateway | undefined;
  afterEach(async () => {
    await gateway?.stop();
    gateway = undefined;
  });

  // What a store returns is data too: a value JSON.stringify refuses (here a BigInt; in practice
  // a page of long answers past V8's longest string) was thrown after the status line went out,
  // an unhandled rejection that ends the process.
  it('answers 503 and keeps serving', async () => {
    const answer = {
      id: 'r',
      role: 'assistant',
      runId: 'r',
      status: 'completed',
      text: '',
      thinking: [],
      toolCalls: [{ callId: 'c', tool: 't', args: { size: 1n } }],
      error: null,
      createdAt: '',
      completedAt: null,
    };
    const history: HistoryStore = {
      available: true,
      listThreads: async () => ({ items: [], nextCursor: null }),
      messages: async () => ({ items: [answer] as never, nextCursor: null, epoch: 'e', lastSeq: 0 }),
      renameThread: async () => null,
      deleteThread: async () => false,
      conversation: async () => [],
      record: () => {},
      close: async () => {},
    };
    gateway = await startGateway({ history });
    const env = { gateway } as Setup;
    const token = await gateway.token('u');
    const reply = await call(env, 'GET', '/v1/threads/t/messages', { token });
    expect({ status: reply.status, body: JSON.parse(reply.text) }).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    expect((await call(env, 'GET', '/healthz')).status).toBe(200);
  });
});
