import type { IncomingMessage, ServerResponse } from 'node:http';

// Request bodies and JSON answers of the HTTP routes.

/** Largest request body a route reads. */
export const MAX_BODY_BYTES = 4096;
/**
 * An oversized body is read and thrown away up to this many bytes so that the client, which is
 * still sending, is not reset before it can read the 413; beyond it the connection is closed.
 */
const MAX_DISCARDED_BYTES = 1024 * 1024;

export type Body =
  | { readonly kind: 'ok'; readonly text: string }
  /** `close`: the body passed MAX_DISCARDED_BYTES and was not read to its end. */
  | { readonly kind: 'too_large'; readonly close: boolean };

/**
 * Reads a body of at most MAX_BODY_BYTES. A longer one is read to its end and discarded (so the
 * 413 reaches a client that is still sending), up to MAX_DISCARDED_BYTES; past that, or when the
 * declared length is already past it, the request stops being read and the connection closes
 * after the answer.
 */
export function readBody(req: IncomingMessage): Promise<Body> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > MAX_DISCARDED_BYTES) return resolve({ kind: 'too_large', close: true });
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_DISCARDED_BYTES) {
        req.off('data', onData);
        req.pause();
        resolve({ kind: 'too_large', close: true });
      } else if (size <= MAX_BODY_BYTES) {
        chunks.push(chunk);
      }
    };
    req.on('data', onData);
    req.on('end', () => resolve(size > MAX_BODY_BYTES ? { kind: 'too_large', close: false } : { kind: 'ok', text: Buffer.concat(chunks).toString('utf8') }));
    req.on('error', reject);
  });
}

/**
 * Throws away the body of a request answered without reading it (401, 405, 429…), up to
 * MAX_DISCARDED_BYTES so that a client still sending can read the answer; a longer body (or one
 * declared longer) closes the connection instead of being read for as long as a client sends.
 * A body already being read (readBody) is left to its reader.
 */
export function discardBody(req: IncomingMessage, res: ServerResponse): void {
  if (req.readableFlowing !== null) return;
  if (Number(req.headers['content-length']) > MAX_DISCARDED_BYTES) {
    if (!res.headersSent) res.setHeader('Connection', 'close');
    return;
  }
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > MAX_DISCARDED_BYTES) req.socket.destroy();
  });
  req.resume();
}

/**
 * Serializes before the status line goes out: a body that cannot be written throws with the
 * answer still open. `nosniff`: the JSON holds text of users and agents, never to be read as HTML.
 */
export function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...headers });
  res.end(text);
}
