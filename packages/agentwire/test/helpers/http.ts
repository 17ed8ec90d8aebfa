import { request, type IncomingHttpHeaders } from 'node:http';
import WebSocket from 'ws';

export interface HttpReply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

/** A plain GET without keep-alive, so it never holds a server open. */
export function httpGet(url: string, timeoutMs = 5000): Promise<HttpReply> {
  return httpRequest('GET', url, undefined, timeoutMs);
}

/** One HTTP request without keep-alive; `body` is sent as is. */
export function httpRequest(method: string, url: string, body?: string, timeoutMs = 5000): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timed out after ${timeoutMs} ms waiting for ${method} ${url}`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Polls an HTTP probe (as a load balancer would) until it answers `status`, within a deadline. */
export async function waitStatus(url: string, status: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    try {
      const reply = await httpGet(url, 2000);
      if (reply.status === status) return;
      last = String(reply.status);
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export interface UpgradeOutcome {
  /** 101 when the handshake was accepted, else the HTTP status of the refusal. */
  status: number;
  headers: IncomingHttpHeaders;
}

/**
 * Attempts a WebSocket upgrade and reports how the server answered: the HTTP status and headers
 * of a refusal (the 'unexpected-response' event), or 101 when a socket was accepted (which is
 * then closed at once).
 */
export function tryUpgrade(url: string, options: { protocols?: string[]; timeoutMs?: number } = {}): Promise<UpgradeOutcome> {
  const timeoutMs = options.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options.protocols ?? ['agentwire.v1']);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for the answer to an upgrade on ${url}`));
    }, timeoutMs);
    ws.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    ws.once('unexpected-response', (req, res) => {
      clearTimeout(timer);
      res.resume();
      req.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
    });
    ws.once('upgrade', (res) => {
      clearTimeout(timer);
      ws.once('open', () => ws.terminate());
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
    });
  });
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition format into samples (comments and blank lines skipped). */
export function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/**
 * The value of the one sample named `name` whose labels include `labels`; undefined when there
 * is none; throws when several match (the query was not precise enough).
 */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const matching = samples.filter((s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value));
  if (matching.length > 1) throw new Error(`${matching.length} samples match ${name} ${JSON.stringify(labels)}`);
  return matching[0]?.value;
}
