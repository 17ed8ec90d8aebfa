import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { WebSocket, type RawData } from 'ws';
import type { Clock } from '@agentwire/protocol';
import type { TokenVerifier, VerifyResult } from '../auth/index.js';
import type { CoordinatorMember, ResumePosition, SetupResult } from '../coordination/index.js';
import type { CoordinatorRegistry, UserCoordinator } from '../coordination/index.js';
import { ConnectionLifecycle, ConnectionState } from '../lifecycle/index.js';
import {
  BINARY_FRAME,
  CloseCode,
  ackFrame,
  connectionReadyFrame,
  errorFrame,
  mayBeObject,
  parseClientFrame,
  pongFrame,
  resumeFields,
  tokenRefreshedFrame,
  type AuthFrame,
  type ClientFrame,
  type ErrorCode,
  type FrameRef,
  type LogEntry,
  type ParsedFrame,
  type RefreshTokenFrame,
} from '../protocol/index.js';
import type { Corkable } from '../cork.js';
import { entryFrame } from './wireFrame.js';
import type { GatewayMetrics, Logger } from '../observability/index.js';
import type { RunManager } from '../runs/runManager.js';
import type { ByteBudget } from './byteBudget.js';
import { TokenBucket } from './tokenBucket.js';

export interface ConnectionLimits {
  readonly authTimeoutMs: number;
  readonly heartbeatMs: number;
  readonly inboxLimit: number;
  /** Raw bytes of the frames one connection may hold before PROCESSING_READY; more closes it with 1008. */
  readonly inboxMaxBytes: number;
  readonly rateLimitPerSec: number;
  readonly rateLimitBurst: number;
  /** Rate-limited frames in a row after which the connection is closed with 1008. */
  readonly abuseLimit: number;
  readonly slowConsumerBytes: number;
  /** Live events held for a connection during its setup; more closes it with 4008. */
  readonly maxBufferedEvents: number;
}

/** What every connection of one gateway shares. */
export interface ConnectionContext {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly verifier: TokenVerifier;
  readonly registry: CoordinatorRegistry;
  readonly runs: RunManager;
  readonly limits: ConnectionLimits;
  /** Accepted connections (ACCEPTED through CLOSING). */
  readonly connections: Set<Connection>;
  /** Connections waiting for an `auth` frame; swept for the auth deadline. */
  readonly awaitingAuth: Set<Connection>;
  /** Raw bytes held by all connections not yet PROCESSING_READY together. */
  readonly heldBytes: ByteBudget;
  /** Holds a socket's writes for the gateway's frame batching (cork.ts), then calls `onFlushed`. */
  readonly corkFrames: (socket: Corkable, onFlushed: () => void) => void;
  connectionClosed(connection: Connection): void;
}

const { ACCEPTED, AUTHENTICATED, SERVICES_READY, PROCESSING_READY, CLOSED } = ConnectionState;

export type AuthMethod = 'header' | 'subprotocol' | 'frame';

/**
 * A frame waiting for dispatch, kept raw (parsed only when dispatched): a parsed frame can take
 * many times its size in memory. `heldBytes` is what it counts against the pre-ready bounds.
 */
interface HeldFrame {
  /** The frame's text; null for a binary frame, which is only ever answered unsupported_binary. */
  readonly text: string | null;
  readonly heldBytes: number;
}

/** What the upgrade established, handed to Connection#accept. */
export interface Handshake {
  /** Token verification at the upgrade (header or subprotocol); null when the client must send an auth frame. */
  readonly upgradeAuth: VerifyResult | null;
  readonly method: AuthMethod | null;
  readonly originAllowed: boolean;
  /** The socket under the WebSocket; given, frames sent in one tick are written together. */
  readonly socket?: WireSocket;
}

/** The socket under a WebSocket, as the connection writes to it. */
export interface WireSocket extends Corkable {
  write(chunk: Buffer): boolean;
}

/**
 * One client connection. Its lifecycle state machine is the only place its state lives; every
 * method checks that state before acting, so an event that arrives late (a frame after close,
 * a setup that resolves after the socket died) is dropped instead of acting on a dead socket.
 */
export class Connection implements CoordinatorMember {
  readonly connectionId = randomUUID();
  readonly lifecycle: ConnectionLifecycle;
  userId: string | null = null;
  /** Sweeper fields: no timer per connection. */
  authDeadline = 0;
  lastSeenAt: number;
  pingSentAt = 0;
  /** When the connection's token expires (ms); set at authentication, checked by the sweeper. */
  expiresAt = Number.POSITIVE_INFINITY;

  #ws: WebSocket | null = null;
  /** The socket under #ws, corked while a turn's or a tick's frames collect (see #write). */
  #socket: WireSocket | null = null;
  /**
   * Events go to the socket as frames built once per event (entryFrame), past ws: only with no
   * extension negotiated (permessage-deflate frames differ per connection and ws may queue
   * them), so ws never holds a frame these could overtake.
   */
  #writesFrames = false;
  /** A checked frame was written while corked: check the backlog once the held write is out. */
  #backlogCheckDue = false;
  #coordinator: UserCoordinator | null = null;
  #generation = 0;
  #resume: ResumePosition;
  #authStarted = false;
  readonly #inbox: HeldFrame[] = [];
  /** Sum of the inbox's heldBytes, also taken from ctx.heldBytes. */
  #heldBytes = 0;
  #dispatching = false;
  /** refresh_token verifications in flight (see #refreshPending). */
  #refreshing = 0;
  /** Live entries that arrive during setup; null once connection_ready has been sent. */
  #liveBuffer: LogEntry[] | null = [];
  #lastSentSeq = 0;
  readonly #bucket: TokenBucket;
  /** Rate-limited frames in the current one-second window (abuse detection). */
  #limitedInWindow = 0;
  #limitedWindowStart = 0;
  readonly #upgradeStartedAt = performance.now();

  readonly #ctx: ConnectionContext;

  constructor(ctx: ConnectionContext, resume: ResumePosition) {
    this.#ctx = ctx;
    this.lifecycle = new ConnectionLifecycle(this.connectionId, ctx.metrics.lifecycleObserver);
    this.#resume = resume;
    const now = ctx.clock.now();
    this.lastSeenAt = now;
    this.#bucket = new TokenBucket(ctx.limits.rateLimitPerSec, ctx.limits.rateLimitBurst, now);
  }

  /** The upgrade was answered with an HTTP error; no socket ever existed. */
  refuse(): void {
    if (this.lifecycle.state === ConnectionState.CONNECTING) this.lifecycle.transition(CLOSED);
  }

  /**
   * Called synchronously from the handshake callback: listeners are attached before any frame
   * can be read, so nothing the client sends early is lost.
   */
  accept(ws: WebSocket, handshake: Handshake): void {
    const { upgradeAuth, method, originAllowed } = handshake;
    this.#ws = ws;
    this.#socket = handshake.socket ?? null;
    this.#writesFrames = this.#socket !== null && ws.extensions === '';
    this.lifecycle.transition(ACCEPTED);
    this.#ctx.connections.add(this);
    ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
    ws.on('pong', () => this.#sawPeer());
    ws.on(
      'close',
      (code) =>
        void this.#onSocketClosed(code).catch((error: unknown) => {
          this.#ctx.metrics.faults.inc({ context: 'close' });
          this.#ctx.logger.error({ conn: this.connectionId, err: error }, 'close failed');
        }),
    );
    ws.on('error', (error) => this.#ctx.logger.debug({ conn: this.connectionId, err: error.message }, 'socket error'));

    if (!originAllowed) return this.close(CloseCode.FORBIDDEN, 'origin_not_allowed');
    if (upgradeAuth && method) {
      this.#authStarted = true;
      this.#ctx.metrics.auth.inc({ method, outcome: upgradeAuth.ok ? 'ok' : upgradeAuth.reason });
      if (!upgradeAuth.ok) return this.close(CloseCode.UNAUTHORIZED, upgradeAuth.reason);
      if (this.#pastExpiry(upgradeAuth.expiresAt)) return this.close(CloseCode.UNAUTHORIZED, 'token_expired');
      this.#authenticated(upgradeAuth.userId, upgradeAuth.expiresAt).catch((error: unknown) => this.#bug(error, 'setup'));
      return;
    }
    this.authDeadline = this.#ctx.clock.now() + this.#ctx.limits.authTimeoutMs;
    this.#ctx.awaitingAuth.add(this);
  }

  isOpen(): boolean {
    return !this.lifecycle.isEnding;
  }

  deliver(entry: LogEntry): void {
    if (this.lifecycle.isEnding) return;
    if (this.#liveBuffer) {
      this.#liveBuffer.push(entry);
      if (this.#liveBuffer.length > this.#ctx.limits.maxBufferedEvents) {
        this.close(CloseCode.SLOW_CONSUMER, 'slow_consumer');
      }
      return;
    }
    this.#sendEntry(entry, true);
  }

  resync(): void {
    this.close(CloseCode.TRY_AGAIN_LATER, 'resync');
  }

  /** Starts the closing handshake; a no-op once closing. */
  close(code: number, reason: string): void {
    if (!this.lifecycle.beginClosing()) return;
    this.#ctx.awaitingAuth.delete(this);
    this.#dropInbox();
    this.#ws?.close(code, reason);
  }

  /** Drops a peer that stopped answering; the socket's close event finishes the teardown. */
  terminate(): void {
    if (this.lifecycle.beginClosing()) this.#ctx.awaitingAuth.delete(this);
    this.#dropInbox();
    this.#ws?.terminate();
  }

  /** Called by the gateway's single sweeper: token expiry and heartbeats. */
  sweep(now: number, heartbeatMs: number, heartbeatTimeoutMs: number): void {
    if (this.lifecycle.isEnding) return;
    if (now >= this.expiresAt && !this.#refreshPending()) {
      this.#ctx.logger.info({ conn: this.connectionId, user: this.userId }, 'token expired');
      return this.close(CloseCode.UNAUTHORIZED, 'token_expired');
    }
    if (this.pingSentAt !== 0) {
      if (now - this.pingSentAt >= heartbeatTimeoutMs) {
        this.#ctx.logger.info({ conn: this.connectionId, user: this.userId }, 'heartbeat timeout');
        this.terminate();
      }
    } else if (now - this.lastSeenAt >= heartbeatMs) {
      this.pingSentAt = now;
      this.#ws!.ping();
    }
  }

  /**
   * A `refresh_token` is being verified, or waits in the inbox behind a frame still being handled
   * (e.g. a message waiting on the engine): the contract lets it win over the expiry. Scanned only
   * once the token has expired, never per frame; the wait is bounded by that frame's handling,
   * after which a refused refresh leaves the expiry as it was and the next sweep closes.
   */
  #refreshPending(): boolean {
    if (this.#refreshing > 0) return true;
    return this.#inbox.some((held) => {
      if (held.text === null) return false;
      const parsed = parseClientFrame(held.text);
      return parsed.kind === 'frame' && parsed.frame.type === 'refresh_token';
    });
  }

  /**
   * The verifier tolerates clock skew on `exp`, but the sweeper closes at `exp` itself: a token
   * already past it would be accepted and then closed within a sweep, so it is refused here.
   */
  #pastExpiry(expiresAt: number): boolean {
    return expiresAt <= this.#ctx.clock.now();
  }

  #sawPeer(): void {
    this.lastSeenAt = this.#ctx.clock.now();
    this.pingSentAt = 0;
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    if (this.lifecycle.isEnding) return;
    try {
      this.#receive(data, isBinary);
    } catch (error) {
      this.#bug(error, 'message');
    }
  }

  #receive(data: RawData, isBinary: boolean): void {
    this.#sawPeer();
    // ws hands text frames over as one Buffer (binaryType 'nodebuffer', the default).
    const text = isBinary ? null : (data as Buffer).toString();
    if (text !== null && !this.#authStarted && mayBeObject(text)) {
      // Parsed only to find the auth frame; any other frame is held as its raw text.
      const parsed = parseClientFrame(text);
      if (parsed.kind === 'frame' && parsed.frame.type === 'auth') {
        this.#authStarted = true;
        this.#authenticateWithFrame(parsed.frame).catch((error: unknown) => this.#bug(error, 'setup'));
        return;
      }
    }
    if (this.#inbox.length >= this.#ctx.limits.inboxLimit) {
      return this.close(CloseCode.POLICY_VIOLATION, 'inbox_overflow');
    }
    if (this.lifecycle.state === PROCESSING_READY) {
      if (!this.#bucket.take(this.lastSeenAt)) return this.#rateLimited(text);
      this.#inbox.push({ text, heldBytes: 0 });
    } else if (!this.#hold(text, text === null ? 0 : rawLength(data, text))) {
      return;
    }
    this.#pump();
  }

  /** Holds a frame that arrived before PROCESSING_READY within both byte bounds; false if it closed instead. */
  #hold(text: string | null, bytes: number): boolean {
    if (this.#heldBytes + bytes > this.#ctx.limits.inboxMaxBytes) {
      this.close(CloseCode.POLICY_VIOLATION, 'inbox_overflow');
      return false;
    }
    if (!this.#ctx.heldBytes.take(bytes)) {
      this.#ctx.logger.warn(
        { conn: this.connectionId, held: this.#ctx.heldBytes.used, limit: this.#ctx.heldBytes.limit },
        'bytes held before connection_ready reached the gateway limit; connection closed',
      );
      this.close(CloseCode.TRY_AGAIN_LATER, 'overloaded');
      return false;
    }
    this.#heldBytes += bytes;
    this.#inbox.push({ text, heldBytes: bytes });
    return true;
  }

  #release(bytes: number): void {
    this.#heldBytes -= bytes;
    this.#ctx.heldBytes.give(bytes);
  }

  /** A closing connection dispatches nothing more; what it held goes back at once. */
  #dropInbox(): void {
    this.#release(this.#heldBytes);
    this.#inbox.length = 0;
  }

  #rateLimited(text: string | null): void {
    const now = this.lastSeenAt;
    if (now - this.#limitedWindowStart >= 1000) {
      this.#limitedWindowStart = now;
      this.#limitedInWindow = 0;
    }
    if (++this.#limitedInWindow > this.#ctx.limits.abuseLimit) {
      return this.close(CloseCode.POLICY_VIOLATION, 'rate_limit_abuse');
    }
    this.#sendError('rate_limited', 'too many frames; slow down', refOf(text === null ? BINARY_FRAME : parseClientFrame(text)));
  }

  async #authenticateWithFrame(frame: AuthFrame): Promise<void> {
    const result = await this.#ctx.verifier.verify(frame.token);
    this.#ctx.metrics.auth.inc({ method: 'frame', outcome: result.ok ? 'ok' : result.reason });
    if (this.lifecycle.isEnding) return;
    if (!result.ok) return this.close(CloseCode.UNAUTHORIZED, result.reason);
    if (this.#pastExpiry(result.expiresAt)) return this.close(CloseCode.UNAUTHORIZED, 'token_expired');
    // The frame's position replaces the URL's only when it names one (malformed fields are absent).
    const resume = resumeFields(frame.last_seq, frame.epoch);
    if (resume.lastSeq !== undefined) this.#resume = resume;
    await this.#authenticated(result.userId, result.expiresAt);
  }

  async #authenticated(userId: string, expiresAt: number): Promise<void> {
    this.lifecycle.transition(AUTHENTICATED);
    this.#ctx.awaitingAuth.delete(this);
    this.userId = userId;
    this.expiresAt = expiresAt;
    const coordinator = this.#ctx.registry.getOrCreate(userId);
    this.#coordinator = coordinator;
    this.#generation = coordinator.admit(this);
    let setup: SetupResult;
    try {
      setup = await coordinator.setup(this, this.#generation, this.#resume);
    } catch (error) {
      return this.#fail(error, 'setup', CloseCode.TRY_AGAIN_LATER, 'engine_unavailable');
    }
    if (this.lifecycle.isEnding) return;
    if (!setup.ok) {
      if (setup.reason === 'too_many_connections') {
        return this.close(CloseCode.TOO_MANY_CONNECTIONS, 'too_many_connections');
      }
      return this.#bug(new Error(`setup denied: ${setup.reason}`), 'setup');
    }
    this.lifecycle.transition(SERVICES_READY);
    this.#becomeReady(setup);
  }

  /** Synchronous from connection_ready to PROCESSING_READY: no live entry can slip in between. */
  #becomeReady(setup: Extract<SetupResult, { ok: true }>): void {
    // Not checked: the replay's size is bounded by retention (docs/PROTOCOL.md section 8).
    this.#write(
      connectionReadyFrame({
        connectionId: this.connectionId,
        userId: this.userId!,
        epoch: setup.head.epoch,
        lastSeq: setup.head.lastSeq,
        resumed: setup.resumed,
        replayed: setup.replay.length,
        heartbeatMs: this.#ctx.limits.heartbeatMs,
        serverTime: new Date(this.#ctx.clock.now()),
      }),
      false,
    );
    this.#lastSentSeq = setup.resumed ? this.#resume.lastSeq! : setup.head.lastSeq;
    const buffered = this.#liveBuffer!;
    this.#liveBuffer = null;
    for (const entry of [...setup.replay, ...buffered]) {
      this.#sendEntry(entry, false);
      if (this.lifecycle.isEnding) return;
    }
    this.lifecycle.transition(PROCESSING_READY);
    this.#ctx.metrics.timeToReady.observe((performance.now() - this.#upgradeStartedAt) / 1000);
    this.#ctx.logger.debug({ conn: this.connectionId, user: this.userId, resumed: setup.resumed }, 'connection ready');
    this.#pump();
  }

  #sendEntry(entry: LogEntry, checked: boolean): void {
    if (entry.seq <= this.#lastSentSeq) return;
    if (entry.seq !== this.#lastSentSeq + 1) {
      // The coordinator guarantees contiguity; a gap here is a bug, and the client must resume.
      return this.#bug(new Error(`seq gap: sent ${this.#lastSentSeq}, got ${entry.seq}`), 'deliver');
    }
    if (this.#writesFrames) this.#writeFrame(entryFrame(entry), checked);
    else this.#write(entry.json, checked);
    this.#lastSentSeq = entry.seq;
    this.#ctx.metrics.eventSent(entry.type);
  }

  /** Dispatches held frames in arrival order, one at a time, only in PROCESSING_READY. */
  #pump(): void {
    if (this.#dispatching) return;
    this.#dispatching = true;
    while (this.#inbox.length > 0 && this.lifecycle.state === PROCESSING_READY) {
      const held = this.#inbox.shift()!;
      this.#release(held.heldBytes);
      let pending: Promise<void> | undefined;
      try {
        pending = this.#handle(held.text === null ? BINARY_FRAME : parseClientFrame(held.text));
      } catch (error) {
        this.#dispatching = false;
        return this.#bug(error, 'dispatch');
      }
      if (pending) {
        pending.then(
          () => {
            this.#dispatching = false;
            this.#pump();
          },
          (error) => this.#fail(error, 'dispatch', CloseCode.TRY_AGAIN_LATER, 'engine_unavailable'),
        );
        return;
      }
    }
    this.#dispatching = false;
  }

  #handle(parsed: ParsedFrame): Promise<void> | undefined {
    if (parsed.kind === 'invalid') {
      this.#sendError(parsed.code, parsed.message, parsed.ref, parsed.path);
      return;
    }
    const frame: ClientFrame = parsed.frame;
    switch (frame.type) {
      case 'auth':
        this.#sendError('already_authenticated', 'this connection is already authenticated', null);
        return;
      case 'ping':
        this.#send(pongFrame(frame.id, new Date(this.#ctx.clock.now())));
        return;
      case 'refresh_token':
        return this.#refreshToken(frame);
      case 'cancel':
        return this.#ctx.runs.cancel(this.userId!, frame.run_id, (reply) => {
          if (reply.kind === 'ack') this.#send(ackFrame(frame.id, reply.runId, reply.threadId, reply.status));
          else this.#sendError(reply.code, reply.message, frame.id);
        });
      case 'user_message':
        return this.#ctx.runs.submit(this.userId!, { id: frame.id, threadId: frame.thread_id, text: frame.text }, (reply) => {
          if (reply.kind === 'ack') this.#send(ackFrame(frame.id, reply.runId, reply.threadId, reply.status));
          else this.#sendError(reply.code, reply.message, frame.id);
        });
    }
  }

  /** A fresher token of the same user moves the expiry; a refused one leaves it as it was. */
  async #refreshToken(frame: RefreshTokenFrame): Promise<void> {
    this.#refreshing++;
    let result: VerifyResult;
    try {
      result = await this.#ctx.verifier.verify(frame.token);
    } finally {
      this.#refreshing--;
    }
    this.#ctx.metrics.auth.inc({ method: 'refresh', outcome: result.ok ? 'ok' : result.reason });
    if (this.lifecycle.isEnding) return;
    if (!result.ok) {
      const code = result.reason === 'token_expired' ? 'token_expired' : 'token_invalid';
      return this.#sendError(code, `token refused: ${code}`, frame.id);
    }
    if (this.#pastExpiry(result.expiresAt)) return this.#sendError('token_expired', 'token refused: token_expired', frame.id);
    if (result.userId !== this.userId) {
      return this.#sendError('forbidden', 'the token names another user than this connection', frame.id);
    }
    this.expiresAt = result.expiresAt;
    this.#send(tokenRefreshedFrame(frame.id, result.expiresAt));
  }

  /**
   * Every frame but close goes out here. `checked` frames (live events, replies) count against
   * the outbound limit: what the socket did not take may not exceed it. With the socket corked
   * for the turn or the tick (the gateway's frameBatching: what it produces leaves in one write)
   * that is checked after the uncork, so a large batch to a client that reads is not mistaken
   * for a backlog.
   */
  #write(frame: string, checked: boolean): void {
    const socket = this.#socket;
    if (socket) this.#ctx.corkFrames(socket, this.#afterFlush);
    this.#ws!.send(frame);
    if (!checked) return;
    if (socket) this.#backlogCheckDue = true;
    else this.#checkBacklog();
  }

  /** #write for a complete frame (#writesFrames): as ws.send would, it drops it once ws is past OPEN. */
  #writeFrame(frame: Buffer, checked: boolean): void {
    if (this.#ws!.readyState !== WebSocket.OPEN) return;
    const socket = this.#socket!;
    this.#ctx.corkFrames(socket, this.#afterFlush);
    socket.write(frame);
    if (checked) this.#backlogCheckDue = true;
  }

  readonly #afterFlush = (): void => {
    if (!this.#backlogCheckDue) return;
    this.#backlogCheckDue = false;
    this.#checkBacklog();
  };

  #checkBacklog(): void {
    if (!this.lifecycle.isEnding && this.#ws!.bufferedAmount > this.#ctx.limits.slowConsumerBytes) {
      this.close(CloseCode.SLOW_CONSUMER, 'slow_consumer');
    }
  }

  /** Replies (ack, error, pong). */
  #send(frame: string): void {
    if (this.lifecycle.isEnding) return;
    this.#write(frame, true);
  }

  #sendError(code: ErrorCode, message: string, ref: FrameRef, path?: string): void {
    this.#ctx.metrics.errorsSent.inc({ code });
    this.#send(errorFrame(code, message, ref, path));
  }

  /** An exception that escaped a handler: a bug, answered with 1011 on this socket only. */
  #bug(error: unknown, context: string): void {
    this.#fail(error, context, CloseCode.SERVER_FAULT, 'server_fault');
  }

  #fail(error: unknown, context: string, code: number, reason: string): void {
    this.#ctx.metrics.faults.inc({ context });
    this.#ctx.logger.error({ conn: this.connectionId, user: this.userId, err: error, context }, 'connection failed');
    this.close(code, reason);
  }

  async #onSocketClosed(code: number): Promise<void> {
    this.lifecycle.beginClosing();
    this.#ctx.awaitingAuth.delete(this);
    this.#dropInbox();
    this.#liveBuffer = null;
    this.#ctx.metrics.closes.inc({ code: String(code) });
    if (this.#coordinator) {
      try {
        const result = await this.#coordinator.teardown(this.connectionId, this.#generation);
        if (!result.ok) this.#ctx.logger.warn({ conn: this.connectionId, reason: result.reason }, 'teardown denied');
      } catch (error) {
        this.#ctx.metrics.faults.inc({ context: 'teardown' });
        this.#ctx.logger.error({ conn: this.connectionId, err: error }, 'teardown failed');
      }
    }
    this.lifecycle.transition(CLOSED);
    this.#ctx.connections.delete(this);
    this.#ctx.connectionClosed(this);
  }
}

function refOf(parsed: ParsedFrame): FrameRef {
  if (parsed.kind === 'invalid') return parsed.ref;
  const id = (parsed.frame as { id?: unknown }).id;
  return typeof id === 'string' || typeof id === 'number' ? id : null;
}

/** The frame's size on the wire (what the inbound limits are stated in). */
function rawLength(data: RawData, text: string): number {
  return Buffer.isBuffer(data) ? data.length : Buffer.byteLength(text);
}
