import type { Server } from 'node:http';
import { signToken } from '../../src/auth/index.js';
import { createGateway, type Gateway, type GatewayOptions } from '../../src/transport/index.js';
import type { ManualClock } from './manualClock.js';
import { TestClient, type ConnectOptions } from './wsClient.js';

export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

export interface TestGateway {
  gateway: Gateway;
  /** The HTTP server the gateway listens on. */
  server: Server;
  url: string;
  port: number;
  token(userId: string, ttlSec?: number): Promise<string>;
  /** Connects as `userId` (token via subprotocol unless `options.via` says otherwise). */
  connect(userId: string, options?: ConnectOptions): Promise<TestClient>;
  /** Connects and waits for connection_ready. */
  ready(userId: string, options?: ConnectOptions): Promise<TestClient>;
  clients: TestClient[];
  stop(): Promise<void>;
}

/**
 * A gateway on 127.0.0.1 and a random port, with HS256 auth and a fast demo agent. Streamed
 * fragments are not held (flush window 0), so on a manual clock each demo event appears at the
 * step that produced it; merging has its own tests (deltaCoalescer, streamResume).
 */
export async function startGateway(options: Partial<GatewayOptions> = {}): Promise<TestGateway> {
  const gateway = createGateway({ auth: { secret: TEST_SECRET }, demoStepMs: 1, streamFlushMs: 0, ...options });
  const { server, port, url } = await gateway.listen(0, '127.0.0.1');
  const clients: TestClient[] = [];
  const token = async (userId: string, ttlSec = 600) => (await signToken(TEST_SECRET, { sub: userId, ttlSec })).token;
  const connect = async (userId: string, connectOptions: ConnectOptions = {}) => {
    const client = new TestClient(url, { token: await token(userId), ...connectOptions });
    clients.push(client);
    return client;
  };
  return {
    gateway,
    server,
    url,
    port,
    token,
    connect,
    clients,
    async ready(userId, connectOptions) {
      const client = await connect(userId, connectOptions);
      await client.ready();
      return client;
    },
    async stop() {
      for (const client of clients) client.close();
      await gateway.shutdown();
    },
  };
}

/**
 * Stops a gateway that may run on a manual clock: while the stop is pending, advances `clock`
 * by `stepMs` (at most `maxSteps` times), so that a drain held by a run left live by a failed
 * test can end. Without a clock it just stops.
 */
export async function stopAdvancing(env: Pick<TestGateway, 'stop'>, clock: ManualClock | undefined, stepMs: number, maxSteps: number): Promise<void> {
  let stopped = false;
  const stopping = env.stop().finally(() => {
    stopped = true;
  });
  for (let i = 0; clock && !stopped && i < maxSteps; i++) await clock.advance(stepMs);
  await stopping;
}
