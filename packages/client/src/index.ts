/**
 * agentwire/client: the client SDK for browsers and Node 20 to 24 (also Deno, Bun). The
 * WebSocket is `options.WebSocket`, else the platform's `globalThis.WebSocket` (browsers,
 * Node 22+), else the "ws" package (Node 20), imported lazily at the first dial: nothing
 * reachable from here imports a Node module statically, so browser bundles stay free of them.
 */
export {
  AgentwireClient,
  ClientClosedError,
  HistoryResetError,
  RequestError,
  createClient,
  type ClientOptions,
  type RunEvents,
  type TokenSource,
  type WebSocketConstructor,
  type WebSocketLike,
} from './client.js';
export { AnswerTooLargeError, HttpError, httpBaseOf, type FetchFunction, type PageOptions } from './history.js';
export { MalformedAnswerError } from './historyAnswers.js';
export { ClientState } from './state.js';
export { DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export type * from './types.js';
