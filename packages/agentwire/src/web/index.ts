import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { chatPageScriptPath, renderChatPageHtml, type ChatPageConfig } from '@agentwire/chat-page';
import { requestPath } from '../http/requestPath.js';

/**
 * The browser chat page: one HTML document and one script (@agentwire/chat-page). The gateway serves it with `chatPage` in its
 * options; an embedding application can mount `createChatPageHandler` on its own server.
 */
export interface ChatPageOptions {
  /** Where the page is served. Default `/`; the script is at `<path>/assets/chat.js`. */
  path?: string;
  /**
   * The gateway's WebSocket URL as the browser should dial it: absolute (`wss://…`) or a path
   * on the page's host (`/ws`, the default). `ws:`/`wss:` follows the page's `http:`/`https:`.
   */
  wsUrl?: string;
  /**
   * A token to put into the page, or a function that makes one per page request (null: none).
   * Whoever can load the page then acts as that user, so use it only in dev mode or behind
   * your own authentication. The page takes a `?token=` from its URL (and removes it from the
   * address bar), else the token its tab kept (sessionStorage), else this one, else asks. A URL
   * token waits until the user accepts it, unless it is of the tab's user (or this one's).
   */
  token?: string | ((req: IncomingMessage) => string | null | undefined | Promise<string | null | undefined>);
  /** The page's title and heading. Default `agentwire chat`. */
  title?: string;
}

/** Serves the page or its script and returns true, or returns false for any other request. */
export type ChatPageHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

interface PageScript {
  readonly code: string;
  readonly etag: string;
}

let pageScript: Promise<PageScript> | null = null;

/** The built page script, read once per process and kept in memory. A failed read is not kept. */
function loadPageScript(): Promise<PageScript> {
  pageScript ??= readFile(chatPageScriptPath, 'utf8').then(
    (code) => ({ code, etag: `"${createHash('sha256').update(code).digest('base64url').slice(0, 27)}"` }),
    (error: unknown) => {
      pageScript = null;
      throw new Error(`${(error as Error).message} (the build makes it: \`npm run build\`)`);
    },
  );
  return pageScript;
}

/**
 * A request handler for the page and its script. Returns false for any other request (and for
 * methods other than GET and HEAD) so it composes with other routes, like the gateway's own.
 */
export function createChatPageHandler(options: ChatPageOptions = {}): ChatPageHandler {
  const base = normalizePath(options.path ?? '/');
  const pagePaths = new Set(base === '/' ? ['/', '/index.html'] : [base, `${base}/`]);
  const scriptPath = `${base === '/' ? '' : base}/assets/chat.js`;
  const wsUrl = options.wsUrl ?? '/ws';
  const title = options.title ?? 'agentwire chat';
  const tokenOption = options.token;
  // Read the script now so that the first page load does not wait for it.
  loadPageScript().catch(() => {});

  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const path = requestPath(req);
    if (path === scriptPath) {
      loadPageScript().then(
        ({ code, etag }) => {
          if (req.headers['if-none-match'] === etag) {
            res.writeHead(304, { ETag: etag, 'Cache-Control': 'no-cache' });
            return res.end();
          }
          send(res, req, 200, 'text/javascript; charset=utf-8', code, { ETag: etag, 'Cache-Control': 'no-cache' });
        },
        (error: unknown) => {
          const message = error instanceof Error ? error.message : String(error);
          send(res, req, 500, 'text/plain; charset=utf-8', `could not load the chat page script: ${message}\n`);
        },
      );
      return true;
    }
    if (!pagePaths.has(path)) return false;
    Promise.resolve(typeof tokenOption === 'function' ? tokenOption(req) : tokenOption).then(
      (token) => {
        const config: ChatPageConfig = { wsUrl, token: token ?? null };
        send(res, req, 200, 'text/html; charset=utf-8', renderChatPageHtml(config, scriptPath, title), {
          // The page may carry a token: never cache it.
          'Cache-Control': 'no-store',
          'Content-Security-Policy':
            `default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src ${connectSources(wsUrl, req.headers.host)}; ` +
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
          'Referrer-Policy': 'no-referrer',
          // frame-ancestors for browsers without CSP level 2.
          'X-Frame-Options': 'DENY',
          // No window the page opens or that opened it keeps a handle on it.
          'Cross-Origin-Opener-Policy': 'same-origin',
        });
      },
      (error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        send(res, req, 500, 'text/plain; charset=utf-8', `could not make a token for the chat page: ${message}\n`);
      },
    );
    return true;
  };
}

/** connect-src when the page's host is unknown: any WebSocket. */
const ANY_WEBSOCKET = "'self' ws: wss:";
/** A host[:port] that a CSP host-source can name (no IPv6 literal: its grammar has none). */
const CSP_HOST = /^[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::\d{1,5})?$/i;
/** Stands for the page's own origin when resolving a relative wsUrl (.invalid is reserved, RFC 2606). */
const PAGE_ORIGIN = 'http://page.invalid';

/**
 * What the page connects to (CSP connect-src). A relative wsUrl: the page's own host as ws: and
 * wss: (the page follows its own http:/https:, which behind a TLS proxy this server cannot see),
 * named by the request's Host header only if that is a plain host[:port]; 'self' stays, as it
 * covers the history routes and, in CSP 3 browsers, the page's own ws/wss even when a proxy
 * rewrote Host. An absolute wsUrl: its origin and the http(s) origin of the history routes,
 * which the client derives from it. Anything else keeps the wide value.
 */
function connectSources(wsUrl: string, host: string | undefined): string {
  let target: URL;
  try {
    target = new URL(wsUrl, PAGE_ORIGIN);
  } catch {
    return ANY_WEBSOCKET;
  }
  if (target.origin === PAGE_ORIGIN) {
    return host !== undefined && host.length <= 260 && CSP_HOST.test(host) ? `'self' ws://${host} wss://${host}` : ANY_WEBSOCKET;
  }
  // Protocol-relative (ws: or wss: depends on the page), or a host CSP cannot name.
  if (!/^[a-z][a-z0-9+.-]*:/i.test(wsUrl) || !CSP_HOST.test(target.host)) return ANY_WEBSOCKET;
  if (target.protocol === 'ws:' || target.protocol === 'http:') return `ws://${target.host} http://${target.host}`;
  if (target.protocol === 'wss:' || target.protocol === 'https:') return `wss://${target.host} https://${target.host}`;
  return ANY_WEBSOCKET;
}

function normalizePath(path: string): string {
  const withSlash = path.startsWith('/') ? path : `/${path}`;
  return withSlash.length > 1 ? withSlash.replace(/\/+$/, '') || '/' : withSlash;
}

function send(res: ServerResponse, req: IncomingMessage, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(body, 'utf8');
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': String(bytes.length),
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}
