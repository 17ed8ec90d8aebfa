import net from 'node:net';
import { Waiters } from './waitFor.js';

const noop = () => {};

export interface ProxiedRedisConnection {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  /** Requests held back (not forwarded) since a request matched `holdRequestsFrom`. */
  held: Buffer[] | null;
  /** Replies held back since the request matching `loseReplyTo` was forwarded. */
  heldReplies: Buffer | null;
}

/**
 * A TCP proxy in front of a test's redis-server that can do two things a network does to a
 * Redis client, each exactly once when armed:
 * - `holdRequestsFrom(pattern)`: the first request chunk matching it, and everything after it on
 *   that connection, is held (Redis does not see it) until `release()`;
 * - `loseReplyTo(pattern, reply)`: the first request matching it is forwarded (Redis executes it),
 *   but its reply, once it matches `reply`, is never delivered: the connection is cut instead
 *   (the client sees a command whose reply was lost after Redis applied it; ioredis re-sends it).
 * It can also refuse new connections (`refuse`/`acceptAgain`) and cut one (`cut`).
 */
export class RedisProxy {
  readonly connections: ProxiedRedisConnection[] = [];
  cuts = 0;
  #holdPattern: RegExp | null = null;
  #losePattern: { request: RegExp; reply: RegExp } | null = null;
  readonly #waiters = new Waiters();

  /** Only `RedisProxy.start()` constructs one (it waits until the server listens). */
  constructor(
    public server: net.Server | null,
    readonly port: number,
    readonly targetPort: number,
  ) {}

  static async start(targetPort: number): Promise<RedisProxy> {
    const proxy = new RedisProxy(null, 0, targetPort);
    await proxy.#listen(0);
    return proxy;
  }

  async #listen(port: number): Promise<void> {
    const server = net.createServer((client) => this.#accept(client));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    this.server = server;
    (this as { port: number }).port = (server.address() as net.AddressInfo).port;
  }

  /** New connections are refused (ECONNREFUSED), as when Redis is down; open ones stay. */
  async refuse(): Promise<void> {
    const server = this.server!;
    this.server = null;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // close() waits for the open connections; the port is free as soon as it is called.
      setImmediate(resolve);
    });
  }

  /** Accepts connections again, on the same port. */
  acceptAgain(): Promise<void> {
    return this.#listen(this.port);
  }

  /** Cuts one connection (both sides), like a network failure. */
  cut(connection: ProxiedRedisConnection): void {
    connection.held = null;
    connection.client.destroy();
    connection.upstream.destroy();
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  holdRequestsFrom(pattern: RegExp): void {
    this.#holdPattern = pattern;
  }

  loseReplyTo(request: RegExp, reply: RegExp): void {
    this.#losePattern = { request, reply };
  }

  /** The connection whose requests are held, once there is one. */
  holding(): ProxiedRedisConnection | undefined {
    return this.connections.find((c) => c.held !== null);
  }

  release(): void {
    for (const connection of this.connections) {
      const held = connection.held;
      connection.held = null;
      for (const chunk of held ?? []) connection.upstream.write(chunk);
    }
  }

  async until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    await this.#waiters.until(check, timeoutMs, what);
  }

  async close(): Promise<void> {
    for (const connection of this.connections) {
      connection.client.destroy();
      connection.upstream.destroy();
    }
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(client: net.Socket): void {
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const connection: ProxiedRedisConnection = { client, upstream, held: null, heldReplies: null };
    this.connections.push(connection);
    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      if (connection.held === null && this.#holdPattern?.test(text)) {
        this.#holdPattern = null;
        connection.held = [];
      }
      if (connection.held !== null) {
        connection.held.push(chunk);
        return this.#waiters.notify();
      }
      upstream.write(chunk);
      if (connection.heldReplies === null && this.#losePattern?.request.test(text)) connection.heldReplies = Buffer.alloc(0);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (connection.heldReplies === null) return void client.write(chunk);
      connection.heldReplies = Buffer.concat([connection.heldReplies, chunk]);
      if (!this.#losePattern!.reply.test(connection.heldReplies.toString('latin1'))) return;
      // Redis executed the request and answered; the answer is lost with the connection.
      this.#losePattern = null;
      this.cuts++;
      client.destroy();
      upstream.destroy();
      this.#waiters.notify();
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', noop);
      socket.on('close', end);
    }
  }
}
