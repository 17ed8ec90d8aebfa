import WebSocket from 'ws';
import { Waiters } from './waitFor.js';

export type Frame = Record<string, any>;
export type AuthVia = 'header' | 'subprotocol' | 'frame' | 'none';

export interface ConnectOptions {
  token?: string;
  via?: AuthVia;
  lastSeq?: number;
  epoch?: string;
  /** Extra subprotocols to offer (agentwire.v1 is offered unless `offerProtocol` is false). */
  offerProtocol?: boolean;
  headers?: Record<string, string>;
  /** Offer permessage-deflate (ws's default: offered). */
  perMessageDeflate?: boolean;
}

/**
 * A test client over a real socket: records every frame, and lets a test wait for a frame or
 * the close by event, never by sleeping. Every wait has a timeout that names what was awaited.
 */
export class TestClient {
  readonly frames: Frame[] = [];
  readonly ws: WebSocket;
  closeCode: number | null = null;
  closeReason = '';
  unexpectedResponseStatus: number | null = null;
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly #waiters = new Waiters(() => `close=${this.closeCode} ${this.closeReason}; frames=${JSON.stringify(this.frames.slice(-5))}`);

  constructor(url: string, options: ConnectOptions = {}) {
    const via = options.via ?? 'subprotocol';
    const query = new URLSearchParams();
    if (options.lastSeq !== undefined && via !== 'frame') query.set('last_seq', String(options.lastSeq));
    if (options.epoch !== undefined && via !== 'frame') query.set('epoch', options.epoch);
    const target = query.size ? `${url}?${query}` : url;
    const protocols: string[] = options.offerProtocol === false ? [] : ['agentwire.v1'];
    const headers: Record<string, string> = { ...options.headers };
    if (options.token && via === 'subprotocol') protocols.push(`jwt.${options.token}`);
    if (options.token && via === 'header') headers.authorization = `Bearer ${options.token}`;
    this.ws = new WebSocket(target, protocols, {
      headers,
      ...(options.perMessageDeflate === undefined ? {} : { perMessageDeflate: options.perMessageDeflate }),
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('unexpected-response', (_req, res) => {
        this.unexpectedResponseStatus = res.statusCode ?? null;
        reject(new Error(`upgrade refused with HTTP ${res.statusCode}`));
      });
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        this.#waiters.notify();
        resolve({ code, reason: this.closeReason });
      });
    });
    this.ws.on('error', () => {});
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      this.frames.push(JSON.parse((data as Buffer).toString()));
      this.#waiters.notify();
    });
    if (via === 'frame' && options.token !== undefined) {
      this.ws.once('open', () => {
        const auth: Frame = { type: 'auth', token: options.token };
        if (options.lastSeq !== undefined) auth.last_seq = options.lastSeq;
        if (options.epoch !== undefined) auth.epoch = options.epoch;
        this.send(auth);
      });
    }
  }

  send(frame: Frame | string): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Resolves with the first recorded frame (from index `from`) that matches. */
  waitFor(predicate: (frame: Frame) => boolean, timeoutMs = 5000, what = 'frame', from = 0): Promise<Frame> {
    return this.#waiters.until(() => this.frames.slice(from).find(predicate), timeoutMs, what);
  }

  waitForType(type: string, timeoutMs = 5000): Promise<Frame> {
    return this.waitFor((f) => f.type === type, timeoutMs, `frame of type ${type}`);
  }

  ready(timeoutMs = 5000): Promise<Frame> {
    return this.waitForType('connection_ready', timeoutMs);
  }

  /** Resolves once `condition` holds, re-checked on every frame. */
  until(condition: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<true> {
    return this.#waiters.until(() => condition() || undefined, timeoutMs, what);
  }

  /** Resolves once `count` frames match. */
  waitForCount(predicate: (frame: Frame) => boolean, count: number, timeoutMs = 5000, what = 'frames'): Promise<Frame[]> {
    return this.#waiters.until(
      () => {
        const matched = this.frames.filter(predicate);
        return matched.length >= count ? matched : undefined;
      },
      timeoutMs,
      `${count} ${what}`,
    );
  }

  /** Resolves with the run's events once its terminal event arrived. */
  async runEvents(runId: string, timeoutMs = 10000): Promise<Frame[]> {
    await this.waitFor((f) => f.run_id === runId && (f.type === 'agent_completed' || f.type === 'agent_error'), timeoutMs, `terminal event of ${runId}`);
    return this.frames.filter((f) => f.run_id === runId && typeof f.seq === 'number');
  }

  /** Sends a user_message and resolves with its ack (or error). */
  async message(id: string, threadId: string, text: string, timeoutMs = 5000): Promise<Frame> {
    this.send({ type: 'user_message', id, thread_id: threadId, text });
    return this.waitFor((f) => (f.type === 'ack' || f.type === 'error') && (f.id === id || f.ref === id), timeoutMs, `ack of ${id}`);
  }

  events(): Frame[] {
    return this.frames.filter((f) => typeof f.seq === 'number');
  }

  waitClosed(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    return this.#waiters.until(() => (this.closeCode === null ? undefined : { code: this.closeCode, reason: this.closeReason }), timeoutMs, 'close');
  }

  close(code = 1000): void {
    if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    else this.ws.close(code);
  }
}

/** Asserts contiguous seqs (each +1 from the previous). Returns the first problem or null. */
export function seqProblem(events: Frame[], startAfter?: number): string | null {
  let previous = startAfter ?? (events.length ? events[0]!.seq - 1 : 0);
  for (const event of events) {
    if (event.seq !== previous + 1) return `expected seq ${previous + 1}, got ${event.seq}`;
    previous = event.seq;
  }
  return null;
}

let runsStarted = 0;
/** Sends `text` as a message on a thread of its own and resolves with its run id; an answer other than an ack fails. */
export async function startRun(client: TestClient, text: string): Promise<string> {
  const id = `m${++runsStarted}`;
  const ack = await client.message(id, `thread-${id}`, text);
  if (ack.type !== 'ack') throw new Error(`expected an ack of ${id}, got ${JSON.stringify(ack)}`);
  return ack.run_id as string;
}
