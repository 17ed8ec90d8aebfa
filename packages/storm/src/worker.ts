import { PROTOCOL_NAME, TOKEN_PROTOCOL_PREFIX } from '@agentwire/protocol';
import WebSocket from 'ws';
import { StormChecker, type ConnectionChecker, type JsonObject } from './checker.js';
import { LogHistogram } from './stats.js';
import { tokensFor } from './tokens.js';
import type { BarrierName, Progress, WorkerPlan, WorkerResult } from './types.js';

/** Texts the demo agent answers deterministically (calculator or word_count). */
export const STORM_TEXTS = [
  'what is 7*6?',
  'what is 2+3*4?',
  'how much is (12-4)/2?',
  'what is 100-58?',
  'count the words in this short sentence',
  'hello from the storm probe',
];

interface Conn {
  readonly label: string;
  readonly user: string;
  readonly localAddress: string | null;
  readonly check: ConnectionChecker;
  ws: WebSocket | null;
  startedAt: number;
  openedAt: number;
  failure: string | null;
  closingByProbe: boolean;
  done: boolean;
}

type Answer = JsonObject | null;

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * One worker's part of a storm: opens its connections in waves, lets each of its users send
 * messages, feeds everything it receives to a StormChecker, and returns counts, examples and
 * timings. Runs in the CLI's own process (one worker) or in a forked worker process.
 */
export class StormWorker {
  readonly checker = new StormChecker();
  readonly #plan: WorkerPlan;
  readonly #conns: Conn[];
  readonly #byUser = new Map<string, Conn[]>();
  readonly #answers = new Map<string, (answer: Answer) => void>();
  readonly #terminals = new Map<string, () => void>();
  readonly #readyTimes: number[] = [];
  readonly #connectTimes: number[] = [];
  readonly #latency = new LogHistogram();
  readonly #latencyBySecond = new Map<number, LogHistogram>();
  readonly #closesByCode = new Map<string, number>();
  readonly #errorFrames = new Map<string, number>();
  readonly #bySourceAddress = new Map<string, number>();
  #connected = 0;
  #ready = 0;
  #closed = 0;
  #failed = 0;
  #closedBeforeReady = 0;
  #messagesSent = 0;
  #phase = 'starting';
  #closeWaiters = new Set<() => void>();

  readonly #barrier: (name: BarrierName) => Promise<void>;

  /**
   * `barrier` resolves once every worker of the storm reached the same point (all connected,
   * all settled), so that all connections are open at the same time; a lone worker passes it.
   */
  constructor(plan: WorkerPlan, barrier: (name: BarrierName) => Promise<void> = async () => {}) {
    this.#plan = plan;
    this.#barrier = barrier;
    this.#conns = plan.connections.map((c) => ({
      label: c.label,
      user: c.user,
      localAddress: c.localAddress,
      check: this.checker.connection(c.label, c.user),
      ws: null,
      startedAt: 0,
      openedAt: 0,
      failure: null,
      closingByProbe: false,
      done: false,
    }));
    for (const conn of this.#conns) {
      const list = this.#byUser.get(conn.user) ?? [];
      list.push(conn);
      this.#byUser.set(conn.user, list);
    }
  }

  progress(): Progress {
    return {
      planned: this.#conns.length,
      connected: this.#connected,
      ready: this.#ready,
      closed: this.#closed,
      failed: this.#failed,
      messagesSent: this.#messagesSent,
      runsAcked: this.checker.runsAcked,
      runsDone: this.checker.runsDone,
      violations: this.checker.violationCount,
      phase: this.#phase,
    };
  }

  async run(): Promise<WorkerResult> {
    let tokens: Map<string, string>;
    try {
      this.#phase = 'tokens';
      tokens = await tokensFor(this.#plan, this.#plan.users);
    } catch (error) {
      await this.#barrier('connected');
      await this.#barrier('settled');
      return this.#result(`could not get tokens: ${(error as Error).message}`);
    }
    this.#phase = 'connecting';
    await this.#connectAll(tokens);
    this.#phase = 'waiting';
    await this.#barrier('connected');
    this.#phase = 'messages';
    await Promise.all([...this.#byUser.keys()].map((user) => this.#sendMessages(user, this.#plan.messages)));
    if (this.#plan.durationMs > 0) {
      this.#phase = 'holding';
      const holdEnd = now() + this.#plan.durationMs;
      if (this.#plan.keepSending) {
        await Promise.all([...this.#byUser.keys()].map((user) => this.#keepSending(user, holdEnd)));
      }
      const rest = holdEnd - now();
      if (rest > 0) await sleep(rest);
    }
    this.#phase = 'settling';
    const settleEnd = now() + this.#plan.settleTimeoutMs;
    while (!this.checker.settled() && now() < settleEnd) await sleep(50);
    this.#phase = 'waiting';
    await this.#barrier('settled');
    this.checker.finish(this.#rel(now()));
    this.#phase = 'closing';
    await this.#closeAll();
    this.#phase = 'done';
    return this.#result(null);
  }

  #result(fatal: string | null): WorkerResult {
    const bySecond: WorkerResult['latencyBySecond'] = {};
    for (const [second, histogram] of this.#latencyBySecond) bySecond[String(second)] = histogram.toJSON();
    return {
      index: this.#plan.index,
      pid: process.pid,
      progress: this.progress(),
      counts: this.checker.counts,
      examples: this.checker.examples,
      readyTimes: this.#readyTimes,
      connectTimes: this.#connectTimes,
      latency: this.#latency.toJSON(),
      latencyBySecond: bySecond,
      closesByCode: Object.fromEntries(this.#closesByCode),
      bySourceAddress: Object.fromEntries(this.#bySourceAddress),
      eventsReceived: this.checker.eventsReceived,
      errorFrames: Object.fromEntries(this.#errorFrames),
      fatal,
    };
  }

  #rel(t: number): number {
    return Math.round(t - this.#plan.startedAt);
  }

  /** Opens connections at `plan.rate` per second with at most `maxInflight` not yet ready. */
  async #connectAll(tokens: Map<string, string>): Promise<void> {
    const plan = this.#plan;
    const begin = now();
    let opened = 0;
    const inflight = () => opened - this.#ready - this.#failed - this.#closedBeforeReady;
    while (opened < this.#conns.length) {
      const allowed = Math.min(this.#conns.length, Math.max(1, Math.floor(((now() - begin) / 1000) * plan.rate) + 1));
      while (opened < allowed && inflight() < plan.maxInflight) {
        this.#open(this.#conns[opened]!, tokens.get(this.#conns[opened]!.user)!);
        opened += 1;
      }
      this.#sweepTimeouts();
      if (opened < this.#conns.length) await sleep(Math.max(5, Math.min(50, 1000 / plan.rate)));
    }
    while (this.#conns.some((c) => !c.check.isReady && !c.done)) {
      this.#sweepTimeouts();
      await sleep(20);
    }
  }

  #sweepTimeouts(): void {
    const t = now();
    for (const conn of this.#conns) {
      if (conn.done || conn.ws === null || conn.check.isReady) continue;
      const since = conn.check.openAt === null ? conn.startedAt : conn.openedAt;
      if (t - since < this.#plan.readyTimeoutMs) continue;
      if (conn.check.openAt === null) {
        conn.failure ??= `not open within ${this.#plan.readyTimeoutMs} ms`;
        conn.check.connectFailed(this.#rel(t), conn.failure);
      } else {
        conn.check.readyTimedOut(this.#rel(t), this.#plan.readyTimeoutMs);
      }
      conn.closingByProbe = true;
      conn.ws.terminate();
    }
  }

  #open(conn: Conn, token: string): void {
    conn.startedAt = now();
    const ws = new WebSocket(this.#plan.url, [PROTOCOL_NAME, `${TOKEN_PROTOCOL_PREFIX}${token}`], {
      perMessageDeflate: false,
      handshakeTimeout: this.#plan.readyTimeoutMs,
      ...(conn.localAddress ? { localAddress: conn.localAddress } : {}),
    });
    conn.ws = ws;
    ws.once('upgrade', (response) => {
      this.#bump(this.#bySourceAddress, response.socket.localAddress ?? 'unknown');
    });
    ws.on('open', () => {
      const t = now();
      this.#connected += 1;
      conn.openedAt = t;
      this.#connectTimes.push(Math.round((t - conn.startedAt) * 100) / 100);
      conn.check.opened(this.#rel(t), ws.protocol);
    });
    ws.on('message', (data, isBinary) => {
      const t = now();
      const text = isBinary ? `<binary frame of ${(data as Buffer).length} bytes>` : (data as Buffer).toString();
      const wasReady = conn.check.isReady;
      const frame = conn.check.frame(text, this.#rel(t));
      if (!wasReady && conn.check.isReady) {
        this.#ready += 1;
        this.#readyTimes.push(Math.round((t - conn.startedAt) * 100) / 100);
      }
      if (frame) this.#onFrame(frame, t);
    });
    ws.on('error', (error) => {
      if (conn.check.openAt !== null) return;
      conn.failure ??= error.message;
      conn.check.connectFailed(this.#rel(now()), error.message);
    });
    ws.on('close', (code, reason) => {
      const t = now();
      if (conn.done) return;
      conn.done = true;
      this.#closed += 1;
      if (conn.check.failed && conn.check.openAt === null) {
        this.#failed += 1;
        const status = /Unexpected server response: (\d+)/.exec(conn.failure ?? '');
        this.#bump(this.#closesByCode, status ? `http_${status[1]}` : 'connect_failed');
      } else {
        if (!conn.check.isReady) this.#closedBeforeReady += 1;
        this.#bump(this.#closesByCode, String(code));
      }
      conn.check.closed(code, reason.toString(), this.#rel(t), conn.closingByProbe);
      for (const waiter of [...this.#closeWaiters]) waiter();
    });
  }

  #onFrame(frame: JsonObject, t: number): void {
    const type = frame.type;
    if (type === 'ack' && typeof frame.id === 'string') {
      this.#answers.get(frame.id)?.(frame);
    } else if (type === 'error') {
      this.#bump(this.#errorFrames, String(frame.code));
      if (typeof frame.ref === 'string') this.#answers.get(frame.ref)?.(frame);
    } else if (typeof frame.seq === 'number' && typeof frame.ts === 'string') {
      const ts = Date.parse(frame.ts);
      if (!Number.isNaN(ts)) {
        const latency = Math.max(0, t - ts);
        this.#latency.record(latency);
        const second = Math.max(0, Math.floor((t - this.#plan.startedAt) / 1000));
        let histogram = this.#latencyBySecond.get(second);
        if (!histogram) {
          histogram = new LogHistogram();
          this.#latencyBySecond.set(second, histogram);
        }
        histogram.record(latency);
      }
      if ((type === 'agent_completed' || type === 'agent_error') && typeof frame.run_id === 'string') {
        this.#terminals.get(frame.run_id)?.();
      }
    }
  }

  #bump(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  #pickConnection(user: string): Conn | null {
    const open = (this.#byUser.get(user) ?? []).filter((c) => c.check.isOpenAndReady && c.ws?.readyState === WebSocket.OPEN);
    if (open.length === 0) return null;
    return open[Math.floor(Math.random() * open.length)]!;
  }

  /** Sends one message from a random ready connection of `user`; resolves with its answer. */
  async #sendOne(user: string, n: number): Promise<Answer | 'no_connection'> {
    const conn = this.#pickConnection(user);
    if (!conn) return 'no_connection';
    const plan = this.#plan;
    const id = `${plan.runTag}-${user}-m${n}`;
    const threadId = `${plan.runTag}-${user}-t${n % plan.threads}`;
    const text = STORM_TEXTS[(n + user.length) % STORM_TEXTS.length]!;
    const answer = new Promise<Answer>((resolve) => {
      const timer = setTimeout(() => finish(null), plan.ackTimeoutMs);
      const finish = (value: Answer) => {
        clearTimeout(timer);
        this.#answers.delete(id);
        resolve(value);
      };
      this.#answers.set(id, finish);
    });
    conn.check.sent(id, threadId, this.#rel(now()));
    conn.ws!.send(JSON.stringify({ type: 'user_message', id, thread_id: threadId, text }));
    this.#messagesSent += 1;
    return answer;
  }

  /** The user's messages, one at a time (each waits for its ack), from random connections. */
  async #sendMessages(user: string, count: number): Promise<void> {
    for (let n = 0; n < count; n += 1) {
      const answer = await this.#sendOne(user, n);
      if (answer === 'no_connection') return;
    }
  }

  /** During the hold: send, wait for the run's terminal event, pause, repeat until `until`. */
  async #keepSending(user: string, until: number): Promise<void> {
    let n = this.#plan.messages;
    while (now() < until) {
      const answer = await this.#sendOne(user, n);
      n += 1;
      if (answer === 'no_connection') return;
      if (answer && answer.type === 'ack' && typeof answer.run_id === 'string') {
        const runId = answer.run_id;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.max(0, until - now()));
          function done() {
            clearTimeout(timer);
            resolve();
          }
          this.#terminals.set(runId, () => {
            this.#terminals.delete(runId);
            done();
          });
        });
      }
      const pause = Math.min(this.#plan.sendIntervalMs, until - now());
      if (pause > 0) await sleep(pause);
    }
  }

  async #closeAll(): Promise<void> {
    for (const conn of this.#conns) {
      if (conn.done || conn.ws === null) continue;
      conn.closingByProbe = true;
      if (conn.ws.readyState === WebSocket.OPEN) conn.ws.close(1000, 'storm done');
      else conn.ws.terminate();
    }
    const deadline = now() + 5000;
    while (this.#conns.some((c) => c.ws !== null && !c.done) && now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(wake, 100);
        const closeWaiters = this.#closeWaiters;
        function wake() {
          clearTimeout(timer);
          closeWaiters.delete(wake);
          resolve();
        }
        closeWaiters.add(wake);
      });
    }
    for (const conn of this.#conns) if (!conn.done) conn.ws?.terminate();
  }
}
