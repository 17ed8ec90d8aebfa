/**
 * The load generator's measurement code, usable in-process (bench smoke test) or from the
 * load child process (bench/load.ts). It speaks the same client side to both bench servers:
 * the URL carries `?bench_user=<id>` (the gateway ignores it; the raw server uses it as the
 * identity) and the subprotocols `agentwire.v1, jwt.<token>` (the gateway verifies the token;
 * the raw server ignores it), so both servers receive byte-for-byte similar upgrades.
 *
 * Frames are classified by their leading bytes instead of JSON.parse so that the load process
 * spends as little CPU per frame as possible (it shares the machine with the server).
 */
import { performance } from 'node:perf_hooks';
import { createSigner } from 'fast-jwt';
import { WebSocket, type RawData } from 'ws';
import { PROTOCOL_NAME, TOKEN_PROTOCOL_PREFIX } from '@agentwire/protocol';
import { signToken } from '../packages/agentwire/src/auth/index.js';
import {
  BENCH_SECRET,
  LoopWatch,
  eventsPerRun,
  forEachFragmentStamp,
  percentile,
  preciseNow,
  workloadText,
  type BenchAlgorithm,
  type LoopReport,
  type Workload,
} from './common.js';

export interface ConnectRequest {
  readonly url: string;
  /** One connection per entry (the same user may appear several times). */
  readonly users: readonly string[];
  /** Optional: one URL per entry of `users` (several nodes); `url` for the entries without one. */
  readonly urls?: readonly string[];
  /** Connections being set up at the same time. */
  readonly concurrency: number;
  /** Per connection: from `new WebSocket` to its first server frame. */
  readonly timeoutMs?: number;
  /** How the users' tokens are signed (default HS256). */
  readonly algorithm?: BenchAlgorithm;
}

/** Private PEMs for RS256 / ES256 bench tokens. */
export type BenchSigningKeys = Partial<Record<'RS256' | 'ES256', string>>;

export interface ConnectResult {
  readonly ok: number;
  readonly failed: number;
  /** First connect started → last first-frame received. */
  readonly wallMs: number;
  /** Per successful connection: `new WebSocket(...)` → first server frame, ms. */
  readonly latenciesMs: number[];
  readonly failures: string[];
}

export interface EventsRequest {
  readonly runsPerUser: number;
  /** What each run does: `steps` or `deltas` (a known number of events per run). */
  readonly workload: Workload;
  readonly timeoutMs?: number;
  /** Makes message ids unique across repetitions on one server. */
  readonly tag: string;
}

export interface PacedRequest {
  /** Messages sent per second over all users (round robin), open loop. */
  readonly messagesPerSec: number;
  readonly messages: number;
  readonly workload: Workload;
  readonly tag: string;
  readonly timeoutMs?: number;
}

export interface PacedResult {
  readonly delivered: number;
  readonly expected: number;
  /** First send → last expected event received. */
  readonly wallMs: number;
  /** Sending window only (first → last send). */
  readonly sendMs: number;
  /** Per delivered event: client Date.now() at receipt − the event's `ts` (both whole ms, same machine clock). */
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  /** Delta events received (agent_text_delta, agent_thinking_delta), summed over every connection. */
  readonly deltaFrames: number;
  /** Stamped fragments received in those deltas, summed over every connection. */
  readonly fragments: number;
  /** Per received fragment: receipt − the agent's stamp when it made the fragment (µs resolution). */
  readonly fragmentP50: number;
  readonly fragmentP99: number;
  readonly fragmentMax: number;
  readonly errorFrames: number;
  readonly agentErrors: number;
  /** The load generator's own event loop during the step: a late loop delays receipts it times. */
  readonly loop: LoopReport;
}

export interface EventsResult {
  /** Durable event frames received, summed over every connection. */
  readonly delivered: number;
  /** Of which delta events (agent_text_delta, agent_thinking_delta). */
  readonly deltaFrames: number;
  readonly expected: number;
  readonly runs: number;
  readonly wallMs: number;
  readonly errorFrames: number;
  readonly agentErrors: number;
}

interface Counter {
  ws: WebSocket;
  received: number;
}

interface EventsState {
  expectedPerConnection: number;
  delivered: number;
  deltaFrames: number;
  /** Terminal events (agent_completed, agent_error) received, summed over every connection. */
  terminals: number;
  done: number;
  errorFrames: number;
  agentErrors: number;
  onProgress: (() => void) | null;
}

const A = 0x61; // 'a'
const G = 0x67; // 'g'
const E = 0x65; // 'e'
const R = 0x72; // 'r'
const C = 0x63; // 'c'
// Index of the first character of the type value in `{"type":"...`.
const TYPE_AT = 9;

function frameBytes(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

export class LoadClient {
  /** Keyed by algorithm and user: every user (so every connection of the setup phase) has its own token. */
  readonly #tokens = new Map<string, string>();
  readonly #signers = new Map<'RS256' | 'ES256', (payload: Record<string, unknown>) => string>();
  readonly #open = new Set<WebSocket>();
  #eventGroups: Counter[][] = [];
  #events: EventsState | null = null;
  /** Set during runPaced: every durable event frame's append-to-receipt latency goes here. */
  #latencies: number[] | null = null;
  /** Set during runPaced: every received fragment's made-to-receipt latency goes here. */
  #fragmentLatencies: number[] | null = null;

  constructor(signingKeys: BenchSigningKeys = {}) {
    for (const algorithm of ['RS256', 'ES256'] as const) {
      const key = signingKeys[algorithm];
      if (key !== undefined) this.#signers.set(algorithm, createSigner({ key, algorithm }));
    }
  }

  /** Signs (and caches) a token per user, before anything is measured. */
  async prepareTokens(users: readonly string[], algorithm: BenchAlgorithm = 'HS256'): Promise<number> {
    for (const user of users) {
      const key = tokenKey(algorithm, user);
      if (this.#tokens.has(key)) continue;
      this.#tokens.set(key, await this.#sign(user, algorithm));
    }
    return this.#tokens.size;
  }

  async #sign(user: string, algorithm: BenchAlgorithm): Promise<string> {
    if (algorithm === 'HS256') return (await signToken(BENCH_SECRET, { sub: user, ttlSec: 3600 })).token;
    const sign = this.#signers.get(algorithm);
    if (sign === undefined) throw new Error(`no ${algorithm} signing key given to the load generator`);
    const iat = Math.floor(Date.now() / 1000);
    return sign({ sub: user, iat, exp: iat + 3600 });
  }

  get openCount(): number {
    return this.#open.size;
  }

  /** Opens connections with bounded concurrency and keeps them open (see closeAll). */
  async connectMany(request: ConnectRequest): Promise<ConnectResult> {
    const algorithm = request.algorithm ?? 'HS256';
    await this.prepareTokens(request.users, algorithm);
    const timeoutMs = request.timeoutMs ?? 30_000;
    const latencies: number[] = [];
    const failures: string[] = [];
    let next = 0;
    const started = performance.now();
    let finished = started;
    const worker = async () => {
      while (next < request.users.length) {
        const index = next++;
        const user = request.users[index]!;
        const outcome = await this.#openOne(request.urls?.[index] ?? request.url, user, this.#tokens.get(tokenKey(algorithm, user))!, timeoutMs);
        if (typeof outcome === 'number') latencies.push(outcome);
        else if (failures.length < 20) failures.push(outcome.error);
        else failures.push('');
        finished = performance.now();
      }
    };
    const workers = Math.max(1, Math.min(request.concurrency, request.users.length));
    await Promise.all(Array.from({ length: workers }, worker));
    return {
      ok: latencies.length,
      failed: failures.length,
      wallMs: finished - started,
      latenciesMs: latencies,
      failures: failures.filter((f) => f !== ''),
    };
  }

  #openOne(url: string, user: string, token: string, timeoutMs: number): Promise<number | { error: string }> {
    return new Promise((resolve) => {
      const started = performance.now();
      const ws = new WebSocket(`${url}?bench_user=${encodeURIComponent(user)}`, [PROTOCOL_NAME, `${TOKEN_PROTOCOL_PREFIX}${token}`], {
        perMessageDeflate: false,
      });
      this.#open.add(ws);
      let settled = false;
      const settle = (value: number | { error: string }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.off('message', onFirst);
        resolve(value);
      };
      const onFirst = (data: RawData) => {
        const ms = performance.now() - started;
        const text = frameBytes(data).toString('latin1', 0, 30);
        if (!text.startsWith('{"type":"connection_ready"')) settle({ error: `first frame was ${text}` });
        else settle(ms);
      };
      const timer = setTimeout(() => {
        settle({ error: `no first frame within ${timeoutMs} ms` });
        ws.terminate();
      }, timeoutMs);
      ws.on('message', onFirst);
      ws.on('error', (error) => settle({ error: `socket error: ${error.message}` }));
      ws.on('close', (code, reason) => {
        this.#open.delete(ws);
        settle({ error: `closed ${code} ${reason.toString()} before the first frame` });
      });
    });
  }

  /** Closes every open connection (close handshake; terminate what is left after the timeout). */
  async closeAll(timeoutMs = 15_000): Promise<number> {
    this.#eventGroups = [];
    this.#events = null;
    const sockets = [...this.#open];
    if (sockets.length === 0) return 0;
    await new Promise<void>((resolve) => {
      let left = sockets.length;
      const timer = setTimeout(() => resolve(), timeoutMs);
      const one = () => {
        if (--left === 0) {
          clearTimeout(timer);
          resolve();
        }
      };
      for (const ws of sockets) {
        ws.removeAllListeners('message');
        if (ws.readyState === WebSocket.CLOSED) {
          one();
          continue;
        }
        ws.once('close', one);
        if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'bench done');
        else ws.terminate();
      }
    });
    for (const ws of sockets) {
      if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
      this.#open.delete(ws);
    }
    return sockets.length;
  }

  /**
   * Opens `connsPerUser` connections for each user (not measured) and installs the counting
   * handlers the events phase uses.
   */
  async prepareEvents(request: {
    url: string;
    /** Several nodes: connection c of user u goes to urls[(u + c) % urls.length] (so senders alternate too). */
    urls?: readonly string[];
    users: readonly string[];
    connsPerUser: number;
    concurrency?: number;
  }): Promise<ConnectResult> {
    const groups: Counter[][] = request.users.map(() => []);
    const state: EventsState = {
      expectedPerConnection: 0,
      delivered: 0,
      deltaFrames: 0,
      terminals: 0,
      done: 0,
      errorFrames: 0,
      agentErrors: 0,
      onProgress: null,
    };
    const all: string[] = [];
    const urls: string[] = [];
    for (let c = 0; c < request.connsPerUser; c++) {
      all.push(...request.users);
      if (request.urls) urls.push(...request.users.map((_, u) => request.urls![(u + c) % request.urls!.length]!));
    }
    const before = new Set(this.#open);
    const result = await this.connectMany({ url: request.url, ...(request.urls ? { urls } : {}), users: all, concurrency: request.concurrency ?? 64 });
    if (result.failed > 0) throw new Error(`events setup: ${result.failed} connections failed: ${result.failures.slice(0, 3).join('; ')}`);
    const byUser = new Map<string, number>(request.users.map((u, i) => [u, i]));
    for (const ws of this.#open) {
      if (before.has(ws)) continue;
      const user = new URL(ws.url).searchParams.get('bench_user')!;
      const counter: Counter = { ws, received: 0 };
      groups[byUser.get(user)!]!.push(counter);
      ws.on('message', (data: RawData) => {
        const bytes = frameBytes(data);
        if (bytes[TYPE_AT] === A && bytes[TYPE_AT + 1] === G) {
          const receivedAt = this.#fragmentLatencies ? preciseNow() : 0;
          state.delivered++;
          counter.received++;
          // agent_error: 'agent_e' + 'r' at +7 ('agent_completed' has 'c' there).
          const agentError = bytes[TYPE_AT + 6] === E && bytes[TYPE_AT + 7] === R;
          if (agentError) state.agentErrors++;
          if (agentError || bytes[TYPE_AT + 6] === C) state.terminals++;
          const delta = isDelta(bytes);
          if (delta) state.deltaFrames++;
          if (this.#latencies) {
            const text = bytes.toString('latin1');
            const at = text.lastIndexOf('"ts":');
            // `"ts":"2025-01-01T00:00:00.000Z"`: ISO-8601 with milliseconds.
            if (at >= 0) this.#latencies.push(Date.now() - Date.parse(text.slice(at + 6, at + 30)));
            const fragments = this.#fragmentLatencies;
            if (delta && fragments) forEachFragmentStamp(text, (stamp) => fragments.push(receivedAt - stamp));
          }
          if (counter.received === state.expectedPerConnection) state.done++;
          state.onProgress?.();
        } else if (bytes[TYPE_AT] === E && bytes[TYPE_AT + 1] === R) {
          state.errorFrames++;
        }
      });
    }
    this.#eventGroups = groups;
    this.#events = state;
    return result;
  }

  /**
   * Each user's first connection sends `runsPerUser` messages one after another (the next when
   * the previous run's terminal event arrives there); every connection of the user receives
   * every event. Measured: first send → last expected event received.
   */
  async runEvents(request: EventsRequest): Promise<EventsResult> {
    const state = this.#events;
    const groups = this.#eventGroups;
    if (!state || groups.length === 0) throw new Error('runEvents before prepareEvents');
    const perRun = eventsPerRun(request.workload);
    if (perRun === null) throw new Error(`runEvents needs a known number of events per run, not ${workloadText(request.workload)}`);
    const connections = groups.reduce((n, g) => n + g.length, 0);
    state.expectedPerConnection = request.runsPerUser * perRun;
    resetCounts(state);
    for (const group of groups) for (const counter of group) counter.received = 0;
    const expected = connections * state.expectedPerConnection;
    const text = workloadText(request.workload);
    let runs = 0;

    const installed: Array<[WebSocket, () => void]> = [];
    const started = performance.now();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        state.onProgress = null;
        reject(new Error(`events: ${state.delivered}/${expected} delivered after ${request.timeoutMs ?? 60_000} ms (error frames ${state.errorFrames})`));
      }, request.timeoutMs ?? 60_000);
      const sent = new Array<number>(groups.length).fill(0);
      const send = (g: number) => {
        const sender = groups[g]![0]!;
        const k = sent[g]!++;
        runs++;
        sender.ws.send(`{"type":"user_message","id":"m-${request.tag}-${g}-${k}","thread_id":"t1","text":"${text}"}`);
      };
      // The sender's counter crossing a run boundary means that run's terminal event arrived.
      const senderSeen = new Array<number>(groups.length).fill(0);
      state.onProgress = () => {
        if (state.done === connections) {
          clearTimeout(timer);
          state.onProgress = null;
          resolve();
        }
      };
      groups.forEach((group, g) => {
        const sender = group[0]!;
        const onFrame = () => {
          const runsDone = Math.floor(sender.received / perRun);
          if (runsDone > senderSeen[g]!) {
            senderSeen[g] = runsDone;
            if (sent[g]! < request.runsPerUser) send(g);
          }
        };
        sender.ws.on('message', onFrame);
        installed.push([sender.ws, onFrame]);
      });
      for (let g = 0; g < groups.length; g++) send(g);
    }).finally(() => {
      for (const [ws, onFrame] of installed) ws.off('message', onFrame);
    });
    const wallMs = performance.now() - started;
    return {
      delivered: state.delivered,
      deltaFrames: state.deltaFrames,
      expected,
      runs,
      wallMs,
      errorFrames: state.errorFrames,
      agentErrors: state.agentErrors,
    };
  }

  /**
   * Open-loop load at a fixed message rate: messages go out round robin over the users' first
   * connections (each in its own thread, so none waits behind another), paced by elapsed time,
   * whatever the server's speed (a rate of 1e9 sends them all at once). Done when every
   * connection has received every run's terminal event. Every durable event's latency from its
   * append (`ts`, stamped by the run manager right before the append) to its receipt here is
   * recorded, and every streamed fragment's from when the agent made it.
   */
  async runPaced(request: PacedRequest): Promise<PacedResult> {
    const state = this.#events;
    const groups = this.#eventGroups;
    if (!state || groups.length === 0) throw new Error('runPaced before prepareEvents');
    let expectedTerminals = 0;
    for (let k = 0; k < request.messages; k++) expectedTerminals += groups[k % groups.length]!.length;
    const perRun = eventsPerRun(request.workload);
    const expected = perRun === null ? Number.NaN : expectedTerminals * perRun;
    state.expectedPerConnection = Number.MAX_SAFE_INTEGER;
    resetCounts(state);
    const latencies: number[] = [];
    const fragmentLatencies: number[] = [];
    this.#latencies = latencies;
    this.#fragmentLatencies = fragmentLatencies;
    const text = workloadText(request.workload);
    const timeoutMs = request.timeoutMs ?? 60_000;
    let sent = 0;
    let sendMs = 0;
    let ticker: NodeJS.Timeout | null = null;
    const loopWatch = new LoopWatch();
    let loop: LoopReport | undefined;
    loopWatch.start();
    const started = performance.now();
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          state.onProgress = null;
          reject(
            new Error(
              `paced: ${state.terminals}/${expectedTerminals} runs ended, ${state.delivered} events delivered after ${timeoutMs} ms, ${sent}/${request.messages} sent (error frames ${state.errorFrames})`,
            ),
          );
        }, timeoutMs);
        state.onProgress = () => {
          if (sent === request.messages && state.terminals >= expectedTerminals) {
            clearTimeout(timer);
            state.onProgress = null;
            resolve();
          }
        };
        const tick = () => {
          const due = Math.min(request.messages, Math.floor(((performance.now() - started) / 1000) * request.messagesPerSec) + 1);
          while (sent < due) {
            const k = sent++;
            const g = k % groups.length;
            groups[g]![0]!.ws.send(`{"type":"user_message","id":"p-${request.tag}-${k}","thread_id":"p-${request.tag}-${k}","text":"${text}"}`);
          }
          if (sent < request.messages) ticker = setTimeout(tick, 2);
          else sendMs = performance.now() - started;
        };
        tick();
      });
    } finally {
      if (ticker) clearTimeout(ticker);
      this.#latencies = null;
      this.#fragmentLatencies = null;
      state.onProgress = null;
      loop = loopWatch.stop();
    }
    const wallMs = performance.now() - started;
    const fragmentsSorted = fragmentLatencies.sort((a, b) => a - b);
    return {
      delivered: state.delivered,
      expected,
      wallMs,
      sendMs,
      p50: percentile(latencies, 50),
      p90: percentile(latencies, 90),
      p99: percentile(latencies, 99),
      max: latencies.reduce((m, v) => Math.max(m, v), Number.NEGATIVE_INFINITY),
      deltaFrames: state.deltaFrames,
      fragments: fragmentsSorted.length,
      fragmentP50: percentile(fragmentsSorted, 50),
      fragmentP99: percentile(fragmentsSorted, 99),
      fragmentMax: fragmentsSorted.at(-1) ?? Number.NaN,
      errorFrames: state.errorFrames,
      agentErrors: state.agentErrors,
      loop: loop!,
    };
  }
}

function resetCounts(state: EventsState): void {
  state.delivered = 0;
  state.deltaFrames = 0;
  state.terminals = 0;
  state.done = 0;
  state.errorFrames = 0;
  state.agentErrors = 0;
}

/** `{"type":"agent_text_delta"` or `{"type":"agent_thinking_delta"` (the closing quote tells them from agent_thinking). */
function isDelta(bytes: Buffer): boolean {
  const QUOTE = 0x22;
  return (
    (bytes[TYPE_AT + 16] === QUOTE && bytes[TYPE_AT + 6] === 0x74 && bytes[TYPE_AT + 7] === E) ||
    (bytes[TYPE_AT + 20] === QUOTE && bytes[TYPE_AT + 15] === 0x64)
  );
}

function tokenKey(algorithm: BenchAlgorithm, user: string): string {
  return `${algorithm}\n${user}`;
}
