import { PROTOCOL_NAME, TOKEN_PROTOCOL_PREFIX, systemClock, type Clock, type TimerHandle } from '@agentwire/protocol';
import { DEFAULT_BACKOFF, backoffDelay, decideAfterClose, decideAfterDrop, longBackoffDelay, type BackoffOptions, type CloseDecision } from './backoff.js';
import { DEFAULT_MAX_PAGE_BYTES, HistoryHttp, httpBaseOf, type FetchFunction, type PageOptions } from './history.js';
import { ClientState, ClientStateMachine } from './state.js';
import { refreshDelay, refreshRetryDelay, tokenExpiresAt } from './tokenRefresh.js';
import type {
  AckFrame,
  AgentEvent,
  ClientEventMap,
  ClientEventName,
  CloseInfo,
  ConnectionReadyFrame,
  ErrorFrame,
  HistoryAssistantMessage,
  HistoryPage,
  PongFrame,
  ServerFrame,
  ThreadInfo,
  ThreadsPage,
  TokenRefreshedFrame,
} from './types.js';

// The agentwire client. Environment-neutral: it uses only what browsers and Node both have (no
// Node module is imported here).

/** The part of the WHATWG WebSocket the client uses (browsers' WebSocket and `ws` both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { readonly data: unknown }) => void) | null;
  onclose: ((event: { readonly code: number; readonly reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** `ws` only: drops the TCP connection at once (no closing handshake). */
  terminate?(): void;
}

/** A WebSocket class for `ClientOptions.WebSocket`, e.g. the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/**
 * A token, or a function that returns one: called on every dial, and, for tokens with an
 * `exp`, at 80 % of their lifetime to refresh the open connection (`refresh_token`).
 */
export type TokenSource = string | (() => string | Promise<string>);

/** Options of `createClient`; only `url` is required. */
export interface ClientOptions {
  /** The gateway's WebSocket URL, e.g. `wss://example.com/ws`. */
  url: string;
  /** Sent as the `jwt.<token>` subprotocol next to `agentwire.v1`. */
  token?: TokenSource;
  /** A WebSocket constructor; default `globalThis.WebSocket`, else the "ws" package. */
  WebSocket?: WebSocketConstructor;
  /** A position saved earlier (e.g. in storage): the first dial resumes from it. */
  resume?: { readonly lastSeq: number; readonly epoch: string };
  /** Backoff floor. Default 500. */
  minDelayMs?: number;
  /** Backoff ceiling. Default 20 000. */
  maxDelayMs?: number;
  /** Base of the long backoff after 4429. Default 60 000. */
  longDelayMs?: number;
  /** Consecutive retries without reaching ready before giving up (closed). Default Infinity. */
  maxRetries?: number;
  /** A dial that has not reached `connection_ready` within this is dropped. Default 15 000. */
  connectTimeoutMs?: number;
  /** Watchdog: send a `ping` frame after this long without any frame. 0 turns it off. Default 20 000. */
  pingIntervalMs?: number;
  /** Watchdog: no frame within this after the ping means the socket is dead. Default 10 000. */
  pongTimeoutMs?: number;
  /** Runs (per run id) whose events are kept for `run()`. Default 50. */
  runBufferSize?: number;
  /** [0, 1) random source for jitter. Default Math.random. */
  random?: () => number;
  clock?: Clock;
  /** Makes idempotency ids for `send` and `cancel`. Default crypto.randomUUID. */
  idFactory?: () => string;
  /** Called when a listener throws. Default: console.error. */
  onListenerError?: (error: unknown, event: ClientEventName) => void;
  /** Base URL of the history routes (`threads()`, `history()`). Default: the http(s) origin of `url`. */
  httpUrl?: string;
  /** The `fetch` of the history routes. Default `globalThis.fetch`. */
  fetch?: FetchFunction;
  /** Deadline of one history request. Default 15 000. */
  httpTimeoutMs?: number;
  /**
   * Largest history answer read, in bytes: a messages page past it rejects with
   * `AnswerTooLargeError` (ask with a smaller `limit`, or raise this). Other answers are read up
   * to 1 MiB at most. Default 64 MiB.
   */
  httpMaxBytes?: number;
  /**
   * The threads to reload when the server could not resume (`resumed: false`), e.g. the one on
   * screen. Each is fetched with `history()`; `history_reloaded` carries the pages, and live
   * events of a reloaded thread up to its page's `last_seq` (already in the page) are not
   * delivered again: the page plus the events after it are the thread, nothing twice.
   */
  reloadThreads?: () => Iterable<string>;
}

/** The client is closed (by `close()` or because the server said stop). */
export class ClientClosedError extends Error {
  override readonly name = 'ClientClosedError';
  constructor(readonly closeInfo: CloseInfo) {
    super(`agentwire client closed (${closeInfo.code} ${closeInfo.reason}${closeInfo.error ? `: ${closeInfo.error}` : ''})`);
  }
}

/** The server answered a `send` or `cancel` with an `error` frame. */
export class RequestError extends Error {
  override readonly name = 'RequestError';
  readonly code: string;
  constructor(readonly frame: ErrorFrame) {
    super(`${frame.code}: ${frame.message}`);
    this.code = frame.code;
  }
}

/**
 * The events of one run, in seq order, as an async iterator that also keeps the run's answer as
 * far as it has been yielded: streamed answers arrive as `agent_text_delta` events (a few words
 * each, PROTOCOL.md section 7), and `text` is their concatenation so far, so a UI can render
 * `events.text` after each event. Once `agent_completed` is yielded, `text` is its `text`.
 *
 * When the server cannot resume (`resumed: false`) while the run is in progress, the events
 * missed meanwhile are gone from the connection: the iterator reloads the run's answer through
 * the seam of PROTOCOL.md section 14 (its thread's newest page of messages), `text`, `thinking`
 * and `reloaded` become the page's answer, and it goes on with the run's events after the page's
 * `last_seq`: the page plus those events are the answer, no fragment twice. A run that ended
 * within what was missed ends the iterator after the reload, its outcome in `reloaded.status`.
 */
export interface RunEvents extends AsyncIterableIterator<AgentEvent> {
  /** The answer so far: the text deltas yielded so far, concatenated (from the reloaded answer on); after `agent_completed`, its text. */
  readonly text: string;
  /** The streamed reasoning so far: the `agent_thinking_delta` texts yielded so far, concatenated (from the reloaded answer's on). */
  readonly thinking: string;
  /** The run's answer as the history page had it, once the iterator reloaded it after `resumed: false`; else null. */
  readonly reloaded: HistoryAssistantMessage | null;
}

/** The server could not resume (`resumed: false`) while this run was in progress, and the run could not be reloaded (`reason`). */
export class HistoryResetError extends Error {
  override readonly name = 'HistoryResetError';
  constructor(
    readonly runId: string,
    readonly reason: string,
  ) {
    super(`history was reset while run ${runId} was in progress, and it could not be reloaded: ${reason}`);
  }
}

/** Delays between fetches of a page that does not reach the position of a connection that could not resume (see #pageReaching). */
const PAGE_CATCH_UP_DELAYS_MS: readonly number[] = [50, 100, 200, 400, 800, 1600];

/** Live events held while threads reload after `resumed: false`; past this many, they are released unfiltered. */
const MAX_RELOAD_BUFFER = 10_000;

interface PendingRequest {
  readonly id: string;
  readonly kind: 'message' | 'cancel';
  readonly frame: string;
  readonly promise: Promise<AckFrame>;
  resolve(ack: AckFrame): void;
  reject(error: Error): void;
  /** Serial of the socket this request was last written to (-1: not yet). */
  sentOn: number;
  /** Serial of the socket this request was first written to (-1: not yet). */
  firstSentOn: number;
}

/** A token as the client got it from its provider. */
interface Credential {
  readonly token: string;
  /** Local clock. */
  readonly obtainedAt: number;
  /** `exp` on the local clock (corrected by the server's clock offset), or null if unknown. */
  readonly expiresAt: number | null;
}

/** A run's answer reloaded through the seam after `resumed: false`, in its place among the run's events. */
interface ReloadedAnswer {
  readonly reloaded: HistoryAssistantMessage;
}

interface RunRecord {
  readonly runId: string;
  /** Known from the ack or from any event of the run; a run of unknown thread cannot be reloaded. */
  threadId: string | null;
  readonly events: Array<AgentEvent | ReloadedAnswer>;
  done: boolean;
  failure: Error | null;
  /**
   * While the run's answer reloads after `resumed: false`: its live events, held until the page
   * comes. A new array per reload, so it also tells a page of a reload that another
   * `resumed: false` superseded.
   */
  held: AgentEvent[] | null;
  readonly wake: Set<() => void>;
}

type Listener<K extends ClientEventName> = (payload: ClientEventMap[K]) => void;

const OPEN = 1;
const { IDLE, CONNECTING, READY, RECONNECTING, CLOSED } = ClientState;

/**
 * The agentwire client: one connection to a gateway that survives network loss, gateway
 * restarts and sleeping laptops. The WebSocket comes from `options.WebSocket`, else
 * `globalThis.WebSocket` (browsers, Node 22+), else the "ws" package (Node 20), imported at the
 * first dial and only then.
 */
export class AgentwireClient {
  readonly #url: string;
  readonly #token: TokenSource | undefined;
  /** null until the first dial loads "ws" (no platform WebSocket and none passed). */
  #WebSocket: WebSocketConstructor | null;
  readonly #backoff: BackoffOptions;
  readonly #maxRetries: number;
  readonly #connectTimeoutMs: number;
  readonly #pingIntervalMs: number;
  readonly #pongTimeoutMs: number;
  readonly #runBufferSize: number;
  readonly #random: () => number;
  readonly #clock: Clock;
  readonly #newId: () => string;
  readonly #onListenerError: (error: unknown, event: ClientEventName) => void;

  readonly #machine: ClientStateMachine;
  readonly #listeners = new Map<ClientEventName, Set<(payload: never) => void>>();
  #closeInfo: CloseInfo | null = null;
  #readyFrame: ConnectionReadyFrame | null = null;
  #readyWaiters: Array<{ resolve(frame: ConnectionReadyFrame): void; reject(error: Error): void }> = [];

  /** Position in the user's log; epoch null until the first ready (or `resume`). */
  #epoch: string | null = null;
  #lastSeq = 0;
  #duplicates = 0;

  /** Bumped by every dial and by close(): a dial whose number is stale stops. */
  #dialGen = 0;
  #ws: WebSocketLike | null = null;
  #socketSerial = 0;
  #socketWasReady = false;
  #lastError: string | undefined;
  #attempt = 0;
  #authRetried = false;
  #retryTimer: TimerHandle | null = null;
  #connectTimer: TimerHandle | null = null;
  #watchdogTimer: TimerHandle | null = null;
  #lastFrameAt = 0;
  #pingSentAt: number | null = null;
  #pingCount = 0;
  /** The token the current socket is authenticated with (the last one the server took). */
  #credential: Credential | null = null;
  /** server_time - local time at the last connection_ready: reads `exp` on the local clock. */
  #serverOffsetMs = 0;
  #refreshTimer: TimerHandle | null = null;
  /** A `refresh_token` sent and not answered yet. */
  #refreshing: { readonly id: string; readonly credential: Credential } | null = null;

  readonly #pending = new Map<string, PendingRequest>();
  readonly #runs = new Map<string, RunRecord>();
  readonly #http: HistoryHttp;
  readonly #reloadThreads: (() => Iterable<string>) | undefined;
  /** Live events held back while a reload after `resumed: false` is in flight. */
  #reloadBuffer: AgentEvent[] | null = null;
  /** Bumped by every reload (and close()): a reload whose number is stale delivers nothing. */
  #reloadGen = 0;
  /** The last connection that could not resume (`resumed: false`): its socket's serial and the position it began at. */
  #lastReset = { serial: -1, epoch: '', lastSeq: 0 };
  /** Waits of #sleep, cleared by close(). */
  readonly #sleeps = new Set<TimerHandle>();

  constructor(options: ClientOptions) {
    this.#WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? null;
    this.#url = options.url;
    this.#token = options.token;
    this.#backoff = {
      minDelayMs: options.minDelayMs ?? DEFAULT_BACKOFF.minDelayMs,
      maxDelayMs: options.maxDelayMs ?? DEFAULT_BACKOFF.maxDelayMs,
      longDelayMs: options.longDelayMs ?? DEFAULT_BACKOFF.longDelayMs,
    };
    this.#maxRetries = options.maxRetries ?? Infinity;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 15_000;
    this.#pingIntervalMs = options.pingIntervalMs ?? 20_000;
    this.#pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.#runBufferSize = options.runBufferSize ?? 50;
    this.#random = options.random ?? Math.random;
    this.#clock = options.clock ?? systemClock;
    this.#newId = options.idFactory ?? defaultId;
    this.#onListenerError = options.onListenerError ?? ((error, event) => console.error(`agentwire client: a "${event}" listener threw`, error));
    this.#reloadThreads = options.reloadThreads;
    const token = options.token;
    const fetchFunction = options.fetch ?? (globalThis as { fetch?: FetchFunction }).fetch;
    this.#http = new HistoryHttp({
      baseUrl: options.httpUrl ?? httpBaseOf(options.url),
      token: () => Promise.resolve(typeof token === 'function' ? token() : token),
      fetch: fetchFunction ?? (() => Promise.reject(new Error('no fetch: pass options.fetch'))),
      timeoutMs: options.httpTimeoutMs ?? 15_000,
      maxPageBytes: options.httpMaxBytes ?? DEFAULT_MAX_PAGE_BYTES,
    });
    if (options.resume) {
      this.#epoch = options.resume.epoch;
      this.#lastSeq = options.resume.lastSeq;
    }
    this.#machine = new ClientStateMachine((previous, state) =>
      this.#emit('state', state === CLOSED ? { state, previous, closeInfo: this.#closeInfo! } : { state, previous }),
    );
  }

  get state(): ClientState {
    return this.#machine.state;
  }

  /** Why the client is closed; null while it is not. */
  get closeInfo(): CloseInfo | null {
    return this.#closeInfo;
  }

  /** The last `connection_ready` received (also after the socket was lost). */
  get readyFrame(): ConnectionReadyFrame | null {
    return this.#readyFrame;
  }

  /** The position the next dial resumes from (save it to resume after a page reload). */
  get position(): { epoch: string; lastSeq: number } | null {
    return this.#epoch === null ? null : { epoch: this.#epoch, lastSeq: this.#lastSeq };
  }

  /** `send` and `cancel` requests not yet answered. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Durable events dropped because their seq had been seen already. */
  get duplicatesDropped(): number {
    return this.#duplicates;
  }

  /** Subscribes to a client event; returns the unsubscribe function. */
  on<K extends ClientEventName>(event: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener as (payload: never) => void);
    return () => this.off(event, listener);
  }

  off<K extends ClientEventName>(event: K, listener: Listener<K>): void {
    this.#listeners.get(event)?.delete(listener as (payload: never) => void);
  }

  /**
   * Starts connecting (from idle) and resolves with the next `connection_ready` (at once when
   * ready). Rejects with ClientClosedError if the client closes first. `options.resume` is a
   * position for the first dial, as `ClientOptions.resume`, known only after the client was
   * made: the `epoch`/`last_seq` of a `history()` page loaded before connecting, so that the
   * server sends exactly the events after it. It is refused once the client has left idle.
   */
  connect(options: { resume?: { readonly lastSeq: number; readonly epoch: string } } = {}): Promise<ConnectionReadyFrame> {
    if (this.state === CLOSED) return Promise.reject(new ClientClosedError(this.#closeInfo!));
    if (options.resume) {
      if (this.state !== IDLE) return Promise.reject(new Error(`connect: resume applies to the first dial only (the client is ${this.state})`));
      this.#epoch = options.resume.epoch;
      this.#lastSeq = options.resume.lastSeq;
    }
    if (this.state === READY) return Promise.resolve(this.#readyFrame!);
    const ready = new Promise<ConnectionReadyFrame>((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
    if (this.state === IDLE) {
      this.#machine.transition(CONNECTING);
      void this.#dial();
    }
    return ready;
  }

  /**
   * Sends a user message and resolves with its ack (or rejects with RequestError). Until it is
   * acked, the message is re-sent with the same idempotency id on every new connection, so it
   * is neither lost nor run twice. Queued while not ready.
   */
  send(threadId: string, text: string, options: { id?: string } = {}): Promise<AckFrame> {
    const id = options.id ?? this.#newId();
    const existing = this.#pending.get(id);
    if (existing) return existing.promise;
    return this.#request(id, 'message', { type: 'user_message', id, thread_id: threadId, text });
  }

  /**
   * `send`, plus the run's events: `for await (const e of run.events)`, with the answer so far
   * in `run.events.text` (see RunEvents).
   */
  ask(threadId: string, text: string, options: { id?: string } = {}): { id: string; ack: Promise<AckFrame>; events: RunEvents } {
    const id = options.id ?? this.#newId();
    const ack = this.send(threadId, text, { id });
    ack.catch(() => {}); // the iterator (or the caller) observes the rejection
    const events = async function* (this: void, client: AgentwireClient): AsyncGenerator<AgentEvent | ReloadedAnswer, void, undefined> {
      const answer = await ack;
      yield* client.#iterate(client.#track(answer.run_id, answer.thread_id));
    };
    return { id, ack, events: keepingText(events(this)) };
  }

  /** Asks the server to cancel a run; resolves with the `cancelling` ack. Re-sent like `send`. */
  cancel(runId: string): Promise<AckFrame> {
    const id = this.#newId();
    return this.#request(id, 'cancel', { type: 'cancel', id, run_id: runId });
  }

  /**
   * The events of one run, in seq order, ending after its terminal event. Includes the events
   * already received for runs this client sent (or asked for before) — the last
   * `runBufferSize` of them. Throws ClientClosedError if the client closes first, and
   * HistoryResetError if the server could not resume while the run was in progress and the run
   * could not be reloaded (see RunEvents). Keeps the answer so far in `text`.
   */
  run(runId: string): RunEvents {
    return keepingText(this.#iterate(this.#track(runId)));
  }

  /**
   * The user's threads, most recently updated first (`GET /v1/threads`). Rejects with HttpError
   * for an error status, and with MalformedAnswerError for an answer without `threads` or
   * `next_cursor`; malformed threads of an answer are left out (see MalformedAnswerError).
   */
  threads(page: PageOptions = {}): Promise<ThreadsPage> {
    return this.#http.threads(page);
  }

  /**
   * A page of a thread's messages, newest page first (`GET /v1/threads/<id>/messages`; pass
   * `next_cursor` for older ones). Events after the page's `last_seq` arrive live. Rejects with
   * HttpError (status 404 for a thread the user does not have), and with MalformedAnswerError
   * for an answer without `epoch`, `last_seq`, `messages` or `next_cursor`, or about another
   * thread; malformed messages (and their malformed tool calls) are left out.
   */
  history(threadId: string, page: PageOptions = {}): Promise<HistoryPage> {
    return this.#http.messages(threadId, page);
  }

  /** Renames a thread (`PATCH /v1/threads/<id>`); resolves with the thread (HttpError, MalformedAnswerError as `threads()`). */
  renameThread(threadId: string, title: string): Promise<ThreadInfo> {
    return this.#http.rename(threadId, title);
  }

  /** Deletes a thread and cancels its runs (`DELETE /v1/threads/<id>`). Rejects with HttpError. */
  deleteThread(threadId: string): Promise<void> {
    return this.#http.delete(threadId);
  }

  /** Closes the connection with 1000 and ends the client: pending requests and runs reject. */
  close(): void {
    if (this.state === CLOSED) return;
    this.#dialGen++;
    this.#reloadGen++;
    this.#reloadBuffer = null;
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      detach(ws);
      try {
        if (ws.readyState === OPEN) ws.close(1000, 'client_closed');
        else if (ws.terminate) ws.terminate();
        else ws.close();
      } catch {
        // already closing
      }
    }
    this.#finish({ code: 1000, reason: 'client_closed' });
  }

  // ---- dialing ----

  async #dial(): Promise<void> {
    const gen = ++this.#dialGen;
    this.#lastError = undefined;
    this.#socketWasReady = false;
    let token: string | undefined;
    try {
      token = typeof this.#token === 'function' ? await this.#token() : this.#token;
    } catch (error) {
      if (gen !== this.#dialGen || this.state === CLOSED) return;
      this.#emit('token_error', { error });
      if (gen !== this.#dialGen || this.#isClosed()) return;
      this.#lastError = errorText(error);
      this.#afterLoss(1006, 'token_unavailable', { action: 'backoff' });
      return;
    }
    if (gen !== this.#dialGen || this.state === CLOSED) return;
    if (this.#WebSocket === null) {
      try {
        this.#WebSocket = await importWs();
      } catch (error) {
        if (gen === this.#dialGen) this.#finish({ code: 1006, reason: 'no_websocket', error: errorText(error) });
        return;
      }
      if (gen !== this.#dialGen || this.#isClosed()) return;
    }
    const protocols = token ? [PROTOCOL_NAME, `${TOKEN_PROTOCOL_PREFIX}${token}`] : [PROTOCOL_NAME];
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(this.#dialUrl(), protocols);
    } catch (error) {
      // A URL the WebSocket constructor refuses will never work: give up.
      this.#finish({ code: 1006, reason: 'invalid_url', error: errorText(error) });
      return;
    }
    this.#ws = ws;
    this.#credential = token ? this.#credentialOf(token) : null;
    const serial = ++this.#socketSerial;
    ws.onmessage = (event) => {
      if (this.#ws === ws) this.#onMessage(ws, serial, event.data);
    };
    ws.onerror = (event) => {
      if (this.#ws === ws) this.#lastError = errorText(event);
    };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#clearSocketTimers();
      this.#afterLoss(event.code, event.reason);
    };
    this.#connectTimer = this.#clock.setTimeout(() => {
      this.#connectTimer = null;
      if (this.#ws === ws && !this.#socketWasReady) this.#drop('connect_timeout', { action: 'backoff' });
    }, this.#connectTimeoutMs);
  }

  #dialUrl(): string {
    if (this.#epoch === null) return this.#url;
    const base = (globalThis as { location?: { href?: string } }).location?.href;
    const url = base === undefined ? new URL(this.#url) : new URL(this.#url, base);
    url.searchParams.set('last_seq', String(this.#lastSeq));
    url.searchParams.set('epoch', this.#epoch);
    return url.toString();
  }

  /**
   * Drops the current socket without a closing handshake (it is dead, out of sync, or its token
   * could not be refreshed: then `code` is 4401, so that it counts as an auth failure).
   */
  #drop(reason: string, decision?: CloseDecision, code = 1006): void {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    this.#clearSocketTimers();
    detach(ws);
    try {
      if (ws.terminate) ws.terminate();
      else ws.close(1000, reason);
    } catch {
      // already gone
    }
    this.#afterLoss(code, reason, decision);
  }

  /** A socket ended or a dial failed: stop, or schedule the next dial. */
  #afterLoss(code: number, reason: string, decision?: CloseDecision): void {
    if (this.state === CLOSED) return;
    const error = this.#lastError;
    const wasReady = this.#socketWasReady;
    const context = { attempt: this.#attempt, authRetried: this.#authRetried };
    const next = decision ?? decideAfterClose(code, context);
    if (next.action === 'stop') return this.#finish(withError({ code, reason }, error));
    if (this.#attempt >= this.#maxRetries) {
      return this.#finish(withError({ code, reason, retriesExhausted: true }, error));
    }
    if (code === 4401) this.#authRetried = true;
    const delayMs =
      next.action === 'now'
        ? 0
        : next.action === 'long'
          ? longBackoffDelay(this.#backoff, this.#random)
          : backoffDelay(this.#attempt, this.#backoff, this.#random);
    this.#attempt++;
    if (this.state !== RECONNECTING) this.#machine.transition(RECONNECTING);
    if (this.state !== RECONNECTING) return;
    this.#emit('disconnect', withError({ code, reason, wasReady, attempt: this.#attempt, delayMs }, error));
    if (this.state !== RECONNECTING) return;
    if (delayMs === 0) {
      void this.#dial();
      return;
    }
    this.#retryTimer = this.#clock.setTimeout(() => {
      this.#retryTimer = null;
      if (this.state === RECONNECTING) void this.#dial();
    }, delayMs);
  }

  #finish(info: CloseInfo): void {
    if (this.state === CLOSED) return;
    this.#dialGen++;
    this.#ws = null;
    this.#clearSocketTimers();
    if (this.#retryTimer !== null) {
      this.#clock.clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
    this.#closeInfo = info;
    for (const timer of this.#sleeps) this.#clock.clearTimeout(timer);
    this.#sleeps.clear();
    this.#machine.transition(CLOSED);
    const closed = new ClientClosedError(info);
    for (const request of [...this.#pending.values()]) request.reject(closed);
    this.#pending.clear();
    for (const record of this.#runs.values()) {
      if (!record.done && !record.failure) this.#failRun(record, closed);
    }
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const waiter of waiters) waiter.reject(closed);
    this.#emit('closed', info);
  }

  /** Not narrowed by TypeScript, unlike `this.state`: listeners may close the client. */
  #isClosed(): boolean {
    return this.#machine.state === CLOSED;
  }

  #clearSocketTimers(): void {
    if (this.#connectTimer !== null) this.#clock.clearTimeout(this.#connectTimer);
    if (this.#watchdogTimer !== null) this.#clock.clearTimeout(this.#watchdogTimer);
    if (this.#refreshTimer !== null) this.#clock.clearTimeout(this.#refreshTimer);
    this.#connectTimer = null;
    this.#watchdogTimer = null;
    this.#refreshTimer = null;
    this.#refreshing = null;
    this.#pingSentAt = null;
  }

  // ---- frames ----

  #onMessage(ws: WebSocketLike, serial: number, data: unknown): void {
    if (typeof data !== 'string') return;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      return;
    }
    if (typeof frame !== 'object' || frame === null || typeof frame.type !== 'string') return;
    this.#lastFrameAt = this.#clock.now();
    this.#pingSentAt = null;
    this.#emit('frame', frame);
    if (this.#ws !== ws) return;
    if (frame.type === 'connection_ready') return this.#onReady(ws, serial, frame);
    if (typeof (frame as { seq?: unknown }).seq === 'number') return this.#onEvent(frame as AgentEvent);
    switch (frame.type) {
      case 'ack':
        return this.#onAck(frame);
      case 'error':
        return this.#onError(frame);
      case 'pong':
        this.#emit('pong', frame as PongFrame);
        return;
      case 'token_refreshed':
        return this.#onTokenRefreshed(ws, frame as TokenRefreshedFrame);
      default:
        // Events carry a seq and went to #onEvent above; any other frame is not the client's.
        return;
    }
  }

  #onReady(ws: WebSocketLike, serial: number, frame: ConnectionReadyFrame): void {
    if (this.#socketWasReady) return;
    if (this.#connectTimer !== null) {
      this.#clock.clearTimeout(this.#connectTimer);
      this.#connectTimer = null;
    }
    const previousEpoch = this.#epoch;
    const previousLastSeq = this.#lastSeq;
    const hadPosition = previousEpoch !== null;
    this.#socketWasReady = true;
    this.#attempt = 0;
    this.#authRetried = false;
    this.#readyFrame = frame;
    const serverTime = typeof frame.server_time === 'string' ? Date.parse(frame.server_time) : Number.NaN;
    this.#serverOffsetMs = Number.isFinite(serverTime) ? serverTime - this.#clock.now() : 0;
    if (this.#credential) this.#credential = this.#credentialOf(this.#credential.token, this.#credential.obtainedAt);
    this.#epoch = frame.epoch;
    if (!frame.resumed) this.#lastSeq = frame.last_seq;
    this.#machine.transition(READY);
    if (this.#ws !== ws) return;
    this.#startWatchdog();
    this.#armRefresh(ws, this.#credential && refreshDelay(this.#credential.obtainedAt, this.#credential.expiresAt ?? -Infinity, this.#clock.now()));
    if (!frame.resumed && hadPosition) {
      this.#lastReset = { serial, epoch: frame.epoch, lastSeq: frame.last_seq };
      this.#reloadRuns(
        [...this.#runs.values()].filter((record) => !record.done && !record.failure),
        frame.epoch,
        frame.last_seq,
      );
      this.#emit('history_reset', { previousEpoch, previousLastSeq, epoch: frame.epoch, lastSeq: frame.last_seq, ready: frame });
      if (this.#ws !== ws) return;
      this.#reload(frame.epoch, frame.last_seq);
    }
    for (const request of [...this.#pending.values()]) {
      if (request.sentOn !== serial) this.#write(request);
    }
    this.#emit('ready', frame);
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const waiter of waiters) waiter.resolve(frame);
  }

  #onEvent(event: AgentEvent): void {
    if (this.state !== READY) return;
    const expected = this.#lastSeq + 1;
    if (event.seq < expected) {
      this.#duplicates++;
      return;
    }
    if (event.seq > expected) {
      this.#emit('gap', { expected, received: event.seq });
      this.#drop('seq_gap', decideAfterDrop({ attempt: this.#attempt, authRetried: this.#authRetried }));
      return;
    }
    this.#lastSeq = event.seq;
    let record = this.#runs.get(event.run_id);
    if (!record && event.type === 'agent_started' && this.#pending.get(event.message_id)?.kind === 'message') {
      record = this.#track(event.run_id);
    }
    if (record && !record.done && !record.failure) {
      record.threadId ??= event.thread_id;
      if (record.held) record.held.push(event);
      else addToRun(record, event);
    }
    if (this.#reloadBuffer === null) return this.#deliver(event);
    this.#reloadBuffer.push(event);
    if (this.#reloadBuffer.length > MAX_RELOAD_BUFFER) this.#endReload(new Map());
  }

  #deliver(event: AgentEvent): void {
    this.#emit('event', event);
    this.#emit(event.type, event as never);
  }

  /**
   * Reloads `reloadThreads` after `resumed: false` through the seam of section 14: live events
   * are held while the pages load; then `history_reloaded`, then the held events, less those a
   * page already includes (same epoch, seq <= its `last_seq`). A page must reach the position
   * the connection resumed at (`lastSeq`, see #pageReaching); a thread whose page does not has
   * `error` instead.
   */
  #reload(epoch: string, lastSeq: number): void {
    if (!this.#reloadThreads) return;
    if (this.#reloadBuffer !== null) this.#endReload(new Map());
    const threadIds = [...new Set(this.#reloadThreads())];
    const gen = ++this.#reloadGen;
    this.#reloadBuffer = [];
    void Promise.all(
      threadIds.map((threadId) =>
        this.#pageReaching(threadId, epoch, lastSeq).then(
          (page) => ({ thread_id: threadId, page }),
          (error: unknown) => ({ thread_id: threadId, error: errorText(error) }),
        ),
      ),
    ).then((threads) => {
      if (gen !== this.#reloadGen) return;
      const included = new Map<string, number>();
      for (const thread of threads) {
        if ('page' in thread && thread.page.epoch === this.#epoch) included.set(thread.thread_id, thread.page.last_seq);
      }
      this.#emit('history_reloaded', { epoch, threads });
      if (gen === this.#reloadGen) this.#endReload(included);
    });
  }

  /** Releases the held events, dropping those of a thread up to the seq its page included. */
  #endReload(included: ReadonlyMap<string, number>): void {
    const held = this.#reloadBuffer ?? [];
    this.#reloadBuffer = null;
    this.#reloadGen++;
    for (const event of held) {
      if (event.seq > (included.get(event.thread_id) ?? 0)) this.#deliver(event);
    }
  }

  #onAck(frame: AckFrame): void {
    const request = this.#pending.get(frame.id);
    if (request) {
      this.#pending.delete(frame.id);
      if (request.kind === 'message') {
        const record = this.#track(frame.run_id, frame.thread_id);
        // Written before a connection that could not resume, acked after it: what the run did
        // before that connection's position never arrives live (a re-sent message's ack is
        // `duplicate`). Reloaded like the runs in progress then; one that had not started goes on.
        const reset = this.#lastReset;
        const before = request.firstSentOn !== -1 && request.firstSentOn < reset.serial;
        if (before && record.events.length === 0 && !record.done && !record.failure && record.held === null)
          this.#reloadRuns([record], reset.epoch, reset.lastSeq);
      }
      request.resolve(frame);
    }
    this.#emit('ack', frame);
  }

  #onError(frame: ErrorFrame): void {
    if (this.#refreshing !== null && frame.ref === this.#refreshing.id) return this.#onRefreshRefused(frame);
    const request = typeof frame.ref === 'string' ? this.#pending.get(frame.ref) : undefined;
    if (!request) return this.#emit('server_error', frame);
    this.#pending.delete(request.id);
    request.reject(new RequestError(frame));
  }

  // ---- requests ----

  #request(id: string, kind: PendingRequest['kind'], frame: Record<string, unknown>): Promise<AckFrame> {
    if (this.state === CLOSED) return Promise.reject(new ClientClosedError(this.#closeInfo!));
    let resolve!: (ack: AckFrame) => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<AckFrame>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const request: PendingRequest = { id, kind, frame: JSON.stringify(frame), promise, resolve, reject, sentOn: -1, firstSentOn: -1 };
    this.#pending.set(id, request);
    if (this.state === READY) this.#write(request);
    return promise;
  }

  #write(request: PendingRequest): void {
    const ws = this.#ws;
    if (!ws || this.state !== READY) return;
    try {
      ws.send(request.frame);
      request.sentOn = this.#socketSerial;
      if (request.firstSentOn === -1) request.firstSentOn = this.#socketSerial;
    } catch {
      // The socket is going away; the request is re-sent on the next connection.
    }
  }

  // ---- token refresh ----

  #credentialOf(token: string, obtainedAt = this.#clock.now()): Credential {
    const exp = tokenExpiresAt(token);
    return { token, obtainedAt, expiresAt: exp === null ? null : exp - this.#serverOffsetMs };
  }

  /** Schedules the next refresh of this socket's token (only a token provider can refresh). */
  #armRefresh(ws: WebSocketLike, delayMs: number | null): void {
    if (typeof this.#token !== 'function' || delayMs === null) return;
    if (this.#refreshTimer !== null) this.#clock.clearTimeout(this.#refreshTimer);
    this.#refreshTimer = this.#clock.setTimeout(() => {
      this.#refreshTimer = null;
      void this.#refresh(ws);
    }, delayMs);
  }

  #armRefreshRetry(ws: WebSocketLike): void {
    const expiresAt = this.#credential?.expiresAt;
    if (expiresAt != null) this.#armRefresh(ws, refreshRetryDelay(expiresAt, this.#clock.now()));
  }

  /** Asks the provider for a fresher token and sends it as `refresh_token` on the open socket. */
  async #refresh(ws: WebSocketLike): Promise<void> {
    if (this.#ws !== ws || this.state !== READY || typeof this.#token !== 'function') return;
    let token: string;
    try {
      token = await this.#token();
    } catch (error) {
      if (this.#ws !== ws) return;
      this.#emit('token_error', { error });
      if (this.#ws === ws) this.#armRefreshRetry(ws);
      return;
    }
    if (this.#ws !== ws || this.state !== READY || this.#refreshing !== null) return;
    const credential = this.#credentialOf(token);
    const current = this.#credential;
    // Nothing fresher (same token, or no later exp): try again later; at worst the server
    // closes with 4401 at expiry and the reconnect asks the provider again.
    if (!token || (current?.expiresAt != null && (credential.expiresAt ?? -Infinity) <= current.expiresAt)) {
      return this.#armRefreshRetry(ws);
    }
    const id = this.#newId();
    this.#refreshing = { id, credential };
    try {
      ws.send(JSON.stringify({ type: 'refresh_token', id, token }));
    } catch {
      // The socket is going away; the next dial asks the provider anyway.
    }
  }

  #onTokenRefreshed(ws: WebSocketLike, frame: TokenRefreshedFrame): void {
    const refreshing = this.#refreshing;
    if (refreshing === null || frame.id !== refreshing.id) return;
    this.#refreshing = null;
    this.#credential = refreshing.credential;
    const { obtainedAt, expiresAt } = refreshing.credential;
    this.#armRefresh(ws, expiresAt === null ? null : refreshDelay(obtainedAt, expiresAt, this.#clock.now()));
    this.#emit('token_refreshed', frame);
  }

  /**
   * The server refused the fresher token. An auth refusal is handled like a 4401 close: the
   * socket is dropped and the client dials again with a token from its provider (a second
   * auth failure in a row stops it). Anything else (e.g. rate_limited) is retried later.
   */
  #onRefreshRefused(frame: ErrorFrame): void {
    this.#refreshing = null;
    this.#emit('server_error', frame);
    const ws = this.#ws;
    if (!ws) return;
    if (frame.code === 'token_expired' || frame.code === 'token_invalid' || frame.code === 'forbidden') {
      this.#drop(frame.code, undefined, 4401);
      return;
    }
    this.#armRefreshRetry(ws);
  }

  // ---- watchdog ----

  #startWatchdog(): void {
    if (this.#pingIntervalMs <= 0) return;
    this.#lastFrameAt = this.#clock.now();
    this.#pingSentAt = null;
    this.#armWatchdog(this.#lastFrameAt + this.#pingIntervalMs);
  }

  #armWatchdog(at: number): void {
    if (this.#watchdogTimer !== null) this.#clock.clearTimeout(this.#watchdogTimer);
    this.#watchdogTimer = this.#clock.setTimeout(() => this.#checkWatchdog(), Math.max(0, at - this.#clock.now()));
  }

  #checkWatchdog(): void {
    this.#watchdogTimer = null;
    const ws = this.#ws;
    if (!ws || this.state !== READY) return;
    const now = this.#clock.now();
    if (this.#pingSentAt !== null) {
      if (now - this.#pingSentAt < this.#pongTimeoutMs) return this.#armWatchdog(this.#pingSentAt + this.#pongTimeoutMs);
      this.#emit('watchdog', { pingSentAt: this.#pingSentAt, lastFrameAt: this.#lastFrameAt });
      if (this.#ws !== ws) return;
      this.#drop('watchdog_timeout', decideAfterDrop({ attempt: this.#attempt, authRetried: this.#authRetried }));
      return;
    }
    if (now - this.#lastFrameAt < this.#pingIntervalMs) return this.#armWatchdog(this.#lastFrameAt + this.#pingIntervalMs);
    this.#pingSentAt = now;
    try {
      ws.send(JSON.stringify({ type: 'ping', id: `watchdog-${++this.#pingCount}` }));
    } catch {
      // a socket that cannot send is found dead when the timeout passes
    }
    this.#armWatchdog(now + this.#pongTimeoutMs);
  }

  // ---- runs ----

  #track(runId: string, threadId: string | null = null): RunRecord {
    let record = this.#runs.get(runId);
    if (record) {
      record.threadId ??= threadId;
      return record;
    }
    record = { runId, threadId, events: [], done: false, failure: null, held: null, wake: new Set() };
    this.#runs.set(runId, record);
    if (this.#runs.size > this.#runBufferSize) {
      for (const [id, old] of this.#runs) {
        if (this.#runs.size <= this.#runBufferSize) break;
        if (old !== record && (old.done || old.failure)) this.#runs.delete(id);
      }
    }
    return record;
  }

  #failRun(record: RunRecord, error: Error): void {
    record.failure = error;
    record.held = null;
    wakeAll(record);
  }

  /**
   * After `resumed: false`, reloads the answers of the runs in progress through the seam (one
   * page per thread): each run goes on from its answer in the page with its live events after
   * the page's `last_seq`, held meanwhile. A run whose answer cannot be had fails with
   * HistoryResetError.
   */
  #reloadRuns(records: readonly RunRecord[], epoch: string, lastSeq: number): void {
    const byThread = new Map<string, RunRecord[]>();
    // The failed record stays (until the run buffer evicts it): an iterator begun later, as
    // `ask().events` first read after the reset, must see the failure, not wait for events
    // that will never come.
    const fail = (record: RunRecord, reason: string) => this.#failRun(record, new HistoryResetError(record.runId, reason));
    for (const record of records) {
      if (record.threadId === null) {
        fail(record, 'its thread is not known (no ack or event of it was received)');
        continue;
      }
      // Held from now: what arrived before this connection belongs to the old position.
      record.held = [];
      const same = byThread.get(record.threadId);
      if (same) same.push(record);
      else byThread.set(record.threadId, [record]);
    }
    for (const [threadId, waiting] of byThread) {
      const reloads = waiting.map((record) => record.held);
      this.#pageReaching(threadId, epoch, lastSeq).then(
        (page) => {
          for (const [i, record] of waiting.entries()) {
            if (record.held !== reloads[i] || record.failure) continue;
            const answer = page.messages.find((m): m is HistoryAssistantMessage => m.role === 'assistant' && m.run_id === record.runId);
            if (page.epoch !== epoch) fail(record, `the page is of epoch ${page.epoch}, the connection of ${epoch}`);
            else if (answer) this.#resumeFromPage(record, answer, page.last_seq);
            // A run the client saw an event of had started: its start is gone from the history
            // (the default store folds only what the log retains).
            else if (record.events.length > 0) fail(record, `thread ${threadId}'s newest page of messages does not hold it`);
            // Not started by the page's last_seq (queued): all of it comes live.
            else this.#resumeFromPage(record, null, page.last_seq);
          }
        },
        (error: unknown) => {
          for (const [i, record] of waiting.entries()) {
            if (record.held === reloads[i] && !record.failure) fail(record, `GET thread ${threadId}'s messages: ${errorText(error)}`);
          }
        },
      );
    }
  }

  /**
   * The thread's newest page once it includes the user's events up to `lastSeq` of `epoch`, the
   * position of a connection that could not resume: the events up to there never arrive live, so
   * a page short of it would miss some. A store archived behind the log (PostgreSQL) lags it by a
   * batch or so: the page is fetched again after each of PAGE_CATCH_UP_DELAYS_MS, then rejected.
   */
  async #pageReaching(threadId: string, epoch: string, lastSeq: number): Promise<HistoryPage> {
    for (let attempt = 0; ; attempt++) {
      const page = await this.#http.messages(threadId);
      // A page of another epoch is the caller's to judge (a reload delivers it unfiltered).
      if (page.epoch !== epoch || page.last_seq >= lastSeq) return page;
      const delayMs = PAGE_CATCH_UP_DELAYS_MS[attempt];
      if (delayMs === undefined) throw new Error(`the page reaches seq ${page.last_seq}, short of the connection's ${lastSeq}: the history store lags the log`);
      await this.#sleep(delayMs);
      if (this.state === CLOSED) throw new Error('the client closed');
    }
  }

  /** Resolves after `ms` on the client's clock; close() cancels it (it then never resolves, and holds no process open). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.#clock.setTimeout(() => {
        this.#sleeps.delete(timer);
        resolve();
      }, ms);
      this.#sleeps.add(timer);
    });
  }

  /** Places the reloaded answer (if the page had one) among the run's events, then its held events after the page's `last_seq`. */
  #resumeFromPage(record: RunRecord, answer: HistoryAssistantMessage | null, lastSeq: number): void {
    const held = record.held ?? [];
    record.held = null;
    if (answer) record.events.push({ reloaded: answer });
    for (const event of held) if (event.seq > lastSeq) addToRun(record, event);
    // Ended within what the connection missed: nothing more of it will come.
    if (answer && answer.status !== 'queued' && answer.status !== 'running') record.done = true;
    wakeAll(record);
  }

  async *#iterate(record: RunRecord): AsyncGenerator<AgentEvent | ReloadedAnswer, void, undefined> {
    let index = 0;
    for (;;) {
      while (index < record.events.length) {
        const item = record.events[index++]!;
        yield item;
        if ('type' in item && (item.type === 'agent_completed' || item.type === 'agent_error')) return;
      }
      if (record.failure) throw record.failure;
      if (record.done) return;
      await new Promise<void>((resolve) => record.wake.add(resolve));
    }
  }

  #emit<K extends ClientEventName>(event: K, payload: ClientEventMap[K]): void {
    const listeners = this.#listeners.get(event);
    if (!listeners || listeners.size === 0) return;
    for (const listener of [...listeners]) {
      try {
        (listener as Listener<K>)(payload);
      } catch (error) {
        this.#onListenerError(error, event);
      }
    }
  }
}

/** Creates a client (not connected yet: call `connect()`). */
export function createClient(options: ClientOptions): AgentwireClient {
  return new AgentwireClient(options);
}

/** Wraps a run's event iterator so that it keeps the answer and the reasoning it has yielded, and applies a reload. */
function keepingText(source: AsyncGenerator<AgentEvent | ReloadedAnswer, void, undefined>): RunEvents {
  let text = '';
  let thinking = '';
  let reloaded: HistoryAssistantMessage | null = null;
  return {
    get text() {
      return text;
    },
    get thinking() {
      return thinking;
    },
    get reloaded() {
      return reloaded;
    },
    async next(): Promise<IteratorResult<AgentEvent, undefined>> {
      for (;;) {
        const result = await source.next();
        if (result.done) return { done: true, value: undefined };
        const item = result.value;
        if (!('type' in item)) {
          reloaded = item.reloaded;
          text = reloaded.text;
          thinking = reloaded.thinking.join('');
          continue;
        }
        if (item.type === 'agent_text_delta') text += item.text;
        else if (item.type === 'agent_thinking_delta') thinking += item.text;
        else if (item.type === 'agent_completed') text = item.text;
        return { done: false, value: item };
      }
    },
    async return(): Promise<IteratorResult<AgentEvent, undefined>> {
      await source.return();
      return { done: true, value: undefined };
    },
    // The source catches nothing: this rejects with `error` and ends it.
    async throw(error?: unknown): Promise<IteratorResult<AgentEvent, undefined>> {
      await source.throw(error);
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/** Adds a live event to its run (which ends with its terminal event). */
function addToRun(record: RunRecord, event: AgentEvent): void {
  record.events.push(event);
  if (event.type === 'agent_completed' || event.type === 'agent_error') record.done = true;
  wakeAll(record);
}

function wakeAll(record: RunRecord): void {
  const wake = [...record.wake];
  record.wake.clear();
  for (const resolve of wake) resolve();
}

/**
 * The "ws" package, for runtimes without a platform WebSocket (Node 20). The specifier is a
 * variable so that bundlers leave it out: browsers never get here, and their bundle stays
 * free of Node modules.
 */
async function importWs(): Promise<WebSocketConstructor> {
  const specifier = 'ws';
  try {
    const loaded = (await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier)) as {
      default: WebSocketConstructor;
    };
    return loaded.default;
  } catch (error) {
    throw new Error(
      `no WebSocket implementation: no global WebSocket, and the "ws" package cannot be loaded (${errorText(error)}); install "ws" or pass options.WebSocket`,
      { cause: error },
    );
  }
}

function detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  // `ws` throws on an 'error' event nobody listens to; keep one that ignores it.
  ws.onerror = () => {};
}

function withError<T extends object>(value: T, error: string | undefined): T & { error?: string } {
  return error === undefined ? value : { ...value, error };
}

function errorText(value: unknown): string {
  if (value instanceof Error) return value.message;
  if (typeof value === 'object' && value !== null) {
    const { message, error } = value as { message?: unknown; error?: unknown };
    if (typeof message === 'string' && message) return message;
    if (error instanceof Error) return error.message;
  }
  return typeof value === 'string' ? value : 'WebSocket error';
}

function defaultId(): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string; getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (crypto?.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
