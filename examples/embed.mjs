// A gateway inside your own HTTP server, with an agent of your own.
// Run: AGENTWIRE_JWT_SECRET=<at least 32 bytes> node embed.mjs   (PORT picks the port; default 3000)
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGateway } from 'agentwire';

/** An agent: yields steps for one run and stops when `signal` aborts (cancel, timeout, shutdown). */
const agent = {
  async *run({ text, signal }) {
    yield { type: 'thinking', text: `Reading "${text}"` };
    await sleep(50, undefined, { signal });              // your model call goes here; pass it the signal
    yield { type: 'answer', text: `You said: ${text}` };
  },
};

const gateway = createGateway({ agent, auth: { secret: process.env.AGENTWIRE_JWT_SECRET } });
const server = http.createServer((req, res) => {
  if (gateway.handleRequest(req, res)) return;           // /healthz, /readyz, /metrics
  res.end('my app\n');
});
gateway.attach(server);                                  // WebSocket upgrades on /ws
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`gateway on ws://127.0.0.1:${server.address().port}/ws`);
});
process.on('SIGTERM', () => gateway.shutdown().then(() => process.exit(0)));
