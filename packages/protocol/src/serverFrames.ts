/** The `ref` an error frame echoes: the offending frame's `id` when it had a usable one. */
export type FrameRef = string | number | null;

/** The WebSocket subprotocol of this contract, offered by clients and selected by the server (PROTOCOL.md section 2). */
export const PROTOCOL_NAME = 'agentwire.v1';
/** A subprotocol entry `jwt.<token>` carries the client's token (PROTOCOL.md section 2). */
export const TOKEN_PROTOCOL_PREFIX = 'jwt.';

// Server frames that carry no seq (PROTOCOL.md section 5), encoded in one place.

/** The `code` of an `error` frame (PROTOCOL.md section 5). */
export type ErrorCode =
  | 'invalid_json'
  | 'invalid_message'
  | 'unknown_type'
  | 'unsupported_binary'
  | 'rate_limited'
  | 'thread_busy'
  | 'run_not_found'
  | 'forbidden'
  | 'already_authenticated'
  | 'too_many_runs'
  | 'token_invalid'
  | 'token_expired';

/** The fields of `connection_ready`: who the connection is and where its resume landed. */
export interface ConnectionReady {
  connectionId: string;
  userId: string;
  epoch: string;
  lastSeq: number;
  resumed: boolean;
  replayed: number;
  heartbeatMs: number;
  serverTime: Date;
}

/** Encodes `connection_ready`. */
export function connectionReadyFrame(ready: ConnectionReady): string {
  return JSON.stringify({
    type: 'connection_ready',
    protocol: PROTOCOL_NAME,
    connection_id: ready.connectionId,
    user_id: ready.userId,
    epoch: ready.epoch,
    last_seq: ready.lastSeq,
    resumed: ready.resumed,
    replayed: ready.replayed,
    heartbeat_ms: ready.heartbeatMs,
    server_time: ready.serverTime.toISOString(),
  });
}

/** What became of a `user_message` or `cancel`, as its `ack` says. */
export type AckStatus = 'started' | 'queued' | 'duplicate' | 'cancelling';

/** Encodes an `ack` for the frame with client id `id`. */
export function ackFrame(id: string, runId: string, threadId: string, status: AckStatus): string {
  return JSON.stringify({ type: 'ack', id, run_id: runId, thread_id: threadId, status });
}

/** Encodes an `error` frame; `ref` echoes the offending frame's id, `path` names the bad field. */
export function errorFrame(code: ErrorCode, message: string, ref: FrameRef, path?: string): string {
  return JSON.stringify(path === undefined ? { type: 'error', code, message, ref } : { type: 'error', code, message, ref, path });
}

/** `id` is a validated ping id (a short string or a finite number), never an arbitrary value. */
export function pongFrame(id: string | number | undefined, serverTime: Date): string {
  return JSON.stringify({ type: 'pong', id: id ?? null, server_time: serverTime.toISOString() });
}

/** The answer to a successful `refresh_token`; `expiresAt` in ms, null for a token without `exp`. */
export function tokenRefreshedFrame(id: string, expiresAt: number | null): string {
  return JSON.stringify({
    type: 'token_refreshed',
    id,
    expires_at: expiresAt === null ? null : new Date(expiresAt).toISOString(),
  });
}
