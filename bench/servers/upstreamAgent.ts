/**
 * The upstream HTTP agent of the upstream phase: for every POST (agentwire dialect, PROTOCOL.md
 * section 15) it runs the bench agent (bench/agent.ts) on the request's `text` and streams its
 * steps as NDJSON lines as they come, so the gateway's createHttpAgent sees the same steps at the
 * same pace as the in-process agent. Its own process, so its CPU is not the gateway's.
 * Run only as a child of bench/run.ts (IPC channel required).
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { benchAgent } from '../agent.js';
import { BENCH_HOST, serveIpc, usageNow } from '../common.js';

if (!process.send) throw new Error('bench/servers/upstreamAgent.ts must be started by bench/run.ts (IPC)');

/** Request bodies are the gateway's, but bounded all the same. */
const MAX_BODY_BYTES = 1024 * 1024;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  let bytes = 0;
  req.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > MAX_BODY_BYTES) return void req.destroy();
    chunks.push(chunk);
  });
  req.on('end', () => void answer(Buffer.concat(chunks).toString('utf8'), res));
});

async function answer(body: string, res: ServerResponse): Promise<void> {
  const controller = new AbortController();
  res.on('close', () => controller.abort());
  let request: { text?: unknown; run_id?: unknown; thread_id?: unknown; user_id?: unknown; message_id?: unknown };
  try {
    request = JSON.parse(body) as typeof request;
  } catch {
    return void res.writeHead(400).end();
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  try {
    const steps = benchAgent.run({
      runId: String(request.run_id),
      userId: String(request.user_id),
      threadId: String(request.thread_id),
      messageId: String(request.message_id),
      text: String(request.text),
      history: [],
      signal: controller.signal,
    });
    for await (const step of steps) res.write(`${JSON.stringify(step)}\n`);
  } catch {
    // aborted: the gateway went away
  }
  res.end();
}

server.listen(0, BENCH_HOST, () => {
  serveIpc({
    usage: () => usageNow(0),
    stop: () => {
      server.closeAllConnections();
      server.close();
      setImmediate(() => process.exit(0));
    },
  });
  process.send!({ type: 'listening', port: (server.address() as AddressInfo).port, pid: process.pid });
});
