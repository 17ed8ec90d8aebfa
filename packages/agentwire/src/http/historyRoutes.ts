import type { IncomingMessage, ServerResponse } from 'node:http';
import { bearerToken } from '../auth/index.js';
import type { TokenVerifier } from '../auth/index.js';
import { MAX_TITLE_CHARACTERS } from '../history/fold.js';
import { InvalidCursorError, type HistoryStore, type MessageView, type ThreadSummary } from '../history/types.js';
import type { Logger } from '../observability/logger.js';
import type { UnfinishedRun } from '../runs/runStore.js';
import { THREAD_ID } from '../protocol/index.js';
import { discardBody, json, MAX_BODY_BYTES, readBody } from './body.js';

/** What the history routes need from the gateway. */
export interface HistoryRouteDeps {
  readonly verifier: TokenVerifier;
  readonly history: HistoryStore;
  /** Cancels the thread's queued and running runs (a deleted thread's); resolves with their ids. */
  cancelThreadRuns(userId: string, threadId: string): Promise<string[]>;
  /**
   * The user's running and queued runs (the run store's): a queued run has no event yet, so a
   * store that knows only events (PostgreSQL) cannot name it as its thread's `last_run`.
   */
  activeRuns?(userId: string): Promise<readonly UnfinishedRun[]>;
  readonly logger: Logger;
  /** The WebSocket's `Origin` allow-list (normalized lower-case), also the routes' CORS one; null or absent allows any. */
  readonly allowedOrigins?: ReadonlySet<string> | null;
}

/** Bounds of section 14. */
const THREADS_LIMIT = { default: 20, max: 100 };
const MESSAGES_LIMIT = { default: 50, max: 200 };
const MAX_CURSOR_CHARACTERS = 512;

/** What a CORS preflight may ask for: the routes' methods and the headers the client SDK sends. */
const PREFLIGHT_HEADERS = {
  'Access-Control-Allow-Methods': 'GET, PATCH, DELETE',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type',
  'Access-Control-Max-Age': '600',
};

/** A request the routes refuse, with its answer. */
class RouteError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, string>,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.error);
  }
}

const invalid = (message: string) => new RouteError(400, { error: 'invalid_request', message });
const notFound = () => new RouteError(404, { error: 'not_found' });

/**
 * Thread history over HTTP (PROTOCOL.md section 14): `GET /v1/threads`,
 * `GET /v1/threads/<id>/messages`, `PATCH` and `DELETE /v1/threads/<id>`. Every route is the
 * bearer token's user's own: another user's thread answers exactly like a missing one. Browser
 * apps of the allowed origins may call them from another origin (CORS). Returns false for any
 * other path.
 */
export function createHistoryRoutes(deps: HistoryRouteDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    const url = req.url ?? '/';
    // The query is all after the first '?': it may hold more of them (RFC 3986).
    const mark = url.indexOf('?');
    const path = mark === -1 ? url : url.slice(0, mark);
    const query = mark === -1 ? '' : url.slice(mark + 1);
    const route = matchRoute(path);
    if (!route) return false;
    const cors = corsHeaders(deps.allowedOrigins ?? null, req.headers.origin);
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
      discardBody(req, res);
      // An origin not allowed gets no CORS headers: the browser then refuses the request.
      res.writeHead(cors.allowed ? 204 : 403, cors.allowed ? { ...cors.headers, ...PREFLIGHT_HEADERS } : cors.headers);
      res.end();
      return true;
    }
    // Every answer, errors too: a browser hides from the app what it may not read.
    for (const [name, value] of Object.entries(cors.headers)) res.setHeader(name, value);
    answer(deps, route, req, new URLSearchParams(query))
      .then(({ status, body }) => {
        discardBody(req, res);
        if (status === 204) {
          res.writeHead(204, { 'Cache-Control': 'no-store' });
          res.end();
        } else json(res, status, body);
      })
      // Also what writing the answer threw (a store's page JSON cannot hold): never unhandled.
      .catch((error: unknown) => {
        discardBody(req, res);
        if (res.headersSent) return;
        if (error instanceof RouteError) return json(res, error.status, error.body, error.headers);
        deps.logger.error({ err: error }, 'history route failed');
        json(res, 503, { error: 'unavailable', message: 'history is unavailable; try again' }, { 'Retry-After': '1' });
      });
    return true;
  };
}

/**
 * The CORS headers of an answer to a request from `origin`. Bearer tokens, never cookies, so no
 * credentials mode and any origin can be `*`; with a list, only a listed origin is named, and
 * the answer varies by `Origin` for caches.
 */
function corsHeaders(allowedOrigins: ReadonlySet<string> | null, origin: string | undefined): { allowed: boolean; headers: Record<string, string> } {
  if (!allowedOrigins) return { allowed: true, headers: { 'Access-Control-Allow-Origin': '*' } };
  if (origin === undefined || !allowedOrigins.has(origin.toLowerCase())) return { allowed: false, headers: { Vary: 'Origin' } };
  return { allowed: true, headers: { 'Access-Control-Allow-Origin': origin, Vary: 'Origin' } };
}

type Route = { readonly kind: 'threads' } | { readonly kind: 'thread' | 'messages'; readonly threadId: string | null };

/** The route of a path; a thread id that is not one (or not decodable) is kept as null (400). */
function matchRoute(path: string): Route | null {
  if (path === '/v1/threads') return { kind: 'threads' };
  const match = /^\/v1\/threads\/([^/]+)(\/messages)?$/.exec(path);
  if (!match) return null;
  let threadId: string | null;
  try {
    threadId = decodeURIComponent(match[1]!);
  } catch {
    threadId = null;
  }
  return { kind: match[2] ? 'messages' : 'thread', threadId: threadId !== null && THREAD_ID.test(threadId) ? threadId : null };
}

async function answer(deps: HistoryRouteDeps, route: Route, req: IncomingMessage, query: URLSearchParams): Promise<{ status: number; body?: unknown }> {
  const allowed = route.kind === 'thread' ? ['PATCH', 'DELETE'] : ['GET'];
  if (!allowed.includes(req.method ?? '')) {
    throw new RouteError(405, { error: 'method_not_allowed', message: `use ${allowed.join(' or ')}` }, { Allow: allowed.join(', ') });
  }
  const verified = await deps.verifier.verify(bearerToken(req.headers.authorization));
  if (!verified.ok) throw new RouteError(401, { error: verified.reason }, { 'WWW-Authenticate': 'Bearer' });
  const userId = verified.userId;
  if (route.kind === 'threads') {
    const [page, active] = await Promise.all([withCursor(() => deps.history.listThreads(userId, pageOf(query, THREADS_LIMIT))), activeRunsOf(deps, userId)]);
    return { status: 200, body: { threads: page.items.map((thread) => threadJson(thread, active)), next_cursor: page.nextCursor } };
  }
  if (route.threadId === null) throw invalid('thread_id must be 1..128 of [A-Za-z0-9._:-]');
  const threadId = route.threadId;
  if (route.kind === 'messages') {
    const page = await withCursor(() => deps.history.messages(userId, threadId, pageOf(query, MESSAGES_LIMIT)));
    if (!page) throw notFound();
    return {
      status: 200,
      body: { thread_id: threadId, epoch: page.epoch, last_seq: page.lastSeq, messages: page.items.map(messageJson), next_cursor: page.nextCursor },
    };
  }
  if (req.method === 'PATCH') {
    const title = await titleOf(req);
    const thread = await deps.history.renameThread(userId, threadId, title);
    if (!thread) throw notFound();
    return { status: 200, body: threadJson(thread, await activeRunsOf(deps, userId)) };
  }
  // Cancelled first, so the deletion can name the runs whose late events it must keep out. A
  // thread with a run going exists even where the store has not seen it yet (PostgreSQL
  // archives write-behind): its runs are cancelled and the deletion is a 204 all the same.
  const ending = await deps.cancelThreadRuns(userId, threadId);
  const deleted = await deps.history.deleteThread(userId, threadId, ending);
  if (ending.length === 0 && !deleted) throw notFound();
  return { status: 204 };
}

function pageOf(query: URLSearchParams, bounds: { default: number; max: number }): { limit: number; cursor?: string } {
  const limitText = query.get('limit');
  let limit = bounds.default;
  if (limitText !== null) {
    if (!/^\d{1,3}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > bounds.max) {
      throw invalid(`limit must be an integer from 1 to ${bounds.max}`);
    }
    limit = Number(limitText);
  }
  const cursor = query.get('cursor');
  if (cursor === null) return { limit };
  if (cursor.length === 0 || cursor.length > MAX_CURSOR_CHARACTERS) throw invalid('cursor is not valid');
  return { limit, cursor };
}

async function withCursor<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    if (error instanceof InvalidCursorError) throw invalid('cursor is not valid');
    throw error;
  }
}

/** The `title` of a PATCH body: JSON of at most MAX_BODY_BYTES, a string of 1..200 characters. */
async function titleOf(req: IncomingMessage): Promise<string> {
  const body = await readBody(req);
  if (body.kind === 'too_large') {
    throw new RouteError(413, { error: 'invalid_request', message: `body must be at most ${MAX_BODY_BYTES} bytes` }, body.close ? { Connection: 'close' } : {});
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.text);
  } catch {
    throw invalid('body must be JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || !Object.hasOwn(parsed, 'title')) {
    throw invalid('body must be an object with a title');
  }
  const title = (parsed as { title: unknown }).title;
  if (typeof title !== 'string') throw invalid('title must be a string');
  const characters = [...title].length;
  if (characters < 1 || characters > MAX_TITLE_CHARACTERS) throw invalid(`title must be 1..${MAX_TITLE_CHARACTERS} characters`);
  return title;
}

function activeRunsOf(deps: HistoryRouteDeps, userId: string): Promise<readonly UnfinishedRun[]> {
  return deps.activeRuns?.(userId) ?? Promise.resolve([]);
}

/** A thread as answered; a queued run of it is its newest (runs of a thread queue behind its running one). */
function threadJson(thread: ThreadSummary, active: readonly UnfinishedRun[]): Record<string, unknown> {
  const queued = active.filter((run) => run.threadId === thread.threadId && run.state === 'queued').at(-1);
  const lastRun = queued ? { runId: queued.runId, status: 'queued' } : thread.lastRun;
  return {
    thread_id: thread.threadId,
    title: thread.title,
    created_at: thread.createdAt,
    updated_at: thread.updatedAt,
    last_run: lastRun && { run_id: lastRun.runId, status: lastRun.status },
  };
}

function messageJson(message: MessageView): Record<string, unknown> {
  if (message.role === 'user') {
    return { id: message.id, role: 'user', run_id: message.runId, text: message.text, created_at: message.createdAt };
  }
  return {
    id: message.id,
    role: 'assistant',
    run_id: message.runId,
    status: message.status,
    text: message.text,
    thinking: message.thinking,
    tool_calls: message.toolCalls.map((call) => ({
      call_id: call.callId,
      tool: call.tool,
      args: call.args,
      ...(call.ok === undefined ? {} : { ok: call.ok, result: call.result }),
    })),
    error: message.error,
    created_at: message.createdAt,
    completed_at: message.completedAt,
  };
}
