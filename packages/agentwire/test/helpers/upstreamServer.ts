import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Waiters } from './waitFor.js';

/** One request the fake upstream received: its headers, its JSON body, and whether its connection closed. */
export interface UpstreamRequest {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: any;
  readonly res: ServerResponse;
  /** The gateway closed the request's connection (an abort, or the end of the exchange). */
  closed: boolean;
}

export type UpstreamHandler = (request: UpstreamRequest, req: IncomingMessage) => void | Promise<void>;

/**
 * A real HTTP upstream on 127.0.0.1 and a free port: each POST's body is read, recorded and
 * handed to the test's handler, which answers through `res` as it likes (or never). Tests wait
 * for requests and closes by event.
 */
export class UpstreamServer {
  readonly requests: UpstreamRequest[] = [];
  readonly #waiters = new Waiters(() => `requests=${this.requests.length}, closed=${this.requests.filter((r) => r.closed).length}`);
  readonly #server: Server;
  url = '';

  constructor(handler: UpstreamHandler) {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const request: UpstreamRequest = { path: req.url ?? '', headers: req.headers, body: text ? JSON.parse(text) : null, res, closed: false };
        // 'close' of the response: the exchange ended or the connection went away under it.
        res.on('close', () => {
          request.closed = true;
          this.#waiters.notify();
        });
        res.on('error', () => {});
        this.requests.push(request);
        this.#waiters.notify();
        void Promise.resolve(handler(request, req)).catch(() => res.destroy());
      });
    });
  }

  async start(path = '/run'): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}${path}`;
    return this;
  }

  /** Resolves with the `n`th request (1-based) once it arrived. */
  request(n = 1, timeoutMs = 5000): Promise<UpstreamRequest> {
    return this.#waiters.until(() => this.requests[n - 1], timeoutMs, `upstream request ${n}`);
  }

  /** Resolves once the `n`th request's connection closed. */
  async closed(n = 1, timeoutMs = 5000): Promise<void> {
    await this.#waiters.until(() => this.requests[n - 1]?.closed, timeoutMs, `close of upstream request ${n}`);
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** Writes one NDJSON line per step. */
export function ndjson(res: ServerResponse, ...steps: unknown[]): boolean {
  return res.write(steps.map((step) => `${JSON.stringify(step)}\n`).join(''));
}

/** Starts an NDJSON answer. */
export function ndjsonHead(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.flushHeaders();
}
