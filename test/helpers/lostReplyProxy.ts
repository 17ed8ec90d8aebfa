import net from 'node:net';

/**
 * A TCP proxy in front of a redis-server that loses one reply, once armed with
 * `loseReplyTo(request, reply)`: the first request chunk matching `request` is forwarded (Redis
 * executes it), then replies on that connection are held until they match `reply`, and the
 * connection is cut instead of delivering them. The client sees a command whose reply was lost
 * with its link after Redis applied it (ioredis then re-sends it on reconnect).
 * (test/clusterRecovery.test.ts has a fuller RedisProxy with the same `loseReplyTo`.)
 */
export class LostReplyProxy {
  cuts = 0;
  #lose: { request: RegExp; reply: RegExp } | null = null;
  readonly #sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<LostReplyProxy> {
    let proxy: LostReplyProxy | null = null;
    const server = net.createServer((client) => proxy!.#accept(client, targetPort));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new LostReplyProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  loseReplyTo(request: RegExp, reply: RegExp): void {
    this.#lose = { request, reply };
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  #accept(client: net.Socket, targetPort: number): void {
    const upstream = net.connect(targetPort, '127.0.0.1');
    let heldReplies: Buffer | null = null;
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk);
      if (heldReplies === null && this.#lose?.request.test(chunk.toString('latin1'))) heldReplies = Buffer.alloc(0);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (heldReplies === null) return void client.write(chunk);
      heldReplies = Buffer.concat([heldReplies, chunk]);
      if (!this.#lose!.reply.test(heldReplies.toString('latin1'))) return;
      // Redis executed the request and answered; the answer is lost with the connection.
      this.#lose = null;
      this.cuts++;
      client.destroy();
      upstream.destroy();
    });
  }
}
