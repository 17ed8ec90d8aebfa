import { historyPageOf, renamedThreadOf, threadsPageOf } from './historyAnswers.js';
import type { HistoryPage, ThreadInfo, ThreadsPage } from './types.js';

// The thread history routes (PROTOCOL.md section 14) over HTTP with the client's token. A 2xx
// answer is checked against the section's shapes (historyAnswers.ts) before the caller sees it.

/** Longest `code`, and `message`, of an error answer kept in an HttpError (the server's text is untrusted). */
const MAX_CODE_CHARS = 100;
const MAX_MESSAGE_CHARS = 500;

/**
 * The largest messages page read by default (`httpMaxBytes`). A page holds at most 200 messages
 * (section 14): 100 user messages of at most 32 768 characters (under 19 MiB of JSON even with
 * every character escaped) and 100 answers, each bounded by its run (an upstream agent's whole
 * run is at most 16 MiB, section 15). 64 MiB holds the user messages at their worst and two
 * maximal answers, or thousands of ordinary ones; the in-memory log keeps 8 MiB per user.
 */
export const DEFAULT_MAX_PAGE_BYTES = 64 * 1024 * 1024;
/**
 * The largest other 2xx answer: a threads page is at most 100 threads of at most about 1.6 KiB
 * (a 128-character id, a title of 200 code points escaped, two times, a run id), so 160 KiB.
 */
const MAX_SMALL_ANSWER_BYTES = 1024 * 1024;
/** The part of an error answer read: only its `error` and `message` are kept (cut to 100 and 500 characters). */
const MAX_ERROR_ANSWER_BYTES = 64 * 1024;

/** A reader of a response body (the platform's ReadableStream reader). */
interface BodyReader {
  read(): Promise<{ readonly done: boolean; readonly value?: Uint8Array | string }>;
  cancel(reason?: unknown): Promise<void>;
}

/** A `fetch` function (the platform's by default). */
export type FetchFunction = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<{
  readonly status: number;
  /** When present, a `content-length` over the cap rejects before the body is read. */
  readonly headers?: { get(name: string): string | null };
  /**
   * When it is a web stream (has `getReader`), the body is read from it up to the cap; otherwise
   * (none, or a Node stream as node-fetch gives) `text()` is read whole and then judged.
   */
  readonly body?: unknown;
  text(): Promise<string>;
}>;

type FetchResponse = Awaited<ReturnType<FetchFunction>>;

/** A history route answered 2xx with a body over the cap: it was given up, not read to its end. */
export class AnswerTooLargeError extends Error {
  override readonly name = 'AnswerTooLargeError';
  constructor(
    readonly status: number,
    /** The cap, in bytes. */
    readonly limit: number,
    route: string,
  ) {
    super(`the answer to ${route} (HTTP ${status}) is over ${limit} bytes and was not read further`);
  }
}

/** A history route answered with an error status; `code` is the answer's `error` field. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`HTTP ${status} ${code}${message ? `: ${message}` : ''}`);
  }
}

/** Paging of `threads()` and `history()`. */
export interface PageOptions {
  readonly limit?: number;
  readonly cursor?: string;
}

/**
 * The http(s) origin of a gateway's WebSocket URL: `wss://host/ws` -> `https://host`. The
 * history routes live at the root of the gateway's server, beside its WebSocket path.
 */
export function httpBaseOf(wsUrl: string): string {
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  const url = base === undefined ? new URL(wsUrl) : new URL(wsUrl, base);
  const protocol = url.protocol === 'wss:' ? 'https:' : url.protocol === 'ws:' ? 'http:' : url.protocol;
  return `${protocol}//${url.host}`;
}

/** Calls the history routes of one gateway with the token `token()` gives at each call. */
export class HistoryHttp {
  readonly #base: string;
  readonly #token: () => Promise<string | undefined>;
  readonly #fetch: FetchFunction;
  readonly #timeoutMs: number;
  readonly #maxPageBytes: number;

  constructor(options: { baseUrl: string; token: () => Promise<string | undefined>; fetch: FetchFunction; timeoutMs: number; maxPageBytes: number }) {
    this.#base = options.baseUrl.replace(/\/+$/, '');
    this.#token = options.token;
    this.#fetch = options.fetch;
    this.#timeoutMs = options.timeoutMs;
    this.#maxPageBytes = options.maxPageBytes;
  }

  async threads(page: PageOptions = {}): Promise<ThreadsPage> {
    const path = '/v1/threads';
    const answer = await this.#call('GET', path, query(page), this.#smallAnswerBytes);
    return threadsPageOf(`GET ${path}`, answer.status, answer.body);
  }

  async messages(threadId: string, page: PageOptions = {}): Promise<HistoryPage> {
    const path = `/v1/threads/${encodeURIComponent(threadId)}/messages`;
    const answer = await this.#call('GET', path, query(page), this.#maxPageBytes);
    return historyPageOf(`GET ${path}`, answer.status, answer.body, threadId);
  }

  async rename(threadId: string, title: string): Promise<ThreadInfo> {
    const path = `/v1/threads/${encodeURIComponent(threadId)}`;
    const answer = await this.#call('PATCH', path, '', this.#smallAnswerBytes, JSON.stringify({ title }));
    return renamedThreadOf(`PATCH ${path}`, answer.status, answer.body, threadId);
  }

  async delete(threadId: string): Promise<void> {
    await this.#call('DELETE', `/v1/threads/${encodeURIComponent(threadId)}`, '', this.#smallAnswerBytes);
  }

  get #smallAnswerBytes(): number {
    return Math.min(MAX_SMALL_ANSWER_BYTES, this.#maxPageBytes);
  }

  /**
   * Resolves with a 2xx answer's status and parsed body (null if not JSON) of at most `maxBytes`;
   * rejects with AnswerTooLargeError past that, and with HttpError for another status.
   */
  async #call(method: string, path: string, search: string, maxBytes: number, body?: string): Promise<{ status: number; body: unknown }> {
    const token = await this.#token();
    const headers: Record<string, string> = { accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    // Called as a plain function: the platform's fetch throws "Illegal invocation" in a browser
    // when called as a method of another object (this.#fetch(...)).
    const fetch = this.#fetch;
    const response = await fetch(`${this.#base}${path}${search}`, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    const ok = response.status >= 200 && response.status < 300;
    const text = await textUpTo(response, ok ? maxBytes : MAX_ERROR_ANSWER_BYTES);
    // Past its cap a 2xx answer rejects; an error answer is read as not JSON (its status is what counts).
    if (text === null && ok) throw new AnswerTooLargeError(response.status, maxBytes, `${method} ${path}`);
    let parsed: unknown = null;
    try {
      parsed = text === null || text === '' ? null : JSON.parse(text);
    } catch {
      // not JSON: a 2xx answer then fails its check, an error one is reported by its status
    }
    if (ok) return { status: response.status, body: parsed };
    const answer = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as { error?: unknown; message?: unknown };
    throw new HttpError(
      response.status,
      typeof answer.error === 'string' ? answer.error.slice(0, MAX_CODE_CHARS) : 'http_error',
      typeof answer.message === 'string' ? answer.message.slice(0, MAX_MESSAGE_CHARS) : '',
    );
  }
}

/**
 * The body as text, or null once it passes `maxBytes` (UTF-8): a declared `content-length` over
 * it is refused before the body is read, and a body read in chunks is given up (the stream is
 * cancelled, which closes the connection) at the first chunk past it.
 */
async function textUpTo(response: FetchResponse, maxBytes: number): Promise<string | null> {
  const body = response.body as { getReader?: unknown } | null | undefined;
  const reader = typeof body?.getReader === 'function' ? (body as { getReader(): BodyReader }).getReader() : undefined;
  if (Number(response.headers?.get('content-length') ?? 0) > maxBytes) {
    void reader?.cancel().catch(() => {});
    return null;
  }
  if (!reader) {
    // A fetch of the caller's without a web body stream: read whole, then judged.
    const text = await response.text();
    return new TextEncoder().encode(text).length > maxBytes ? null : text;
  }
  const decoder = new TextDecoder();
  let bytes = 0;
  let text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text + decoder.decode();
    if (!value) continue;
    // A caller's stream may give text chunks; they count in UTF-8 bytes like the rest.
    const chunk = typeof value === 'string' ? new TextEncoder().encode(value) : value;
    bytes += chunk.byteLength;
    if (bytes > maxBytes) {
      void reader.cancel().catch(() => {});
      return null;
    }
    text += decoder.decode(chunk, { stream: true });
  }
}

function query(page: PageOptions): string {
  const params = new URLSearchParams();
  if (page.limit !== undefined) params.set('limit', String(page.limit));
  if (page.cursor !== undefined) params.set('cursor', page.cursor);
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}
