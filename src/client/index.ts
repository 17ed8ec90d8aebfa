/**
 * agentwire/client: the environment-neutral client SDK (browsers, Node 22+, Deno, Bun).
 * Nothing reachable from here imports a Node module; the WebSocket is `globalThis.WebSocket`
 * or `options.WebSocket`. On Node 20, pass `WebSocket` from the "ws" package, or use
 * src/client/node.ts, whose `createClient` does that by default.
 */
export {
  AgentwireClient,
  ClientClosedError,
  HistoryResetError,
  RequestError,
  createClient,
  type ClientOptions,
  type TokenSource,
  type WebSocketConstructor,
  type WebSocketLike,
} from './client.js';
export {
  ALL_CLIENT_STATES,
  CLIENT_TRANSITIONS,
  ClientState,
  ClientStateError,
  ClientStateMachine,
  isValidClientTransition,
} from './state.js';
export {
  DEFAULT_BACKOFF,
  backoffDelay,
  decideAfterClose,
  decideAfterDrop,
  longBackoffDelay,
  type BackoffOptions,
  type CloseContext,
  type CloseDecision,
} from './backoff.js';
export type * from './types.js';
