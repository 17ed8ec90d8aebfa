import type { DurableEvent, EventType } from '@agentwire/protocol';
import type { AckStatus, ErrorCode } from '@agentwire/protocol';
import type { ClientState } from './state.js';

/**
 * Wire types as the client sees them. The client hands the parsed frames to the application
 * unchanged (snake_case, as on the wire), so `JSON.stringify` of what it gets is the frame.
 */

/** A durable agent event (PROTOCOL.md section 7). */
export type AgentEvent = DurableEvent;
/** The `type` of a durable agent event. */
export type AgentEventType = EventType;
/** The agent event of one type. */
export type AgentEventOf<T extends AgentEventType> = Extract<AgentEvent, { readonly type: T }>;

/** The server's `connection_ready` frame: the connection is authenticated and live. */
export interface ConnectionReadyFrame {
  readonly type: 'connection_ready';
  readonly protocol: string;
  readonly connection_id: string;
  readonly user_id: string;
  readonly epoch: string;
  readonly last_seq: number;
  readonly resumed: boolean;
  readonly replayed: number;
  readonly heartbeat_ms: number;
  readonly server_time: string;
}

/** The server's answer to `user_message` or `cancel`. */
export interface AckFrame {
  readonly type: 'ack';
  readonly id: string;
  readonly run_id: string;
  readonly thread_id: string;
  readonly status: AckStatus;
}

/** The server refused a frame; `ref` names the frame it answers, if it could tell. */
export interface ErrorFrame {
  readonly type: 'error';
  readonly code: ErrorCode | (string & {});
  readonly message: string;
  readonly ref: string | number | null;
  readonly path?: string;
}

/** The server's answer to `ping`. */
export interface PongFrame {
  readonly type: 'pong';
  readonly id: unknown;
  readonly server_time: string;
}

/** Answer to the client's `refresh_token`: the connection now expires at `expires_at`. */
export interface TokenRefreshedFrame {
  readonly type: 'token_refreshed';
  readonly id: string;
  readonly expires_at: string;
}

/** Any frame the server sends. */
export type ServerFrame = ConnectionReadyFrame | AckFrame | ErrorFrame | PongFrame | TokenRefreshedFrame | AgentEvent;

/** Why the client is closed: the close code and reason that ended it. */
export interface CloseInfo {
  /** The WebSocket close code; 1000 with reason `client_closed` after `close()`. */
  readonly code: number;
  readonly reason: string;
  /** A transport error message seen on the last socket, if any. */
  readonly error?: string;
  /** Set when the client gave up after `maxRetries` retries. */
  readonly retriesExhausted?: boolean;
}

/** The payload of the client's `state` event. */
export interface StateChange {
  readonly state: ClientState;
  readonly previous: ClientState;
  /** Set when `state` is `closed`. */
  readonly closeInfo?: CloseInfo;
}

/** One socket ended (or a dial failed) and the client is not closed: it will dial again. */
export interface DisconnectInfo {
  readonly code: number;
  readonly reason: string;
  /** A transport error message (refused connection, failed upgrade...), if any. */
  readonly error?: string;
  /** Whether this socket had reached `connection_ready`. */
  readonly wasReady: boolean;
  /** Retry number since the last ready connection (1 = first retry). */
  readonly attempt: number;
  /** Delay before the next dial. */
  readonly delayMs: number;
}

/** `connection_ready` said `resumed: false` although the client had a position: reload history. */
export interface HistoryReset {
  readonly previousEpoch: string | null;
  readonly previousLastSeq: number;
  readonly epoch: string;
  /** The new position: live events continue after this seq. */
  readonly lastSeq: number;
  readonly ready: ConnectionReadyFrame;
}

/** The status of a run in the thread history. */
export type HistoryRunStatus = 'queued' | 'running' | 'completed' | 'cancelled' | 'error';

/** One thread of `GET /v1/threads` (PROTOCOL.md section 14). */
export interface ThreadInfo {
  readonly thread_id: string;
  readonly title: string;
  readonly created_at: string;
  readonly updated_at: string;
  readonly last_run: { readonly run_id: string; readonly status: HistoryRunStatus } | null;
}

/** A page of the user's threads, most recently updated first; `next_cursor` pages on (null: no more). */
export interface ThreadsPage {
  readonly threads: readonly ThreadInfo[];
  readonly next_cursor: string | null;
}

/** A user's message in the thread history. */
export interface HistoryUserMessage {
  readonly id: string;
  readonly role: 'user';
  readonly run_id: string;
  readonly text: string;
  readonly created_at: string;
}

/** A run's answer in the thread history, as far as it has streamed. */
export interface HistoryAssistantMessage {
  readonly id: string;
  readonly role: 'assistant';
  readonly run_id: string;
  readonly status: HistoryRunStatus;
  readonly text: string;
  readonly thinking: readonly string[];
  readonly tool_calls: ReadonlyArray<{
    readonly call_id: string;
    readonly tool: string;
    readonly args: Record<string, unknown>;
    readonly ok?: boolean;
    readonly result?: unknown;
  }>;
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly created_at: string;
  readonly completed_at: string | null;
}

/** A message of the thread history. */
export type HistoryMessage = HistoryUserMessage | HistoryAssistantMessage;

/**
 * A page of a thread's messages (oldest first; `next_cursor` pages to older ones). `epoch` and
 * `last_seq` name the newest event of the user the page includes: live events after it follow.
 */
export interface HistoryPage {
  readonly thread_id: string;
  readonly epoch: string;
  readonly last_seq: number;
  readonly messages: readonly HistoryMessage[];
  readonly next_cursor: string | null;
}

/**
 * The threads of `ClientOptions.reloadThreads`, reloaded after `resumed: false`. Live events of a
 * thread whose page came are delivered only after the page's `last_seq`; a failed thread has
 * `error` instead of `page` (its live events are all delivered).
 */
export interface HistoryReload {
  readonly epoch: string;
  readonly threads: ReadonlyArray<{ readonly thread_id: string; readonly page?: HistoryPage; readonly error?: string }>;
}

/** A seq gap seen while connected; the client drops the socket and resumes. */
export interface GapInfo {
  readonly expected: number;
  readonly received: number;
}

/** Everything a UI can bind to with `client.on(name, listener)`. */
export type ClientEventMap = {
  state: StateChange;
  ready: ConnectionReadyFrame;
  /** Every durable event, once, in seq order. */
  event: AgentEvent;
  history_reset: HistoryReset;
  /** After `history_reset`, the threads of `reloadThreads` as reloaded (before their newer live events). */
  history_reloaded: HistoryReload;
  disconnect: DisconnectInfo;
  closed: CloseInfo;
  gap: GapInfo;
  /** Every ack frame (also those that resolve `send` / `cancel`). */
  ack: AckFrame;
  /** Error frames that answer no pending `send` / `cancel` of this client. */
  server_error: ErrorFrame;
  pong: PongFrame;
  /** The watchdog found the socket dead (no frame within `pongTimeoutMs` of its ping). */
  watchdog: { readonly pingSentAt: number; readonly lastFrameAt: number };
  /** A token provider failed (the client retries with backoff). */
  token_error: { readonly error: unknown };
  /** The server took a fresher token on the open connection (`refresh_token`). */
  token_refreshed: TokenRefreshedFrame;
  /** Every parsed server frame, before the client handles it. */
  frame: ServerFrame;
} & { [T in AgentEventType]: AgentEventOf<T> };

/** The names `client.on` takes. */
export type ClientEventName = keyof ClientEventMap;
