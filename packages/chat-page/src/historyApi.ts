/**
 * The history routes of PROTOCOL.md section 14, as the page uses them, with the page's token as
 * Bearer. Answers are checked field by field before use: whatever does not have the expected
 * shape is dropped, never trusted.
 */

export interface ThreadInfo {
  readonly threadId: string;
  readonly title: string;
}

export interface ToolCallInfo {
  readonly callId: string;
  readonly tool: string;
  readonly args: unknown;
  readonly ok?: boolean;
  readonly result?: unknown;
}

export type MessageInfo =
  | { readonly role: 'user'; readonly id: string; readonly runId: string; readonly text: string }
  | {
      readonly role: 'assistant';
      readonly id: string;
      readonly runId: string;
      readonly status: string;
      readonly text: string;
      readonly thinking: readonly string[];
      readonly toolCalls: readonly ToolCallInfo[];
      readonly error: { readonly code: string; readonly message: string } | null;
    };

export interface MessagesInfo {
  readonly epoch: string;
  readonly lastSeq: number;
  readonly messages: readonly MessageInfo[];
  readonly nextCursor: string | null;
}

/** A route answered with an HTTP error (`status`), or its answer was not what section 14 says. */
export class HistoryError extends Error {
  override readonly name = 'HistoryError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);
const str = (value: unknown): string | null => (typeof value === 'string' ? value : null);
const cursorOf = (value: unknown): string | null => (typeof value === 'string' && value.length > 0 ? value : null);

export class HistoryApi {
  readonly #base: string;
  readonly #token: string;

  /** `wsUrl`: the gateway's WebSocket URL; the routes live on the same host (ws: to http:). */
  constructor(wsUrl: string, token: string) {
    const url = new URL(wsUrl);
    url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
    this.#base = url.origin;
    this.#token = token;
  }

  async threads(limit = 50): Promise<ThreadInfo[]> {
    const body = await this.#call('GET', `/v1/threads?limit=${limit}`);
    const list = isObject(body) && Array.isArray(body.threads) ? body.threads : [];
    const threads: ThreadInfo[] = [];
    for (const item of list) {
      if (!isObject(item)) continue;
      const threadId = str(item.thread_id);
      if (threadId) threads.push({ threadId, title: str(item.title) ?? threadId });
    }
    return threads;
  }

  async messages(threadId: string, cursor: string | null = null): Promise<MessagesInfo> {
    const query = `limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const body = await this.#call('GET', `/v1/threads/${encodeURIComponent(threadId)}/messages?${query}`);
    const epoch = isObject(body) ? str(body.epoch) : null;
    const lastSeq = isObject(body) ? body.last_seq : null;
    if (!isObject(body) || epoch === null || typeof lastSeq !== 'number' || !Number.isSafeInteger(lastSeq) || lastSeq < 0) {
      throw new HistoryError(200, 'the messages answer has no epoch/last_seq');
    }
    const messages: MessageInfo[] = [];
    for (const item of Array.isArray(body.messages) ? body.messages : []) {
      const message = isObject(item) ? messageOf(item) : null;
      if (message) messages.push(message);
    }
    return { epoch, lastSeq, messages, nextCursor: cursorOf(body.next_cursor) };
  }

  async rename(threadId: string, title: string): Promise<ThreadInfo> {
    const body = await this.#call('PATCH', `/v1/threads/${encodeURIComponent(threadId)}`, { title });
    return { threadId, title: (isObject(body) ? str(body.title) : null) ?? title };
  }

  async remove(threadId: string): Promise<void> {
    await this.#call('DELETE', `/v1/threads/${encodeURIComponent(threadId)}`);
  }

  async #call(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.#token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(this.#base + path, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (response.status === 204) return null;
    const answer: unknown = await response.json().catch(() => null);
    if (!response.ok) {
      const code = isObject(answer) ? (str(answer.error) ?? '') : '';
      throw new HistoryError(response.status, `${method} ${path.split('?', 1)[0]}: ${response.status} ${code}`.trim());
    }
    return answer;
  }
}

function messageOf(item: Json): MessageInfo | null {
  const id = str(item.id);
  const runId = str(item.run_id);
  const text = str(item.text) ?? '';
  if (!id || !runId) return null;
  if (item.role === 'user') return { role: 'user', id, runId, text };
  if (item.role !== 'assistant') return null;
  const toolCalls: ToolCallInfo[] = [];
  for (const call of Array.isArray(item.tool_calls) ? item.tool_calls : []) {
    if (!isObject(call)) continue;
    const callId = str(call.call_id);
    const tool = str(call.tool);
    if (!callId || !tool) continue;
    toolCalls.push({ callId, tool, args: call.args, ...(typeof call.ok === 'boolean' ? { ok: call.ok, result: call.result } : {}) });
  }
  const error = isObject(item.error) ? { code: str(item.error.code) ?? 'error', message: str(item.error.message) ?? '' } : null;
  return {
    role: 'assistant',
    id,
    runId,
    status: str(item.status) ?? 'running',
    text,
    thinking: (Array.isArray(item.thinking) ? item.thinking : []).filter((t): t is string => typeof t === 'string'),
    toolCalls,
    error,
  };
}
