import type { FrameRef } from './clientFrames.js';

/** Server frames that carry no seq (PROTOCOL.md section 5), encoded in one place. */
export const PROTOCOL_NAME = 'agentwire.v1';

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
  | 'too_many_runs';

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

export type AckStatus = 'started' | 'queued' | 'duplicate' | 'cancelling';

export function ackFrame(id: string, runId: string, threadId: string, status: AckStatus): string {
  return JSON.stringify({ type: 'ack', id, run_id: runId, thread_id: threadId, status });
}

export function errorFrame(code: ErrorCode, message: string, ref: FrameRef, path?: string): string {
  return JSON.stringify(
    path === undefined
      ? { type: 'error', code, message, ref }
      : { type: 'error', code, message, ref, path },
  );
}

export function pongFrame(id: unknown, serverTime: Date): string {
  return JSON.stringify({ type: 'pong', id: id ?? null, server_time: serverTime.toISOString() });
}
