/**
 * Requests to a test gateway's HTTP routes (the section 14 history routes and the rest), and
 * the users of history tests: one helper for every test file that calls them.
 */
import { randomUUID } from 'node:crypto';
import { request, type IncomingHttpHeaders } from 'node:http';
import { expect } from 'vitest';
import type { TestGateway } from './gateway.js';
import type { TestClient } from './wsClient.js';

/** An answer: `body` is its JSON, null when it is empty or not JSON (then see `text`). */
export interface HttpReply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
  /** Tests match on the shape of what the routes answer. */
  readonly body: any;
}

export interface HttpCallOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  readonly token?: string | null;
  /** Sent as is, as `application/json`. */
  readonly body?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** One request on a connection of its own to 127.0.0.1:`port`. */
export function httpCall(port: number, method: string, path: string, options: HttpCallOptions = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    Object.assign(headers, options.headers);
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: jsonOrNull(text) }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function jsonOrNull(text: string): unknown {
  try {
    return text === '' ? null : JSON.parse(text);
  } catch {
    return null;
  }
}

/** A user of a history test: a ready connection to `gateway` and a token for the routes. */
export async function historyUser(gateway: TestGateway, name: string): Promise<{ id: string; token: string; client: TestClient }> {
  const id = `${name}-${randomUUID().slice(0, 6)}`;
  return { id, token: await gateway.token(id), client: await gateway.ready(id) };
}

/** Sends a message and waits for its run's end and for `settled` (what it appended readable through the routes); its run id. */
export async function completedRun(client: TestClient, threadId: string, text: string, settled: () => Promise<void>): Promise<string> {
  const ack = await client.message(randomUUID(), threadId, text);
  expect(ack.type).toBe('ack');
  await client.runEvents(ack.run_id);
  await settled();
  return ack.run_id as string;
}
