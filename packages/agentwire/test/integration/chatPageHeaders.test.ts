/**
 * The chat page's security headers (src/web): no framing in any browser, no opener handle, and a
 * connect-src that names what the page connects to, from the Host header only when it is a plain
 * host[:port].
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createChatPageHandler, type ChatPageOptions } from '../../src/index.js';

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A server with only the chat page, on 127.0.0.1; resolves to its port. */
async function pageServer(options: ChatPageOptions = {}): Promise<number> {
  const chat = createChatPageHandler(options);
  server = createServer((req, res) => {
    if (!chat(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** GET `path` with a Host header of our choosing, without keep-alive. */
function get(port: number, path: string, host: string): Promise<{ status: number; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers: { Host: host } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

const connectSrc = (headers: IncomingHttpHeaders) => /connect-src ([^;]*);/.exec(String(headers['content-security-policy']))?.[1];

describe('chat page headers', () => {
  it('forbids framing (X-Frame-Options as well as frame-ancestors) and isolates the opener, on the page only', async () => {
    const port = await pageServer();
    const page = await get(port, '/', `127.0.0.1:${port}`);
    expect(page.status).toBe(200);
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(page.headers['cross-origin-opener-policy']).toBe('same-origin');
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    const script = await get(port, '/assets/chat.js', `127.0.0.1:${port}`);
    expect(script.status).toBe(200);
    expect(script.headers['content-security-policy']).toBeUndefined();
  });

  it('a relative wsUrl: connect-src is the page host as ws/wss, named by a valid Host header, else the wide value', async () => {
    const port = await pageServer({ wsUrl: '/ws' });
    expect(connectSrc((await get(port, '/', `127.0.0.1:${port}`)).headers)).toBe(`'self' ws://127.0.0.1:${port} wss://127.0.0.1:${port}`);
    expect(connectSrc((await get(port, '/', 'Chat.Example.com')).headers)).toBe("'self' ws://Chat.Example.com wss://Chat.Example.com");
    // Not a host a CSP source can name, or not a host at all: nothing of it reaches the header.
    for (const host of ['[::1]:8080', 'evil.com wss://x', 'a.com;script-src *', 'a.com:', 'a..com', 'a.com:123456', 'x'.repeat(300)]) {
      const { status, headers } = await get(port, '/', host);
      expect(status, host).toBe(200);
      expect(connectSrc(headers), host).toBe("'self' ws: wss:");
    }
  });

  it('an absolute wsUrl: connect-src is its origin and the http(s) origin of the history routes, whatever the Host', async () => {
    const secure = await pageServer({ wsUrl: 'wss://gw.example.com/ws' });
    expect(connectSrc((await get(secure, '/', `127.0.0.1:${secure}`)).headers)).toBe('wss://gw.example.com https://gw.example.com');
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    const plain = await pageServer({ wsUrl: 'ws://127.0.0.1:9999/gateway' });
    expect(connectSrc((await get(plain, '/', 'x y')).headers)).toBe('ws://127.0.0.1:9999 http://127.0.0.1:9999');
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    // Protocol-relative: ws: or wss: depends on the page, so the wide value stays.
    const relative = await pageServer({ wsUrl: '//gw.example.com/ws' });
    expect(connectSrc((await get(relative, '/', `127.0.0.1:${relative}`)).headers)).toBe("'self' ws: wss:");
  });
});
