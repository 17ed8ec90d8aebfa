import WebSocket from 'ws';
import { AgentwireClient, type ClientOptions, type WebSocketConstructor } from './client.js';

/**
 * The client SDK with the "ws" package as the WebSocket even where the platform has one
 * (Node 22+): unlike the platform's, `ws` says why a dial failed (`connect ECONNREFUSED ...`,
 * which the chat CLI prints) and can drop a dead socket at once (`terminate`). Everything
 * else is ./index.ts, which needs no WebSocket passed on any Node.
 */
export * from './index.js';

/** Creates a client whose WebSocket is the `ws` package unless `options.WebSocket` is given. */
export function createClient(options: ClientOptions): AgentwireClient {
  return new AgentwireClient({ ...options, WebSocket: options.WebSocket ?? (WebSocket as unknown as WebSocketConstructor) });
}
