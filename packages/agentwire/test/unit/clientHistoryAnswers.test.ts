import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HttpError, MalformedAnswerError, createClient, type AgentwireClient, type FetchFunction } from '@agentwire/client';
import { fcParams } from '../helpers/fastCheck.js';

// The SDK's history calls check every 2xx answer against PROTOCOL.md section 14: malformed items
// are dropped, an answer without a field it must have rejects naming it, what is kept is bounded
// and built from the checked fields only. The routes are answered by a fake fetch; the client
// never connects.

/** A client whose history routes all answer `status` with the body `text`. */
function answering(status: number, text: string): AgentwireClient {
  const fetch: FetchFunction = () => Promise.resolve({ status, text: () => Promise.resolve(text) });
  return createClient({ url: 'ws://127.0.0.1:9/ws', token: 'a-token', fetch });
}

const answer = (body: unknown) => answering(200, JSON.stringify(body));

/** The route's answer, as the caller gets it, for each route that has one. */
const calls = {
  threads: (client: AgentwireClient) => client.threads(),
  history: (client: AgentwireClient) => client.history('t1'),
  rename: (client: AgentwireClient) => client.renameThread('t1', 'Title'),
};

const id = fc.string({ minLength: 1, maxLength: 8 });
const text = fc.string({ maxLength: 12 });
const runStatus = fc.constantFrom('queued', 'running', 'completed', 'cancelled', 'error');
const json = fc.jsonValue({ maxDepth: 2 });

const thread = fc.record({
  thread_id: id,
  title: text,
  created_at: text,
  updated_at: text,
  last_run: fc.option(fc.record({ run_id: id, status: runStatus }), { nil: null }),
});
const toolCall = fc.oneof(
  fc.record({ call_id: id, tool: id, args: fc.dictionary(fc.string({ maxLength: 6 }), json, { maxKeys: 3 }) }),
  fc.record({ call_id: id, tool: id, args: fc.dictionary(fc.string({ maxLength: 6 }), json, { maxKeys: 3 }), ok: fc.boolean(), result: json }),
);
const userMessage = fc.record({ id, role: fc.constant('user'), run_id: id, text, created_at: text });
const assistantMessage = fc.record({
  id,
  role: fc.constant('assistant'),
  run_id: id,
  status: runStatus,
  text,
  thinking: fc.array(text, { maxLength: 3 }),
  tool_calls: fc.array(toolCall, { maxLength: 3 }),
  error: fc.option(fc.record({ code: text, message: text }), { nil: null }),
  created_at: text,
  completed_at: fc.option(text, { nil: null }),
});
const message = fc.oneof(userMessage, assistantMessage);

/** Leaves the field out. */
const MISSING = Symbol('missing');
/** Values that are wrong for a field of each kind (section 14's types). */
const WRONG = {
  id: [MISSING, 42, null, '', [], {}],
  string: [MISSING, 42, null, true, [], {}],
  nullableString: [MISSING, 42, true, [], {}],
  list: [MISSING, 42, null, 'x', {}],
  object: [MISSING, 42, null, 'x', []],
  nullableObject: [MISSING, 42, 'x', [], {}],
  enum: [MISSING, 42, null, 'bogus'],
  boolean: [42, null, 'true'],
} as const;
type Kind = keyof typeof WRONG;

const THREAD_FIELDS: Record<string, Kind> = { thread_id: 'id', title: 'string', created_at: 'string', updated_at: 'string', last_run: 'nullableObject' };
const USER_FIELDS: Record<string, Kind> = { id: 'id', role: 'enum', run_id: 'id', text: 'string', created_at: 'string' };
const ASSISTANT_FIELDS: Record<string, Kind> = {
  ...USER_FIELDS,
  status: 'enum',
  thinking: 'list',
  tool_calls: 'list',
  error: 'nullableObject',
  completed_at: 'nullableString',
};
const TOOL_CALL_FIELDS: Record<string, Kind> = { call_id: 'id', tool: 'id', args: 'object', ok: 'boolean' };

/** The item with one of its fields made wrong. */
function broken(
  item: fc.Arbitrary<Record<string, unknown>>,
  fields: (item: Record<string, unknown>) => Record<string, Kind>,
): fc.Arbitrary<Record<string, unknown>> {
  return item.chain((valid) => {
    const own = fields(valid);
    return fc.constantFrom(...Object.keys(own)).chain((field) =>
      fc.constantFrom<unknown>(...WRONG[own[field]!]).map((wrong) => {
        const copy = { ...valid };
        if (wrong === MISSING) delete copy[field];
        else copy[field] = wrong;
        return copy;
      }),
    );
  });
}

const messageFields = (m: Record<string, unknown>) => (m.role === 'user' ? USER_FIELDS : ASSISTANT_FIELDS);

/** Valid and malformed items in any order; `valid` says which is which. */
function mixed<T extends Record<string, unknown>>(valid: fc.Arbitrary<T>, malformed: fc.Arbitrary<Record<string, unknown>>, maxLength: number) {
  return fc.array(
    fc.oneof(
      valid.map((item) => ({ item: item as Record<string, unknown>, valid: true })),
      malformed.map((item) => ({ item, valid: false })),
    ),
    {
      maxLength,
    },
  );
}

/** Whether a route's answer, as returned, has the fields section 14 requires (not their items). */
function hasRequiredFields(call: keyof typeof calls, value: unknown): boolean {
  const answer = value as Record<string, unknown>;
  const cursor = answer.next_cursor === null || typeof answer.next_cursor === 'string';
  if (call === 'threads') return Array.isArray(answer.threads) && answer.threads.length <= 100 && cursor;
  if (call === 'history') {
    return answer.thread_id === 't1' && typeof answer.epoch === 'string' && Number.isSafeInteger(answer.last_seq) && Array.isArray(answer.messages) && cursor;
  }
  return answer.thread_id === 't1' && typeof answer.title === 'string';
}

/** What a JSON answer holds after the wire: what the client must return for a valid item. */
const wire = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

afterEach(() => {
  vi.unstubAllGlobals();
});

describe('history answers (PROTOCOL.md section 14) in the SDK', () => {
  it('calls the platform’s fetch as a plain function, as a browser requires', async () => {
    // A browser's fetch throws "Illegal invocation" when `this` is neither the window nor undefined.
    vi.stubGlobal('fetch', function (this: unknown) {
      if (this !== undefined && this !== globalThis) throw new TypeError('Illegal invocation');
      return Promise.resolve({ status: 200, text: () => Promise.resolve('{"threads":[],"next_cursor":null}') });
    });
    await expect(createClient({ url: 'ws://127.0.0.1:9/ws' }).threads()).resolves.toEqual({ threads: [], next_cursor: null });
  });

  it('a well-formed answer comes back as sent', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(thread, { maxLength: 5 }),
        fc.array(message, { maxLength: 5 }),
        fc.option(id, { nil: null }),
        async (threads, messages, cursor) => {
          const threadsPage = { threads, next_cursor: cursor };
          expect(await answer(threadsPage).threads()).toEqual(wire(threadsPage));
          const page = { thread_id: 't1', epoch: 'e1', last_seq: 7, messages, next_cursor: cursor };
          expect(await answer(page).history('t1')).toEqual(wire(page));
        },
      ),
      fcParams(200, 10_000),
    );
  });

  it('drops every malformed thread and message and keeps the others, in order', async () => {
    const threads = mixed(
      thread,
      broken(thread, () => THREAD_FIELDS),
      8,
    );
    const messages = mixed(message, broken(message, messageFields), 8);
    await fc.assert(
      fc.asyncProperty(threads, messages, async (threadItems, messageItems) => {
        const listed = await answer({ threads: threadItems.map((t) => t.item), next_cursor: null }).threads();
        expect(listed.threads).toEqual(wire(threadItems.filter((t) => t.valid).map((t) => t.item)));
        const page = await answer({ thread_id: 't1', epoch: 'e1', last_seq: 3, messages: messageItems.map((m) => m.item), next_cursor: 'c' }).history('t1');
        expect(page.messages).toEqual(wire(messageItems.filter((m) => m.valid).map((m) => m.item)));
      }),
      fcParams(300, 15_000),
    );
  });

  it('drops the malformed tool calls and thinking entries of a message, not the message', async () => {
    const toolCalls = mixed(
      toolCall,
      broken(toolCall, () => TOOL_CALL_FIELDS),
      6,
    );
    const thinking = fc.array(fc.oneof(text, json), { maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(assistantMessage, toolCalls, thinking, async (valid, callItems, thoughts) => {
        const sent = { ...valid, tool_calls: callItems.map((c) => c.item), thinking: thoughts };
        const page = await answer({ thread_id: 't1', epoch: 'e1', last_seq: 3, messages: [sent], next_cursor: null }).history('t1');
        expect(page.messages).toEqual([
          wire({ ...valid, tool_calls: callItems.filter((c) => c.valid).map((c) => c.item), thinking: thoughts.filter((t) => typeof t === 'string') }),
        ]);
      }),
      fcParams(300, 15_000),
    );
  });

  it('rejects an answer without a field it must have, naming the field', async () => {
    const cases: Array<{ call: keyof typeof calls; body: Record<string, unknown>; field: string; wrong: readonly unknown[] }> = [];
    const threadsPage = { threads: [], next_cursor: null };
    const page = { thread_id: 't1', epoch: 'e1', last_seq: 0, messages: [], next_cursor: null };
    const renamed = { thread_id: 't1', title: 'Title', created_at: 'a', updated_at: 'b', last_run: null };
    for (const [field, wrong] of Object.entries({ threads: WRONG.list, next_cursor: [MISSING, 42, '', [], {}] })) {
      cases.push({ call: 'threads', body: threadsPage, field, wrong });
    }
    const pageFields = {
      thread_id: [...WRONG.id, 't2'],
      epoch: WRONG.id,
      last_seq: [MISSING, -1, 1.5, 2 ** 53, '3', null],
      messages: WRONG.list,
      next_cursor: [MISSING, 42, '', [], {}],
    };
    for (const [field, wrong] of Object.entries(pageFields)) cases.push({ call: 'history', body: page, field, wrong });
    for (const [field, kind] of Object.entries(THREAD_FIELDS)) {
      cases.push({ call: 'rename', body: renamed, field, wrong: field === 'thread_id' ? [...WRONG[kind], 't2'] : WRONG[kind] });
    }
    for (const { call, body, field, wrong } of cases) {
      for (const value of wrong) {
        const sent: Record<string, unknown> = { ...body };
        if (value === MISSING) delete sent[field];
        else sent[field] = value;
        const error = await calls[call](answer(sent)).catch((e: unknown) => e);
        expect(error, `${call}: ${field} = ${String(value)}`).toBeInstanceOf(MalformedAnswerError);
        expect(error).toMatchObject({ status: 200, field });
        expect((error as Error).message).toContain(`"${field}"`);
      }
      // The same answer with the field right is taken.
      await expect(calls[call](answer(body))).resolves.toBeTypeOf('object');
    }
    expect((await calls.history(answer({ ...page, epoch: undefined })).catch((e: unknown) => e)) as Error).toHaveProperty(
      'message',
      'the answer to GET /v1/threads/t1/messages (HTTP 200) has no valid "epoch" (a non-empty string)',
    );
  });

  it('rejects a 2xx body that is not a JSON object', async () => {
    for (const body of ['', 'not json', 'null', '[]', '"text"', '42', '[{"threads":[]}]']) {
      for (const call of Object.values(calls)) {
        const error = await call(answering(200, body)).catch((e: unknown) => e);
        expect(error, body).toBeInstanceOf(MalformedAnswerError);
        expect(error).toMatchObject({ status: 200, field: '' });
      }
    }
    // DELETE answers 204 with no body: nothing to check.
    await expect(answering(204, '').deleteThread('t1')).resolves.toBeUndefined();
  });

  it('any JSON at all: resolves with a checked answer or rejects with MalformedAnswerError, nothing else', async () => {
    const field = fc.oneof(json, fc.array(fc.oneof(thread, message, json), { maxLength: 4 }), id);
    const body = fc.oneof(
      json,
      fc.record({ threads: field, next_cursor: field }, { requiredKeys: [] }),
      fc.record(
        { thread_id: fc.oneof(fc.constant('t1'), field), epoch: field, last_seq: fc.oneof(fc.nat(), field), messages: field, next_cursor: field },
        { requiredKeys: [] },
      ),
    );
    await fc.assert(
      fc.asyncProperty(body, async (sent) => {
        for (const [name, call] of Object.entries(calls)) {
          const result = await call(answer(sent)).catch((e: unknown) => e);
          if (result instanceof Error) expect(result).toBeInstanceOf(MalformedAnswerError);
          else expect(hasRequiredFields(name as keyof typeof calls, result), JSON.stringify(result)).toBe(true);
        }
      }),
      fcParams(500, 15_000),
    );
  });

  it('keeps none of an answer’s own `__proto__` keys or unknown fields, and changes no prototype', async () => {
    const threadJson = '{"__proto__":{"polluted":1},"thread_id":"t1","title":"T","created_at":"a","updated_at":"b","last_run":null,"extra":1}';
    const listed = await answering(200, `{"__proto__":{"polluted":1},"threads":[${threadJson}],"next_cursor":null}`).threads();
    expect(listed).toEqual({ threads: [{ thread_id: 't1', title: 'T', created_at: 'a', updated_at: 'b', last_run: null }], next_cursor: null });
    for (const value of [listed, listed.threads[0]]) {
      expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
      expect(Object.hasOwn(value!, '__proto__')).toBe(false);
      expect(value).not.toHaveProperty('polluted');
    }
    expect({}).not.toHaveProperty('polluted');
    // Fields given only inside `__proto__` are not the object's: the thread is malformed.
    const hidden = await answering(
      200,
      `{"threads":[{"__proto__":{"thread_id":"t1","title":"T","created_at":"a","updated_at":"b","last_run":null}}],"next_cursor":null}`,
    ).threads();
    expect(hidden.threads).toEqual([]);
    // Nor do they stand in for an answer's required fields.
    const error = await answering(200, '{"__proto__":{"threads":[],"next_cursor":null}}')
      .threads()
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'MalformedAnswerError', field: 'threads' });
  });

  it('bounds what it keeps of huge arrays: 100 threads, 200 messages, 10 000 thinking entries and tool calls per message', async () => {
    const oneThread = { thread_id: 't', title: 'T', created_at: 'a', updated_at: 'b', last_run: null };
    // 5000 threads: as many as fit in the 1 MiB a threads answer is read up to.
    const listed = await answer({ threads: Array.from({ length: 5000 }, () => oneThread), next_cursor: null }).threads();
    expect(listed.threads).toHaveLength(100);
    const user = { id: 'm', role: 'user', run_id: 'r', text: 'hi', created_at: 'a' };
    const assistant = {
      id: 'r',
      role: 'assistant',
      run_id: 'r',
      status: 'running',
      text: '',
      thinking: Array.from({ length: 50_000 }, () => 'x'),
      tool_calls: Array.from({ length: 50_000 }, (_, i) => ({ call_id: `c${i}`, tool: 'calc', args: {} })),
      error: null,
      created_at: 'a',
      completed_at: null,
    };
    const page = await answer({
      thread_id: 't1',
      epoch: 'e',
      last_seq: 1,
      messages: [assistant, ...Array.from({ length: 50_000 }, () => user)],
      next_cursor: null,
    }).history('t1');
    expect(page.messages).toHaveLength(200);
    const kept = page.messages[0]!;
    expect(kept.role === 'assistant' && [kept.thinking.length, kept.tool_calls.length]).toEqual([10_000, 10_000]);
  });

  it('an error status rejects with HttpError, its code and message cut to 100 and 500 characters', async () => {
    // Within the 64 KiB of an error answer that is read (past it the answer is not JSON: http_error).
    const huge = await answering(503, JSON.stringify({ error: 'e'.repeat(20_000), message: 'm'.repeat(40_000) }))
      .threads()
      .catch((e: unknown) => e);
    expect(huge).toBeInstanceOf(HttpError);
    expect(huge).toMatchObject({ status: 503, code: 'e'.repeat(100) });
    expect((huge as Error).message).toBe(`HTTP 503 ${'e'.repeat(100)}: ${'m'.repeat(500)}`);
    for (const body of ['', 'not json', '[]', '{"error":42}', '{"__proto__":{"error":"x"}}']) {
      await expect(answering(404, body).history('t1'), body).rejects.toMatchObject({ name: 'HttpError', status: 404, code: 'http_error' });
    }
  });
});
