import { historyPageOf, renamedThreadOf, threadsPageOf } from './historyAnswers.js';
import type { HistoryPage, ThreadInfo, ThreadsPage } from './types.js';

// The thread history routes (PROTOCOL.md section 14) over HTTP with the client's token. A 2xx
// answer is checked against the section's shapes (historyAnswers.ts) before the caller sees it.

/** Longest `code`, and `message`, of an error answer kept in an HttpError (the server's text is untrusted). */
const MAX_CODE_CHARS = 100;
const MAX_MESSAGE_CHARS = 500;

/** A `fetch` function (the platform's by default). */
export type FetchFunction = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<{
  readonly status: number;
  text(): Promise<string>;
}>;

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

  constructor(options: { baseUrl: string; token: () => Promise<string | undefined>; fetch: FetchFunction; timeoutMs: number }) {
    this.#base = options.baseUrl.replace(/\/+$/, '');
    this.#token = options.token;
    this.#fetch = options.fetch;
    this.#timeoutMs = options.timeoutMs;
  }

  async threads(page: PageOptions = {}): Promise<ThreadsPage> {
    const path = '/v1/threads';
    const answer = await this.#call('GET', path + query(page));
    return threadsPageOf(`GET ${path}`, answer.status, answer.body);
  }

  async messages(threadId: string, page: PageOptions = {}): Promise<HistoryPage> {
    const path = `/v1/threads/${encodeURIComponent(threadId)}/messages`;
    const answer = await this.#call('GET', path + query(page));
    return historyPageOf(`GET ${path}`, answer.status, answer.body, threadId);
  }

  async rename(threadId: string, title: string): Promise<ThreadInfo> {
    const path = `/v1/threads/${encodeURIComponent(threadId)}`;
    const answer = await this.#call('PATCH', path, JSON.stringify({ title }));
    return renamedThreadOf(`PATCH ${path}`, answer.status, answer.body, threadId);
  }

  async delete(threadId: string): Promise<void> {
    await this.#call('DELETE', `/v1/threads/${encodeURIComponent(threadId)}`);
  }

  /** Resolves with a 2xx answer's status and parsed body (null if not JSON); rejects with HttpError otherwise. */
  async #call(method: string, path: string, body?: string): Promise<{ status: number; body: unknown }> {
    const token = await this.#token();
    const headers: Record<string, string> = { accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    // Called as a plain function: the platform's fetch throws "Illegal invocation" in a browser
    // when called as a method of another object (this.#fetch(...)).
    const fetch = this.#fetch;
    const response = await fetch(`${this.#base}${path}`, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    const text = await response.text();
    let parsed: unknown = null;
    try {
      parsed = text === '' ? null : JSON.parse(text);
    } catch {
      // not JSON: a 2xx answer then fails its check, an error one is reported by its status
    }
    if (response.status >= 200 && response.status < 300) return { status: response.status, body: parsed };
    const answer = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as { error?: unknown; message?: unknown };
    throw new HttpError(
      response.status,
      typeof answer.error === 'string' ? answer.error.slice(0, MAX_CODE_CHARS) : 'http_error',
      typeof answer.message === 'string' ? answer.message.slice(0, MAX_MESSAGE_CHARS) : '',
    );
  }
}

function query(page: PageOptions): string {
  const params = new URLSearchParams();
  if (page.limit !== undefined) params.set('limit', String(page.limit));
  if (page.cursor !== undefined) params.set('cursor', page.cursor);
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}
