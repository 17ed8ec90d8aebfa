import net from 'node:net';
import type { Redis } from 'ioredis';
import { Waiters } from './waitFor.js';

export type Direction = 'toServer' | 'toClient' | 'both';

/** One proxied TCP connection: the client's socket and ours to the target. */
export class ProxiedConnection {
  stalledToServer = false;
  stalledToClient = false;
  /** Bytes held back (not forwarded) while stalled, per direction. */
  heldToServer: Buffer[] = [];
  heldToClient: Buffer[] = [];
  closed = false;

  constructor(
    readonly client: net.Socket,
    readonly upstream: net.Socket,
  ) {}

  get heldBytesToServer(): number {
    return this.heldToServer.reduce((sum, chunk) => sum + chunk.length, 0);
  }

  get heldBytesToClient(): number {
    return this.heldToClient.reduce((sum, chunk) => sum + chunk.length, 0);
  }
}

/**
 * A TCP proxy on 127.0.0.1 between a client and a server, for tests of what the network does
 * to a client: `reset()` kills the current connections with a TCP RST, `stall()` stops
 * forwarding on them without closing anything (a socket that looks open but is dead, as after
 * a laptop sleeps or the network changes). New connections are forwarded normally unless
 * `stallNew` is set. Every wait is driven by socket events and has a timeout.
 */
export class TcpProxy {
  readonly connections: ProxiedConnection[] = [];
  /** When set, new connections start stalled in both directions (until `unstall()`). */
  stallNew = false;
  #server: net.Server;
  readonly #waiters = new Waiters(() => `accepted=${this.accepted} open=${this.open.length}`);

  /** Only `TcpProxy.start()` constructs one (it waits until the server listens). */
  constructor(
    server: net.Server,
    readonly port: number,
    readonly targetPort: number,
  ) {
    this.#server = server;
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    let proxy: TcpProxy | null = null;
    const server = net.createServer((client) => proxy!.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new TcpProxy(server, (server.address() as net.AddressInfo).port, targetPort);
    return proxy;
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.connections.length;
  }

  /** Connections still open on both sides. */
  get open(): ProxiedConnection[] {
    return this.connections.filter((connection) => !connection.closed);
  }

  /** Stops forwarding on the current connections (in one or both directions), holding the bytes. */
  stall(direction: Direction = 'both'): void {
    for (const connection of this.open) {
      if (direction !== 'toClient') connection.stalledToServer = true;
      if (direction !== 'toServer') connection.stalledToClient = true;
    }
  }

  /** Forwards what was held and resumes forwarding on every open connection. */
  unstall(): void {
    for (const connection of this.open) {
      connection.stalledToServer = false;
      connection.stalledToClient = false;
      for (const chunk of connection.heldToServer.splice(0)) connection.upstream.write(chunk);
      for (const chunk of connection.heldToClient.splice(0)) connection.client.write(chunk);
    }
  }

  /** Resets (TCP RST towards the client, destroy towards the server) every current connection. */
  reset(): void {
    for (const connection of this.open) {
      connection.closed = true;
      connection.heldToServer = [];
      connection.heldToClient = [];
      connection.client.resetAndDestroy();
      connection.upstream.destroy();
    }
    this.#waiters.notify();
  }

  /** Resolves once `predicate` holds; re-checked on every socket event of the proxy. */
  waitFor<T>(check: () => T | undefined | false, timeoutMs = 5000, what = 'proxy condition'): Promise<T> {
    return this.#waiters.until(check, timeoutMs, what);
  }

  waitForAccepted(count: number, timeoutMs = 5000): Promise<ProxiedConnection> {
    return this.waitFor(() => this.connections[count - 1], timeoutMs, `${count} accepted connections`);
  }

  async close(): Promise<void> {
    for (const connection of this.connections) {
      connection.closed = true;
      connection.client.destroy();
      connection.upstream.destroy();
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#waiters.clear();
  }

  #accept(client: net.Socket): void {
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const connection = new ProxiedConnection(client, upstream);
    connection.stalledToServer = this.stallNew;
    connection.stalledToClient = this.stallNew;
    this.connections.push(connection);
    const end = () => {
      if (connection.closed) return;
      connection.closed = true;
      client.destroy();
      upstream.destroy();
      this.#waiters.notify();
    };
    client.on('data', (chunk: Buffer) => {
      if (connection.closed) return;
      if (connection.stalledToServer) connection.heldToServer.push(chunk);
      else upstream.write(chunk);
      this.#waiters.notify();
    });
    upstream.on('data', (chunk: Buffer) => {
      if (connection.closed) return;
      if (connection.stalledToClient) connection.heldToClient.push(chunk);
      else client.write(chunk);
      this.#waiters.notify();
    });
    for (const socket of [client, upstream]) {
      socket.on('error', () => {});
      socket.on('close', end);
      socket.on('end', end);
    }
    this.#waiters.notify();
  }
}

/** The proxied link of a Redis connection's pub/sub client: Redis lists it as subscribed, from the proxy's port. */
export async function pubSubLink(proxy: TcpProxy, admin: Redis): Promise<ProxiedConnection> {
  const clients = String(await admin.client('LIST'));
  const ports = clients
    .split('\n')
    .filter((line) => / (sub|ssub)=[1-9]/.test(line))
    .map((line) => Number(/ addr=[^ ]*:(\d+) /.exec(line)?.[1]));
  const link = proxy.open.find((connection) => ports.includes(connection.upstream.localPort!));
  if (!link) throw new Error(`no subscribed client behind the proxy in:\n${clients}`);
  return link;
}
