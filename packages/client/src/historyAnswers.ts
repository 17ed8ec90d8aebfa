import type { HistoryAssistantMessage, HistoryMessage, HistoryPage, HistoryRunStatus, ThreadInfo, ThreadsPage } from './types.js';

// The 2xx answers of the history routes (PROTOCOL.md section 14), checked field by field: a
// server's answer is untrusted input. A malformed item of a list is dropped; an answer without a
// field it must have rejects. What is kept is built afresh from the checked fields only (nothing
// else of the answer, `__proto__` keys included, reaches the caller) and its lists are bounded.

/** Threads kept of one page: the most `limit` allows (section 14). */
const MAX_THREADS = 100;
/** Messages kept of one page: the most `limit` allows (section 14). */
const MAX_MESSAGES = 200;
/** Thinking entries, and tool calls, kept of one message (the gateway caps a run at 10 000 tool calls). */
const MAX_ENTRIES = 10_000;

/** A history route answered 2xx with a body that is not what PROTOCOL.md section 14 says. */
export class MalformedAnswerError extends Error {
  override readonly name = 'MalformedAnswerError';
  constructor(
    /** The HTTP status of the answer. */
    readonly status: number,
    /** The field that is missing or wrong (empty: the answer is not a JSON object). */
    readonly field: string,
    route: string,
    expected: string,
  ) {
    super(`the answer to ${route} (HTTP ${status}) ${field === '' ? 'is not a JSON object' : `has no valid "${field}" (${expected})`}`);
  }
}

type JsonObject = Readonly<Record<string, unknown>>;

/** Checks one value: the value to keep, or undefined when it does not have the expected shape. */
interface Reader<T> {
  /** What the value must be, for the error message. */
  readonly expected: string;
  read(value: unknown): T | undefined;
}

function objectOf(value: unknown): JsonObject | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
}

/** Reads the fields of one object of an answer; `problem` is the first one that was wrong. */
class Fields {
  problem: { readonly field: string; readonly expected: string } | null = null;
  constructor(readonly object: JsonObject) {}

  /** An own field only: whatever a polluted prototype holds is not the answer's. */
  raw(name: string): unknown {
    return Object.hasOwn(this.object, name) ? this.object[name] : undefined;
  }

  /** The field, checked; a wrong one makes the object malformed (its value is then never used). */
  get<T>(name: string, reader: Reader<T>): T {
    const value = reader.read(this.raw(name));
    if (value === undefined) this.problem ??= { field: name, expected: reader.expected };
    return value as T;
  }
}

const TEXT: Reader<string> = { expected: 'a string', read: (value) => (typeof value === 'string' ? value : undefined) };
const ID: Reader<string> = { expected: 'a non-empty string', read: (value) => (typeof value === 'string' && value !== '' ? value : undefined) };
const SEQ: Reader<number> = {
  expected: 'a non-negative integer',
  read: (value) => (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined),
};
const BOOLEAN: Reader<boolean> = { expected: 'true or false', read: (value) => (typeof value === 'boolean' ? value : undefined) };
const PLAIN_OBJECT: Reader<Record<string, unknown>> = { expected: 'an object', read: (value) => objectOf(value) as Record<string, unknown> | undefined };

function oneOf<T extends string>(values: readonly T[]): Reader<T> {
  return { expected: `one of ${values.join(', ')}`, read: (value) => values.find((v) => v === value) };
}

function nullable<T>(reader: Reader<T>): Reader<T | null> {
  return { expected: `${reader.expected} or null`, read: (value) => (value === null ? null : reader.read(value)) };
}

/** An array of which the first `max` entries are read and the malformed ones dropped. */
function listOf<T>(max: number, item: Reader<T>): Reader<T[]> {
  return {
    expected: 'an array',
    read: (value) => {
      if (!Array.isArray(value)) return undefined;
      const kept: T[] = [];
      for (const entry of value.slice(0, max)) {
        const read = item.read(entry);
        if (read !== undefined) kept.push(read);
      }
      return kept;
    },
  };
}

/** An object built from its checked fields, or undefined if any of them is wrong. */
function objectReader<T>(expected: string, build: (fields: Fields) => T): Reader<T> {
  return {
    expected,
    read: (value) => {
      const object = objectOf(value);
      if (object === undefined) return undefined;
      const fields = new Fields(object);
      const built = build(fields);
      return fields.problem === null ? built : undefined;
    },
  };
}

const RUN_STATUS = oneOf<HistoryRunStatus>(['queued', 'running', 'completed', 'cancelled', 'error']);
const CURSOR = nullable(ID);
const LAST_RUN = nullable(objectReader('{run_id, status}', (fields) => ({ run_id: fields.get('run_id', ID), status: fields.get('status', RUN_STATUS) })));

function threadOf(fields: Fields): ThreadInfo {
  return {
    thread_id: fields.get('thread_id', ID),
    title: fields.get('title', TEXT),
    created_at: fields.get('created_at', TEXT),
    updated_at: fields.get('updated_at', TEXT),
    last_run: fields.get('last_run', LAST_RUN),
  };
}

const THREAD = objectReader('a thread', threadOf);

type ToolCall = HistoryAssistantMessage['tool_calls'][number];

const TOOL_CALL = objectReader<ToolCall>('a tool call', (fields) => {
  const call = { call_id: fields.get('call_id', ID), tool: fields.get('tool', ID), args: fields.get('args', PLAIN_OBJECT) };
  // `ok` and `result` come together, once the call completed.
  if (fields.raw('ok') === undefined) return call;
  return { ...call, ok: fields.get('ok', BOOLEAN), result: fields.raw('result') };
});

const RUN_ERROR = objectReader('{code, message}', (fields) => ({ code: fields.get('code', TEXT), message: fields.get('message', TEXT) }));

const MESSAGE = objectReader<HistoryMessage>('a message', (fields) => {
  const role = fields.get('role', oneOf(['user', 'assistant'] as const));
  const common = { id: fields.get('id', ID), run_id: fields.get('run_id', ID), text: fields.get('text', TEXT), created_at: fields.get('created_at', TEXT) };
  if (role === 'user') return { ...common, role };
  return {
    ...common,
    role: 'assistant',
    status: fields.get('status', RUN_STATUS),
    thinking: fields.get('thinking', listOf(MAX_ENTRIES, TEXT)),
    tool_calls: fields.get('tool_calls', listOf(MAX_ENTRIES, TOOL_CALL)),
    error: fields.get('error', nullable(RUN_ERROR)),
    completed_at: fields.get('completed_at', nullable(TEXT)),
  };
});

/** A whole answer: its fields, or MalformedAnswerError naming the first one that is wrong. */
function answerOf<T>(route: string, status: number, body: unknown, build: (fields: Fields) => T): T {
  const object = objectOf(body);
  if (object === undefined) throw new MalformedAnswerError(status, '', route, 'a JSON object');
  const fields = new Fields(object);
  const answer = build(fields);
  if (fields.problem !== null) throw new MalformedAnswerError(status, fields.problem.field, route, fields.problem.expected);
  return answer;
}

/** The answer of `GET /v1/threads`. */
export function threadsPageOf(route: string, status: number, body: unknown): ThreadsPage {
  return answerOf(route, status, body, (fields) => ({
    threads: fields.get('threads', listOf(MAX_THREADS, THREAD)),
    next_cursor: fields.get('next_cursor', CURSOR),
  }));
}

/** The answer of `GET /v1/threads/<threadId>/messages`: a page of that thread. */
export function historyPageOf(route: string, status: number, body: unknown, threadId: string): HistoryPage {
  return answerOf(route, status, body, (fields) => ({
    thread_id: fields.get('thread_id', sameId(threadId)),
    epoch: fields.get('epoch', ID),
    last_seq: fields.get('last_seq', SEQ),
    messages: fields.get('messages', listOf(MAX_MESSAGES, MESSAGE)),
    next_cursor: fields.get('next_cursor', CURSOR),
  }));
}

/** The answer of `PATCH /v1/threads/<threadId>`: that thread. */
export function renamedThreadOf(route: string, status: number, body: unknown, threadId: string): ThreadInfo {
  return answerOf(route, status, body, (fields) => ({ ...threadOf(fields), thread_id: fields.get('thread_id', sameId(threadId)) }));
}

/** The thread asked for: an answer about another one is not an answer to the request. */
function sameId(threadId: string): Reader<string> {
  return { expected: `the thread asked for, ${JSON.stringify(threadId)}`, read: (value) => (value === threadId ? threadId : undefined) };
}
