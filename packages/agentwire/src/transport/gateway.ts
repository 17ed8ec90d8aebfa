import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { createTokenVerifier, extractUpgradeCredentials, selectSubprotocol } from '../auth/index.js';
import type { TokenVerifier, VerifierOptions, VerifyResult } from '../auth/index.js';
import { systemClock, type Clock, type TimerHandle } from '@agentwire/protocol';
import { DEFAULTS } from '../config/index.js';
import { CoordinatorRegistry, type ConnectionPresence, type ResumePosition } from '../coordination/index.js';
import { MemoryEngine } from '../engine/index.js';
import type { EventEngine } from '../engine/index.js';
import { createLogHistoryStore } from '../history/logHistoryStore.js';
import { MemoryThreadMarks, type ThreadMarkStore } from '../history/threadMarks.js';
import type { HistoryStore } from '../history/types.js';
import { createHistoryRoutes, createRouteHandler, type TestTokenIssuer } from '../http/index.js';
import { discardBody } from '../http/body.js';
import { GatewayMetrics, silentLogger, type Logger } from '../observability/index.js';
import { CloseCode, resumeFields } from '../protocol/index.js';
import type { Agent } from '../runs/agent.js';
import { createDemoAgent } from '../runs/demoAgent.js';
import { RunManager } from '../runs/runManager.js';
import { LocalRunStore, type RunStore, type ThreadPolicy } from '../runs/runStore.js';
import { requestPath } from '../http/requestPath.js';
import { createChatPageHandler, type ChatPageOptions } from '../web/index.js';
import { ByteBudget } from './byteBudget.js';
import { Connection, type ConnectionContext, type ConnectionLimits } from './connection.js';
import { corkFor, type FrameBatching } from '../cork.js';

/** The log says at most this often that sockets are refused at AGENTWIRE_MAX_SOCKETS. */
const REFUSED_SOCKETS_LOG_MS = 60_000;

/** Options of `createGateway`; only `auth` is required. Limits default to the settings table (README). */
export interface GatewayOptions {
  /** The agent that answers messages. Default: the demo agent of PROTOCOL.md section 13. */
  agent?: Agent;
  /** The per-user event log. Default: a new in-memory engine (closed with the gateway). */
  engine?: EventEngine;
  /** Thread queues and run ownership; a shared store (Redis) makes them cluster-wide. */
  runStore?: RunStore;
  /**
   * Thread history (section 14 routes, agents' earlier turns). Default: folded from the engine's
   * retained log, with renames and deletions kept in `threadMarks`; closed with the gateway. A
   * store given here is the caller's to close.
   */
  history?: HistoryStore;
  /**
   * Where the default history store keeps renames and deletions. Default: in this process, as long
   * and as many per user as the engine keeps events (`retentionMs`, `retentionEvents`); with a shared engine pass a shared
   * store (`createRedisBackend(...).threadMarks`) so every node agrees.
   */
  threadMarks?: ThreadMarkStore;
  /** Earlier turns of a thread an agent receives with each run. Default 20. */
  historyTurns?: number;
  /** Counts connections across nodes for the per-user cap (Redis); default per node. */
  presence?: ConnectionPresence & { readonly renewIntervalMs?: number };
  /** How often a shared run store is swept for runs of dead nodes. */
  lostRunSweepMs?: number;
  /** How tokens are verified: key options, or a verifier of your own. */
  auth: VerifierOptions | TokenVerifier;
  /** Enables `POST /v1/auth/test-token`. Never in production. */
  testTokens?: TestTokenIssuer;
  path?: string;
  clock?: Clock;
  logger?: Logger;
  metrics?: GatewayMetrics;
  /** Deadline for an HTTP request (headers and body) to arrive at the server `listen` starts. */
  httpRequestTimeoutMs?: number;
  /**
   * TCP connections (HTTP and WebSocket) a server holds open at once, as its `maxConnections`:
   * one more is closed as it is accepted. Applied to the server `listen` starts and to an attached
   * server without a `maxConnections` of its own. Default 16384.
   */
  maxSockets?: number;
  authTimeoutMs?: number;
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  runTimeoutMs?: number;
  drainTimeoutMs?: number;
  maxConnectionsPerUser?: number;
  /** Runs of one user running or queued at once; one more message gets `too_many_runs`. Default 32. */
  maxActiveRunsPerUser?: number;
  threadPolicy?: ThreadPolicy;
  maxFrameBytes?: number;
  inboxLimit?: number;
  /** Raw bytes one connection may hold before `connection_ready` (more: 1008). Default 256 KiB. */
  inboxMaxBytes?: number;
  /**
   * Raw bytes all connections not yet ready may hold together. Default 32 MiB. A frame beyond
   * it closes its connection with 1013; while less than one maximum frame is left, upgrades get 503.
   */
  pendingBytesLimit?: number;
  rateLimitPerSec?: number;
  rateLimitBurst?: number;
  abuseLimit?: number;
  slowConsumerBytes?: number;
  maxBufferedEvents?: number;
  permessageDeflate?: boolean;
  /** Allowed `Origin` header values (`scheme://host[:port]`, any case); null or absent allows any. Also the history routes' CORS allow-list. */
  allowedOrigins?: readonly string[] | null;
  /** Pause between the demo agent's steps (when no agent is given). Default 20. */
  demoStepMs?: number;
  /**
   * Longest a streamed fragment is held to be merged with the next ones into one delta event
   * (PROTOCOL.md section 7; 0 = no merging). Default 20. The demo agent waits at least this long
   * between the words of its answer, so each word is one delta.
   */
  streamFlushMs?: number;
  /**
   * How a connection's frames are gathered into socket writes. 'turn': to the end of the event
   * loop's turn, so everything a turn produces for a connection leaves in one write and a turn's
   * writes leave together (fewer, bunched system calls: more events per second of CPU), for up to
   * the rest of the turn's I/O callbacks of added latency. 'tick': to the end of the tick.
   * Default: 'turn' on the in-memory engine, 'tick' on any other, whose events arrive with
   * network replies and would wait for the rest of the turn (docs/BENCHMARKS.md measures both).
   */
  frameBatching?: FrameBatching;
  /** How often the single sweeper checks heartbeats, auth deadlines and token expiry (at most 1000). */
  sweepIntervalMs?: number;
  /**
   * Serves the browser chat page (src/web) at `/` (or `chatPage.path`) with its script; off by
   * default. The page dials this gateway's `path` unless `chatPage.wsUrl` says otherwise.
   */
  chatPage?: boolean | ChatPageOptions;
}

/** Where `Gateway.listen` is listening: its own HTTP server, the bound port and host, the WebSocket URL. */
export interface ListenResult {
  readonly server: Server;
  readonly port: number;
  readonly host: string;
  readonly url: string;
}

/**
 * The gateway: HTTP routes, the WebSocket upgrade, and the wiring between connections, user
 * coordinators, the run manager and the engine. Create it with `createGateway`, then either
 * `listen()` on its own server or `attach()` to an application's `http.Server`.
 */
export class Gateway {
  readonly metrics: GatewayMetrics;
  readonly runs: RunManager;
  readonly engine: EventEngine;
  readonly history: HistoryStore;
  readonly path: string;
  /** How connections' frames are gathered into socket writes (GatewayOptions.frameBatching, or its default). */
  readonly frameBatching: FrameBatching;
  readonly handleRequest: (req: IncomingMessage, res: ServerResponse) => boolean;

  readonly #ctx: ConnectionContext;
  readonly #wss: WebSocketServer;
  readonly #ownsEngine: boolean;
  readonly #ownsHistory: boolean;
  readonly #heartbeatTimeoutMs: number;
  readonly #httpRequestTimeoutMs: number;
  readonly #drainTimeoutMs: number;
  readonly #allowedOrigins: ReadonlySet<string> | null;
  readonly #maxFrameBytes: number;
  /** Set while upgrades are refused for the held-bytes limit, so that is logged once per episode. */
  #refusingForHeldBytes = false;
  readonly #maxSockets: number;
  readonly #sweeper: TimerHandle;
  readonly #servers: Server[] = [];
  readonly #presence: GatewayOptions['presence'];
  #presenceRenewedAt = 0;
  #engineReady = false;
  #draining = false;
  #shutdown: Promise<void> | null = null;
  #closeWaiters: Array<() => void> = [];

  constructor(options: GatewayOptions) {
    const clock = options.clock ?? systemClock;
    const logger = options.logger ?? silentLogger;
    this.metrics = options.metrics ?? new GatewayMetrics();
    this.path = options.path ?? '/ws';
    this.#ownsEngine = !options.engine;
    this.engine = options.engine ?? new MemoryEngine({ clock });
    const verifier = 'verify' in options.auth ? options.auth : createTokenVerifier(options.auth);
    const frameBatching = options.frameBatching ?? (this.engine instanceof MemoryEngine ? 'turn' : 'tick');
    if (frameBatching !== 'turn' && frameBatching !== 'tick') {
      throw new TypeError(`frameBatching must be 'turn' or 'tick', not ${JSON.stringify(frameBatching)}`);
    }
    this.frameBatching = frameBatching;
    const streamFlushMs = options.streamFlushMs ?? DEFAULTS.streamFlushMs;
    const agent = options.agent ?? createDemoAgent({ clock, stepMs: options.demoStepMs ?? DEFAULTS.demoStepMs, minWordMs: streamFlushMs });
    this.#heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? DEFAULTS.heartbeatTimeoutMs;
    this.#httpRequestTimeoutMs = options.httpRequestTimeoutMs ?? DEFAULTS.httpRequestTimeoutMs;
    this.#drainTimeoutMs = options.drainTimeoutMs ?? DEFAULTS.drainTimeoutMs;
    // Origins compare case-insensitively (scheme and host are); the setting's are lower-case already.
    this.#allowedOrigins = options.allowedOrigins ? new Set(options.allowedOrigins.map((origin) => origin.toLowerCase())) : null;
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULTS.maxFrameBytes;
    this.#maxSockets = options.maxSockets ?? DEFAULTS.maxSockets;

    const limits: ConnectionLimits = {
      authTimeoutMs: options.authTimeoutMs ?? DEFAULTS.authTimeoutMs,
      heartbeatMs: options.heartbeatMs ?? DEFAULTS.heartbeatMs,
      inboxLimit: options.inboxLimit ?? DEFAULTS.inboxLimit,
      inboxMaxBytes: options.inboxMaxBytes ?? DEFAULTS.inboxMaxBytes,
      rateLimitPerSec: options.rateLimitPerSec ?? DEFAULTS.rateLimitPerSec,
      rateLimitBurst: options.rateLimitBurst ?? DEFAULTS.rateLimitBurst,
      abuseLimit: options.abuseLimit ?? 200,
      slowConsumerBytes: options.slowConsumerBytes ?? DEFAULTS.slowConsumerBytes,
      maxBufferedEvents: options.maxBufferedEvents ?? 1000,
    };
    const onFault = (error: unknown, context: string) => {
      this.metrics.faults.inc({ context });
      logger.error({ err: error, context }, 'fault');
    };
    const runStore = options.runStore ?? new LocalRunStore();
    const activeRuns = (userId: string) => runStore.activeRuns?.(userId) ?? Promise.resolve([]);
    this.#ownsHistory = !options.history;
    this.history =
      options.history ??
      createLogHistoryStore({
        engine: this.engine,
        // Marks kept as long, and as many per user, as the engine keeps events (on the gateway's clock).
        marks: options.threadMarks ?? MemoryThreadMarks.forLog(this.engine, clock),
        // Only a run store that lists its runs: pruning takes a run it does not list for ended.
        ...(runStore.activeRuns ? { activeRuns } : {}),
        onFault,
      });
    const history = this.history;
    if (history.archiveProgress) this.metrics.observeArchive(() => history.archiveProgress!());
    this.runs = new RunManager({
      engine: this.engine,
      store: runStore,
      history,
      historyTurns: options.historyTurns ?? DEFAULTS.historyTurns,
      onAppended: (userId, entries) => history.record(userId, entries),
      agent,
      clock,
      threadPolicy: options.threadPolicy ?? DEFAULTS.threadPolicy,
      runTimeoutMs: options.runTimeoutMs ?? DEFAULTS.runTimeoutMs,
      streamFlushMs,
      ...(options.maxActiveRunsPerUser ? { maxActiveRunsPerUser: options.maxActiveRunsPerUser } : {}),
      ...(options.lostRunSweepMs ? { lostRunSweepMs: options.lostRunSweepMs } : {}),
      onRunEnded: (outcome) => this.metrics.runEnded(outcome),
      onFault,
    });
    this.metrics.observeDeltaHolds(() => this.runs.deltaHolds);
    this.#presence = options.presence;
    const registry = new CoordinatorRegistry(this.engine, {
      maxConnections: options.maxConnectionsPerUser ?? DEFAULTS.maxConnectionsPerUser,
      ...(options.presence ? { presence: options.presence } : {}),
      onFanout: (entry) => this.metrics.fannedOut(entry, clock.now()),
      onFault,
    });
    this.#ctx = {
      clock,
      logger,
      metrics: this.metrics,
      verifier,
      registry,
      runs: this.runs,
      limits,
      connections: new Set(),
      awaitingAuth: new Set(),
      heldBytes: new ByteBudget(options.pendingBytesLimit ?? DEFAULTS.pendingBytesLimit),
      corkFrames: corkFor(frameBatching),
      connectionClosed: () => this.#connectionClosed(),
    };
    this.#wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: this.#maxFrameBytes,
      perMessageDeflate: options.permessageDeflate ?? DEFAULTS.permessageDeflate,
      handleProtocols: (offered) => selectSubprotocol(offered),
    });
    const historyRoutes = createHistoryRoutes({
      verifier,
      history,
      logger,
      cancelThreadRuns: (userId, threadId) => this.runs.cancelThreadRuns(userId, threadId),
      activeRuns,
      allowedOrigins: this.#allowedOrigins,
    });
    const routes = createRouteHandler({
      isReady: () => this.isReady,
      registry: this.metrics.registry,
      logger,
      clock,
      ...(options.testTokens ? { testTokens: options.testTokens } : {}),
      ...(options.chatPage ? { chatPage: createChatPageHandler({ wsUrl: this.path, ...(options.chatPage === true ? {} : options.chatPage) }) } : {}),
    });
    this.handleRequest = (req, res) => historyRoutes(req, res) || routes(req, res);
    // At most 1 s: an expired token closes its connection within 2 s (PROTOCOL.md section 2).
    const sweepMs = Math.min(
      1000,
      options.sweepIntervalMs ?? Math.max(10, Math.floor(Math.min(limits.heartbeatMs, this.#heartbeatTimeoutMs, limits.authTimeoutMs) / 5)),
    );
    this.#sweeper = clock.setInterval(() => this.#sweep(), sweepMs);
    this.engine.ready().then(
      () => {
        this.#engineReady = true;
      },
      (error) => onFault(error, 'engine ready'),
    );
  }

  /**
   * Ready: the engine is up and reachable, the history store's storage too, and the gateway is
   * not draining (`/readyz`, upgrades; section 10).
   */
  get isReady(): boolean {
    return this.#engineReady && !this.#draining && this.engine.available !== false && this.history.available;
  }

  /** Resolves once the gateway is ready to accept connections. */
  async ready(): Promise<void> {
    await this.engine.ready();
    this.#engineReady = true;
  }

  get connectionCount(): number {
    return this.#ctx.connections.size;
  }

  /** Raw bytes of the frames held by connections not yet ready (bounded by `pendingBytesLimit`). */
  get heldBytes(): number {
    return this.#ctx.heldBytes.used;
  }

  get coordinatorCount(): number {
    return this.#ctx.registry.size;
  }

  /**
   * Serves WebSocket upgrades on `path` of an existing server; other upgrades are left alone.
   * The server gets `maxSockets` as its `maxConnections` unless it has a cap of its own (any value
   * set, `Infinity` included: an application that set no cap on purpose keeps none).
   */
  attach(server: Server): void {
    this.#servers.push(server);
    if ((server.maxConnections as number | undefined) === undefined) server.maxConnections = this.#maxSockets;
    this.#countRefusedSockets(server);
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (requestPath(req) !== this.path) return;
      this.#onUpgrade(req, socket, head).catch((error: unknown) => {
        this.metrics.faults.inc({ context: 'upgrade' });
        this.#ctx.logger.error({ err: error }, 'upgrade failed');
        socket.destroy();
      });
    });
  }

  /**
   * Starts a server of its own with the HTTP routes and the WebSocket endpoint. By default it
   * resolves once the gateway is ready; with `waitForReady: false` it resolves as soon as it
   * listens, answering `/readyz` and upgrades with 503 until the engine is up.
   */
  async listen(port: number, host = '127.0.0.1', { waitForReady = true, backlog = 2048 } = {}): Promise<ListenResult> {
    // A request must arrive whole within the deadline (408 and close past it: slow bodies and
    // headers hold no socket for long); Node checks every connectionsCheckingInterval, so that
    // is kept well under the deadline. Upgraded WebSockets are no longer HTTP requests.
    const requestTimeout = this.#httpRequestTimeoutMs;
    const limits = { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: Math.max(50, Math.floor(requestTimeout / 4)) };
    const server = createServer(limits, (req, res) => {
      if (!this.handleRequest(req, res)) {
        discardBody(req, res);
        res.writeHead(404, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ detail: 'not found' }));
      }
    });
    this.attach(server);
    server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
      if (requestPath(req) !== this.path) rejectUpgrade(socket, 404, 'Not Found');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Above Node's default of 511: a reconnect storm otherwise overflows the accept queue and
      // the dropped SYNs wait a 1 s retransmit (capped by the kernel's somaxconn).
      server.listen({ port, host, backlog }, () => resolve());
    });
    if (waitForReady) await this.ready();
    const address = server.address() as AddressInfo;
    const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return { server, port: address.port, host: address.address, url: `ws://${shownHost}:${address.port}${this.path}` };
  }

  /**
   * Graceful shutdown (PROTOCOL.md section 11): not ready, runs get the drain timeout, the rest
   * end with `agent_error` code `shutdown`, then every connection is closed with 1012.
   */
  shutdown(): Promise<void> {
    this.#shutdown ??= this.#drainAndClose();
    return this.#shutdown;
  }

  async #drainAndClose(): Promise<void> {
    this.#draining = true;
    await this.runs.drain(this.#drainTimeoutMs);
    for (const connection of this.#ctx.connections) connection.close(CloseCode.SERVICE_RESTART, 'service_restart');
    await this.#connectionsClosed(2000);
    for (const connection of this.#ctx.connections) connection.terminate();
    await this.#connectionsClosed(1000);
    this.#ctx.clock.clearInterval(this.#sweeper);
    await this.runs.close();
    this.#wss.close();
    await Promise.all(
      this.#servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            if (!server.listening) return resolve();
            server.close(() => resolve());
            server.closeIdleConnections?.();
          }),
      ),
    );
    if (this.#ownsHistory) await this.history.close();
    if (this.#ownsEngine) await this.engine.close();
  }

  #connectionsClosed(timeoutMs: number): Promise<void> {
    if (this.#ctx.connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.#closeWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #connectionClosed(): void {
    if (this.#ctx.connections.size > 0) return;
    const waiters = this.#closeWaiters;
    this.#closeWaiters = [];
    for (const resolve of waiters) resolve();
  }

  async #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const connection = new Connection(this.#ctx, resumeFromUrl(req.url));
    if (!this.isReady) {
      connection.refuse();
      return rejectUpgrade(socket, 503, 'Service Unavailable', { 'Retry-After': '1' });
    }
    if (!this.#heldBytesAllowUpgrade()) {
      connection.refuse();
      return rejectUpgrade(socket, 503, 'Service Unavailable', { 'Retry-After': '1' });
    }
    const credentials = extractUpgradeCredentials(req.headers);
    let verification: VerifyResult | null = null;
    if (credentials.conflict) {
      verification = { ok: false, reason: 'token_invalid', detail: 'header and subprotocol tokens differ' };
    } else if (credentials.token !== null) {
      verification = await this.#ctx.verifier.verify(credentials.token);
    }
    if (socket.destroyed) return connection.refuse();
    if (!this.isReady) {
      connection.refuse();
      return rejectUpgrade(socket, 503, 'Service Unavailable', { 'Retry-After': '1' });
    }
    // ws answers a malformed handshake itself without calling back; the connection then ends here.
    socket.once('close', () => connection.refuse());
    const origin = req.headers.origin;
    const originAllowed = !this.#allowedOrigins || (origin !== undefined && this.#allowedOrigins.has(origin.toLowerCase()));
    this.#wss.handleUpgrade(req, socket, head, (ws) =>
      connection.accept(ws, { upgradeAuth: verification, method: verification ? credentials.method : null, originAllowed, socket }),
    );
  }

  /** Whether a new connection could still hold one maximum-size frame before it is ready. */
  #heldBytesAllowUpgrade(): boolean {
    const heldBytes = this.#ctx.heldBytes;
    const allowed = heldBytes.hasRoomFor(this.#maxFrameBytes);
    if (allowed === this.#refusingForHeldBytes) {
      this.#refusingForHeldBytes = !allowed;
      if (allowed) this.#ctx.logger.info({ held: heldBytes.used }, 'accepting upgrades again');
      else
        this.#ctx.logger.warn({ held: heldBytes.used, limit: heldBytes.limit }, 'bytes held before connection_ready at the limit; refusing upgrades with 503');
    }
    return allowed;
  }

  /**
   * Each socket a server refuses for its `maxConnections` is counted; the log says so at most once
   * a minute per server, with its limit and the number it refused since it last did, however the
   * refusals come (a steady flood, or churn at the cap that accepts one socket and refuses the next).
   */
  #countRefusedSockets(server: Server): void {
    let unlogged = 0;
    let loggedAt = Number.NEGATIVE_INFINITY;
    server.on('drop', () => {
      this.metrics.socketsRefused.inc();
      unlogged++;
      const now = this.#ctx.clock.now();
      if (now - loggedAt < REFUSED_SOCKETS_LOG_MS) return;
      loggedAt = now;
      this.#ctx.logger.warn(
        { limit: server.maxConnections, refused: unlogged },
        'open sockets at the limit (AGENTWIRE_MAX_SOCKETS); closing new connections as they are accepted',
      );
      unlogged = 0;
    });
  }

  #sweep(): void {
    const now = this.#ctx.clock.now();
    for (const connection of this.#ctx.awaitingAuth) {
      if (now >= connection.authDeadline) connection.close(CloseCode.AUTH_TIMEOUT, 'auth_timeout');
    }
    const heartbeatMs = this.#ctx.limits.heartbeatMs;
    for (const connection of this.#ctx.connections) {
      try {
        connection.sweep(now, heartbeatMs, this.#heartbeatTimeoutMs);
      } catch (error) {
        this.metrics.faults.inc({ context: 'sweep' });
        this.#ctx.logger.error({ conn: connection.connectionId, err: error }, 'sweep failed');
        connection.close(CloseCode.SERVER_FAULT, 'server_fault');
      }
    }
    const presence = this.#presence;
    if (presence?.renewIntervalMs !== undefined && now - this.#presenceRenewedAt >= presence.renewIntervalMs) {
      this.#presenceRenewedAt = now;
      const refs = [];
      for (const coordinator of this.#ctx.registry.values()) {
        for (const connectionId of coordinator.connectionIds()) refs.push({ userId: coordinator.userId, connectionId });
      }
      presence.renew(refs).catch((error: unknown) => {
        this.metrics.faults.inc({ context: 'presence renew' });
        this.#ctx.logger.warn({ err: error }, 'presence renewal failed');
      });
    }
  }
}

/** Creates a gateway; then `listen()` on its own server or `attach()` it to yours. */
export function createGateway(options: GatewayOptions): Gateway {
  return new Gateway(options);
}

/** The resume position of the upgrade URL; malformed fields are ignored as if absent (section 3). */
function resumeFromUrl(url: string | undefined): ResumePosition {
  const query = new URLSearchParams((url ?? '').split('?')[1] ?? '');
  const lastSeq = query.get('last_seq');
  return resumeFields(lastSeq !== null && /^\d{1,15}$/.test(lastSeq) ? Number(lastSeq) : undefined, query.get('epoch') ?? undefined);
}

function rejectUpgrade(socket: Duplex, status: number, text: string, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const lines = [`HTTP/1.1 ${status} ${text}`, 'Connection: close', 'Content-Length: 0'];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  socket.end(`${lines.join('\r\n')}\r\n\r\n`);
}
