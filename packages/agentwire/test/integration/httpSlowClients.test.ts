import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { startGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * HTTP clients that send slowly or without end: a request must arrive whole within
 * httpRequestTimeoutMs, and a body nobody reads is thrown away only up to a bound, so no client
 * holds a socket or keeps the server reading for as long as it likes. WebSockets are unaffected.
 */
let env: TestGateway;
let port: number;

beforeAll(async () => {
  env = await startGateway({ httpRequestTimeoutMs: 400 });
  port = Number(new URL(env.url).port);
});
afterAll(async () => {
  await env.stop();
});

/** A raw connection that records what it receives and resolves `closed` when the server ends it. */
function rawClient(): { socket: Socket; received: () => string; closed: Promise<void> } {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, received: () => text, closed };
}

describe('slow and endless HTTP clients', () => {
  it('a body that stalls is answered 408 and its connection closed, while a WebSocket outlives the deadline', async () => {
    const ws = await env.ready('slow-http-ws');
    const token = await env.token('slow-http-ws');
    const client = rawClient();
    client.socket.write(
      `PATCH /v1/threads/t1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"ti`,
    );
    await client.closed;
    expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
    // The WebSocket, upgraded from an HTTP request, is not a request any more: it still answers.
    ws.send({ type: 'ping' });
    await ws.waitForType('pong');
    expect(ws.closeCode).toBeNull();
    ws.close();
  });

  it('headers that never end are answered 408 and closed', async () => {
    const client = rawClient();
    client.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    await client.closed;
    expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('an unauthenticated request streaming an endless body gets its 401, and the server stops reading after 1 MiB', async () => {
    const client = rawClient();
    let written = 0;
    let open = true;
    void client.closed.then(() => (open = false));
    client.socket.write('PATCH /v1/threads/t1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
    const chunk = Buffer.alloc(64 * 1024, 'a');
    const frame = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
    // Bounded: 16 MiB at most; the server must close long before (it throws away up to 1 MiB).
    while (open && written < 16 * 1024 * 1024) {
      if (!client.socket.write(frame)) await new Promise((resolve) => client.socket.once('drain', resolve).once('close', resolve));
      written += chunk.length;
    }
    await client.closed;
    expect(client.received()).toMatch(/^HTTP\/1\.1 401 /);
    expect(written).toBeLessThan(16 * 1024 * 1024);
  });

  it('a request declaring a body over 1 MiB is answered, then closed: at once where the route reads no body, by the deadline elsewhere', async () => {
    for (const [path, status, closeHeader] of [
      ['/v1/threads', 401, true],
      ['/no-such-route', 404, true],
      ['/healthz', 200, false],
    ] as const) {
      const client = rawClient();
      client.socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n`);
      await client.closed;
      expect(client.received()).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      if (closeHeader) expect(client.received().toLowerCase()).toContain('connection: close');
    }
  });
});
