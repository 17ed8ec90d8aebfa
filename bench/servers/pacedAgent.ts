/**
 * The upstream agent of the upstream phase: an HTTP server streaming, for every POST, the
 * agentwire dialect's NDJSON `text_delta` steps at one every BENCH_DELTA_MS (default 10: 100
 * deltas/s), `deltas:<n>` of them, like bench/servers/streamingGateway.ts's in-process agent.
 * Its own process, so its CPU is not the gateway's. Run only as a child of bench/upstreamPhase.ts.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BENCH_HOST, serveIpc, usageNow } from '../common.js';

if (!process.send) throw new Error('bench/servers/pacedAgent.ts must be started by bench/upstreamPhase.ts (IPC)');

const deltaMs = Number(process.env.BENCH_DELTA_MS ?? 10);
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const { text } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { text: string };
    const n = Number(/^deltas:(\d{1,5})$/.exec(text)?.[1] ?? 1);
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    let i = 0;
    // One timer per delta (not an interval): the same pacing as the in-process agent's sleeps.
    const next = () => {
      if (res.destroyed) return;
      if (i === n) return void res.end();
      res.write(`${JSON.stringify({ type: 'text_delta', text: `token${i++} ` })}\n`);
      setTimeout(next, deltaMs);
    };
    setTimeout(next, deltaMs);
  });
});
server.listen(0, BENCH_HOST, () => {
  serveIpc({ usage: () => usageNow(0), stop: () => setImmediate(() => process.exit(0)) });
  process.send!({ type: 'listening', port: (server.address() as AddressInfo).port, pid: process.pid });
});
