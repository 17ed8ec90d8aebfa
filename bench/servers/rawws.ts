/**
 * The baseline of the benchmark: a plain `ws` server doing the least a chat push server must
 * do, with the same `ws` settings as the gateway (noServer, no client tracking, 64 KiB max
 * payload, no permessage-deflate, `agentwire.v1` subprotocol selected).
 *
 * - On open it sends one first message shaped like `connection_ready` (no auth, no lifecycle,
 *   no coordinator, no log): the user is read from the `bench_user` query parameter.
 * - On `{"type":"user_message",...,"text":"steps:<n>"}` it answers an `ack` and pushes the same
 *   number of event frames the gateway would (agent_started, n × agent_thinking,
 *   agent_completed), each with a per-user `seq` and `ts`, to every socket of that user,
 *   synchronously (no log, no retention, no per-run bookkeeping). On `deltas:<n>` it pushes
 *   the frames the gateway would send for that run, made as the bench agent makes them (one
 *   stamped fragment per tick).
 *
 * Run only as a child of bench/run.ts (IPC channel required), with --expose-gc.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { PROTOCOL_NAME } from '@agentwire/protocol';
import { WebSocketServer, type WebSocket } from 'ws';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BENCH_HOST, fragmentText, fullGc, parseWorkload, serveIpc, usageNow } from '../common.js';

if (!process.send) throw new Error('bench/servers/rawws.ts must be started by bench/run.ts (IPC)');

interface UserState {
  seq: number;
  readonly sockets: Set<WebSocket>;
}

const users = new Map<string, UserState>();
let connections = 0;

const wss = new WebSocketServer({
  noServer: true,
  clientTracking: false,
  maxPayload: 64 * 1024,
  perMessageDeflate: false,
  handleProtocols: (offered) => (offered.has(PROTOCOL_NAME) ? PROTOCOL_NAME : false),
});

const server = createServer((_req, res) => {
  res.writeHead(404, { 'Content-Type': 'application/json' });
  res.end('{"detail":"not found"}');
});

server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
  const [path, query = ''] = (req.url ?? '/').split('?', 2);
  if (path !== '/ws') {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  const userId = new URLSearchParams(query).get('bench_user') ?? 'anonymous';
  wss.handleUpgrade(req, socket, head, (ws) => onOpen(ws, userId));
});

function onOpen(ws: WebSocket, userId: string): void {
  connections++;
  let user = users.get(userId);
  if (!user) {
    user = { seq: 0, sockets: new Set() };
    users.set(userId, user);
  }
  const state = user;
  state.sockets.add(ws);
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame: { type?: unknown; id?: unknown; thread_id?: unknown; text?: unknown };
    try {
      frame = JSON.parse((data as Buffer).toString()) as typeof frame;
    } catch {
      return;
    }
    if (frame.type !== 'user_message' || typeof frame.text !== 'string') return;
    const runId = `run_${randomUUID()}`;
    const threadId = String(frame.thread_id);
    ws.send(JSON.stringify({ type: 'ack', id: frame.id, run_id: runId, thread_id: threadId, status: 'started' }));
    const workload = parseWorkload(frame.text);
    push(state, { type: 'agent_started', run_id: runId, thread_id: threadId, message_id: frame.id, text: frame.text });
    if (workload.kind === 'deltas') return void pushDeltas(state, runId, threadId, workload.n);
    for (let i = 1; i <= workload.n; i++) {
      push(state, { type: 'agent_thinking', run_id: runId, thread_id: threadId, text: `thinking step ${i} of ${workload.n}` });
    }
    push(state, { type: 'agent_completed', run_id: runId, thread_id: threadId, status: 'completed', text: `done after ${workload.n} steps` });
  });
  ws.on('close', () => {
    connections--;
    state.sockets.delete(ws);
    if (state.sockets.size === 0 && users.get(userId) === state) users.delete(userId);
  });
  ws.on('error', () => {});
  ws.send(
    JSON.stringify({
      type: 'connection_ready',
      protocol: PROTOCOL_NAME,
      connection_id: randomUUID(),
      user_id: userId,
      epoch: 'raw',
      last_seq: state.seq,
      resumed: false,
      replayed: 0,
      heartbeat_ms: 25_000,
      server_time: new Date().toISOString(),
    }),
  );
}

/**
 * The frames the gateway sends for a `deltas:<n>` run, made as its agent makes them: one stamped
 * fragment per tick, alternating text and thinking, then agent_completed with the text fragments.
 */
async function pushDeltas(user: UserState, runId: string, threadId: string, n: number): Promise<void> {
  let answer = '';
  for (let i = 0; i < n; i++) {
    await nextTurn();
    const text = fragmentText();
    if (i % 2 === 0) answer += text;
    push(user, { type: i % 2 === 0 ? 'agent_text_delta' : 'agent_thinking_delta', run_id: runId, thread_id: threadId, text });
  }
  push(user, { type: 'agent_completed', run_id: runId, thread_id: threadId, status: 'completed', text: answer });
}

function push(user: UserState, event: { type: string } & Record<string, unknown>): void {
  const { type, ...rest } = event;
  const json = JSON.stringify({ type, seq: ++user.seq, ...rest, ts: new Date().toISOString() });
  for (const socket of user.sockets) socket.send(json);
}

await new Promise<void>((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, BENCH_HOST, () => resolve());
});
const { port } = server.address() as AddressInfo;

serveIpc({
  usage: () => usageNow(connections),
  gc: async () => {
    await fullGc();
    return usageNow(connections);
  },
  stop: async () => {
    wss.close();
    server.close();
    server.closeAllConnections();
    setImmediate(() => process.exit(0));
  },
});

process.send({ type: 'listening', port, pid: process.pid });
