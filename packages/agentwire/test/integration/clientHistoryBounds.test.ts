/**
 * The SDK reads a history answer with a byte cap: a server that sends an endless or oversized
 * body (or declares one) gets the call rejected with AnswerTooLargeError once the cap is passed,
 * and the body is given up, so the client buffers a bounded amount in bounded time. Before, it
 * read the whole body with `text()` and grew until the request's deadline.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { AnswerTooLargeError, HttpError } from '@agentwire/client';
import { createClient } from '@agentwire/client/node';
import { within } from '../helpers/waitFor.js';

const MiB = 1024 * 1024;
let server: Server | undefined;
const clients: Array<{ close(): void }> = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = undefined;
});

/** What the server wrote on one response until the client let go of it. */
interface Sent {
  bytes: number;
  readonly closed: Promise<void>;
}

/** Writes 64 KiB chunks of a JSON string, as fast as the client reads, until it closes. */
function endless(res: ServerResponse, sent: Sent): void {
  const chunk = Buffer.alloc(64 * 1024, 'a');
  res.write('{"threads":"');
  const pump = () => {
    while (!res.destroyed && !res.writableEnded) {
      sent.bytes += chunk.length;
      if (!res.write(chunk)) return void res.once('drain', pump);
    }
  };
  pump();
}

async function startServer(handle: (req: IncomingMessage, res: ServerResponse, sent: Sent) => void): Promise<{ url: string; sent: Sent[] }> {
  const sent: Sent[] = [];
  server = createServer((req, res) => {
    const one: Sent = { bytes: 0, closed: once(res, 'close').then(() => {}) };
    sent.push(one);
    handle(req, res, one);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`, sent };
}

function client(url: string, options: { httpMaxBytes?: number } = {}) {
  // A deadline far beyond the waits below: only the cap can end these calls in time.
  const made = createClient({ url, token: 'token', httpTimeoutMs: 60_000, ...options });
  clients.push(made);
  return made;
}

const THREAD = { thread_id: 't1', title: 'hello', created_at: '2026-01-01T00:00:00.000Z', updated_at: '2026-01-01T00:00:00.000Z', last_run: null };

describe('client history answers are read with a byte cap', () => {
  it('an endless threads page rejects once past 1 MiB and the body is given up; a normal page still reads', async () => {
    const { url, sent } = await startServer((req, res, one) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url?.includes('cursor=ok')) res.end(JSON.stringify({ threads: [THREAD], next_cursor: null }));
      else endless(res, one);
    });
    const sdk = client(url);
    const error = await within(
      sdk.threads().catch((e: unknown) => e),
      'threads() to reject',
    );
    expect(error).toBeInstanceOf(AnswerTooLargeError);
    expect(error).toMatchObject({ status: 200, limit: MiB });
    expect((error as Error).message).toBe('the answer to GET /v1/threads (HTTP 200) is over 1048576 bytes and was not read further');
    // The client closed the connection; what was sent is the cap plus what the sockets buffered.
    await within(sent[0]!.closed, 'the server to see the client let go');
    expect(sent[0]!.bytes).toBeLessThan(16 * MiB);

    expect(await sdk.threads({ cursor: 'ok' })).toEqual({ threads: [THREAD], next_cursor: null });
  });

  it('a messages page over httpMaxBytes rejects, and a Content-Length over it rejects before any body', async () => {
    const { url, sent } = await startServer((req, res, one) => {
      if (req.url?.includes('cursor=declared')) {
        // Headers only: the body never comes, so only the declared length can end the call.
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(2 ** 40) });
        res.flushHeaders();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      endless(res, one);
    });
    const sdk = client(url, { httpMaxBytes: 4 * MiB });
    await expect(within(sdk.history('t1'), 'history() to reject')).rejects.toMatchObject({ name: 'AnswerTooLargeError', limit: 4 * MiB });
    await within(sent[0]!.closed, 'the server to see the client let go');
    expect(sent[0]!.bytes).toBeLessThan(24 * MiB);
    await expect(within(sdk.history('t1', { cursor: 'declared' }), 'history() to reject at the header')).rejects.toThrow(
      'the answer to GET /v1/threads/t1/messages (HTTP 200) is over 4194304 bytes',
    );
  });

  it('an error status with an endless body is an HttpError, read no further than its start', async () => {
    const { url, sent } = await startServer((_req, res, one) => {
      res.writeHead(500, { 'content-type': 'application/json' });
      endless(res, one);
    });
    const error = await within(
      client(url)
        .deleteThread('t1')
        .catch((e: unknown) => e),
      'deleteThread() to reject',
    );
    expect(error).toBeInstanceOf(HttpError);
    expect(error).toMatchObject({ status: 500, code: 'http_error' });
    await within(sent[0]!.closed, 'the server to see the client let go');
  });

  it("a caller's fetch whose body is a Node stream (node-fetch) or gives text chunks still works, capped", async () => {
    const page = JSON.stringify({ threads: [THREAD], next_cursor: null });
    const answer = (body: unknown, text = page) => ({ status: 200, headers: { get: () => null }, body, text: async () => text });
    // node-fetch: a Node Readable, no getReader: the body is read with text() and then judged.
    const nodeFetch = createClient({ url: 'ws://127.0.0.1:1/ws', token: 'token', fetch: async () => answer(Readable.from([page])) });
    clients.push(nodeFetch);
    expect(await nodeFetch.threads()).toEqual({ threads: [THREAD], next_cursor: null });
    // A web stream of strings: counted in UTF-8 bytes against the cap like byte chunks.
    const chunks = (texts: string[]) => {
      const queue = [...texts];
      return { getReader: () => ({ read: async () => (queue.length > 0 ? { done: false, value: queue.shift()! } : { done: true }), cancel: async () => {} }) };
    };
    const textChunks = createClient({
      url: 'ws://127.0.0.1:1/ws',
      token: 'token',
      fetch: async (url) => answer(url.includes('cursor=big') ? chunks(['{"threads":"', 'é'.repeat(MiB / 2 + 1), '"}']) : chunks([page])),
    });
    clients.push(textChunks);
    expect(await textChunks.threads()).toEqual({ threads: [THREAD], next_cursor: null });
    await expect(textChunks.threads({ cursor: 'big' })).rejects.toMatchObject({ name: 'AnswerTooLargeError', limit: MiB });
  });
});
