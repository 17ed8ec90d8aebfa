import WebSocket from 'ws';
import { AgentwireClient, type ClientOptions, type WebSocketConstructor } from './client.js';

/**
 * The client SDK for Node: everything of ./index.ts, with `createClient` defaulting the
 * WebSocket to the "ws" package (Node 20 has no global WebSocket).
 */
export * from './index.js';

export function createClient(options: ClientOptions): AgentwireClient {
  return new AgentwireClient({ ...options, WebSocket: options.WebSocket ?? (WebSocket as unknown as WebSocketConstructor) });
}
