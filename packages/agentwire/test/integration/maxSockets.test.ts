/**
 * AGENTWIRE_MAX_SOCKETS: the gateway's server holds at most that many TCP connections, idle HTTP
 * sockets and WebSockets alike, so idle connections cannot take every file descriptor of the
 * process. One more is closed as it is accepted (and counted); once one closes, a new one is
 * accepted, and the sessions already open go on.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, TEST_SECRET, type TestGateway } from '../helpers/gateway.js';
import { startRun, TestClient } from '../helpers/wsClient.js';
import { createGateway } from '../../src/transport/index.js';
import { signToken } from '../../src/auth/index.js';
import { ManualClock } from '../helpers/manualClock.js';

let env: TestGateway | undefined;
const sockets: Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await env?.stop();
  env = undefined;
});

/** A TCP connection that sends nothing, once connected. */
async function idleSocket(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  sockets.push(socket);
  await once(socket, 'connect');
  return socket;
}

/** The server's end of each accepted socket, by the client's port. */
function serverEnds(server: Server): Map<number, Socket> {
  const ends = new Map<number, Socket>();
  server.on('connection', (socket: Socket) => ends.set(socket.remotePort!, socket));
  return ends;
}

interface LogLine {
  readonly msg: string;
  readonly refused?: number;
  readonly limit?: number;
}

/** A pino logger whose lines the test reads. */
function logSink(): { lines: LogLine[]; logger: Logger } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as LogLine);
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, sink) };
}

const atTheLimit = (lines: readonly LogLine[]) => lines.filter((line) => line.msg.startsWith('open sockets at the limit'));

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

const refused = async (gateway: TestGateway['gateway']) => (await gateway.metrics.socketsRefused.get()).values[0]?.value ?? 0;

describe('AGENTWIRE_MAX_SOCKETS', () => {
  it('refuses the connection past the cap, accepts one again after a close, and open sessions go on', async () => {
    env = await startGateway({ maxSockets: 5 });
    const ends = serverEnds(env.server);
    const sessions = await Promise.all([env.ready('alice'), env.ready('alice'), env.ready('bob')]);
    const idle = [await idleSocket(env.port), await idleSocket(env.port)];

    // The 6th: a WebSocket and a plain socket are both closed without a byte.
    const sixth = await env.connect('carol');
    await expect(sixth.opened).rejects.toThrow();
    const plain = await idleSocket(env.port);
    const received: Buffer[] = [];
    plain.on('data', (chunk: Buffer) => received.push(chunk));
    await once(plain, 'close');
    expect(received).toEqual([]);
    expect(await refused(env.gateway)).toBe(2);

    // An idle socket goes: once the server has let go of it, a new session is accepted.
    const freed = ends.get(idle[0]!.localPort!)!;
    idle[0]!.destroy();
    if (!freed.destroyed) await once(freed, 'close');
    const carol = await env.ready('carol');

    // The sessions opened before the refusals, and the new one, work as before.
    for (const client of [...sessions, carol]) {
      const runId = await startRun(client, 'hello');
      expect((await client.runEvents(runId)).at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
    }
    expect(sessions.every((client) => client.closeCode === null)).toBe(true);
    expect(await refused(env.gateway)).toBe(2);
  });

  it('caps a server the gateway is attached to, unless it has a cap of its own', async () => {
    const gateway = createGateway({ auth: { secret: TEST_SECRET }, demoStepMs: 1, maxSockets: 2 });
    const own = createServer();
    own.maxConnections = 7;
    // No cap, on purpose: the application's choice stands too.
    const uncapped = createServer();
    uncapped.maxConnections = Number.POSITIVE_INFINITY;
    const mine = createServer((req, res) => gateway.handleRequest(req, res) || res.end('app\n'));
    gateway.attach(own);
    gateway.attach(uncapped);
    gateway.attach(mine);
    expect(own.maxConnections).toBe(7);
    expect(uncapped.maxConnections).toBe(Number.POSITIVE_INFINITY);
    expect(mine.maxConnections).toBe(2);
    await new Promise<void>((resolve) => mine.listen(0, '127.0.0.1', resolve));
    await gateway.ready();
    const port = (mine.address() as { port: number }).port;
    try {
      const token = (await signToken(TEST_SECRET, { sub: 'dave', ttlSec: 600 })).token;
      const session = new TestClient(`ws://127.0.0.1:${port}/ws`, { token });
      await session.ready();
      await idleSocket(port);
      const third = await idleSocket(port);
      await once(third, 'close');
      expect((await gateway.metrics.socketsRefused.get()).values[0]?.value).toBe(1);
      session.close();
    } finally {
      for (const socket of sockets.splice(0)) socket.destroy();
      await gateway.shutdown();
    }
  });

  it('says so in the log at most once a minute, with the count, also when churn at the cap accepts one and refuses the next', async () => {
    const { lines, logger } = logSink();
    const clock = new ManualClock(Date.now());
    const gateway = createGateway({ auth: { secret: TEST_SECRET }, maxSockets: 1, clock, logger });
    const server = createServer((req, res) => gateway.handleRequest(req, res) || res.end());
    gateway.attach(server);
    const ends = serverEnds(server);
    const port = await listen(server);
    const warnings = () => atTheLimit(lines);
    /** One client holds the only socket, a second is refused, then the first leaves. */
    const churn = async () => {
      const held = await idleSocket(port);
      const extra = await idleSocket(port);
      await once(extra, 'close');
      const end = ends.get(held.localPort!)!;
      held.destroy();
      if (!end.destroyed) await once(end, 'close');
    };
    try {
      for (let i = 0; i < 10; i++) await churn();
      expect(warnings()).toHaveLength(1);
      expect(warnings()[0]!.refused).toBe(1);
      await clock.advance(60_000);
      await churn();
      expect(warnings()).toHaveLength(2);
      expect(warnings()[1]!.refused).toBe(10);
      expect((await gateway.metrics.socketsRefused.get()).values[0]?.value).toBe(11);
    } finally {
      for (const socket of sockets.splice(0)) socket.destroy();
      server.close();
      await gateway.shutdown();
    }
  });
  it('logs each attached server at its own cap, with its own limit and count', async () => {
    const { lines, logger } = logSink();
    const gateway = createGateway({ auth: { secret: TEST_SECRET }, logger });
    const servers = [1, 2].map((cap) => {
      const server = createServer((req, res) => gateway.handleRequest(req, res) || res.end());
      server.maxConnections = cap;
      gateway.attach(server);
      return server;
    });
    try {
      const [small, large] = await Promise.all(servers.map(listen));
      await idleSocket(small!);
      await once(await idleSocket(small!), 'close');
      await idleSocket(large!);
      await idleSocket(large!);
      await once(await idleSocket(large!), 'close');
      // One server's warning of the minute used to silence the other's, and named its own limit.
      expect(atTheLimit(lines).map(({ limit, refused }) => ({ limit, refused }))).toEqual([
        { limit: 1, refused: 1 },
        { limit: 2, refused: 1 },
      ]);
    } finally {
      for (const socket of sockets.splice(0)) socket.destroy();
      for (const server of servers) server.close();
      await gateway.shutdown();
    }
  });
});
