import { signToken } from '../../src/auth/index.js';
import { ChildTracker, type Child } from './childProcess.js';
import { RedisServer } from './redisServer.js';
import { TestClient, type ConnectOptions } from './wsClient.js';

export const CLUSTER_SECRET = 'cluster-test-secret-0123456789abcdef0123456789';

export interface GatewayNode {
  readonly name: string;
  readonly child: Child;
  readonly port: number;
  /** ws://127.0.0.1:<port>/ws */
  readonly url: string;
  readonly httpUrl: string;
}

export interface ClusterOptions {
  /** Extra env for every node (e.g. AGENTWIRE_DEMO_STEP_MS). */
  env?: Record<string, string>;
}

/**
 * A test cluster: a redis-server of its own on a free port and gateway nodes as child processes
 * of `agentwire serve` (PORT=0), with short run leases so lost runs are found quickly. `stop()`
 * kills every process it started by pid.
 */
export class TestCluster {
  readonly #children = new ChildTracker();
  readonly nodes: GatewayNode[] = [];
  readonly clients: TestClient[] = [];

  readonly #options: ClusterOptions;

  /** Only `TestCluster.start()` constructs one (it waits until the server listens). */
  constructor(
    readonly redis: RedisServer,
    options: ClusterOptions,
  ) {
    this.#options = options;
  }

  static async start(nodeCount: number, options: ClusterOptions = {}): Promise<TestCluster> {
    const cluster = new TestCluster(await RedisServer.start(), options);
    await Promise.all(Array.from({ length: nodeCount }, (_, i) => cluster.startNode(`n${i + 1}`)));
    return cluster;
  }

  /** Starts a node and resolves once it listens and its /readyz is 200. */
  async startNode(name: string, env: Record<string, string> = {}): Promise<GatewayNode> {
    const child = this.#children.spawn(['serve'], {
      PORT: '0',
      AGENTWIRE_JWT_SECRET: CLUSTER_SECRET,
      AGENTWIRE_REDIS_URL: this.redis.url,
      AGENTWIRE_NODE_ID: name,
      AGENTWIRE_LOG_LEVEL: 'warn',
      AGENTWIRE_RUN_LEASE_MS: '1500',
      AGENTWIRE_RUN_SWEEP_MS: '250',
      AGENTWIRE_DEMO_STEP_MS: '5',
      AGENTWIRE_MAX_CONNECTIONS_PER_USER: '1000',
      AGENTWIRE_RATE_LIMIT_PER_SEC: '1000',
      AGENTWIRE_RATE_LIMIT_BURST: '1000',
      ...this.#options.env,
      ...env,
    });
    const match = await child.waitForStdout(/agentwire listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws/);
    const port = Number(match[1]);
    const node: GatewayNode = { name, child, port, url: `ws://127.0.0.1:${port}/ws`, httpUrl: `http://127.0.0.1:${port}` };
    await waitReady(node);
    this.nodes.push(node);
    return node;
  }

  token(userId: string, ttlSec = 600): Promise<string> {
    return signToken(CLUSTER_SECRET, { sub: userId, ttlSec }).then((t) => t.token);
  }

  async connect(node: GatewayNode, userId: string, options: ConnectOptions = {}): Promise<TestClient> {
    const client = new TestClient(node.url, { token: await this.token(userId), ...options });
    this.clients.push(client);
    return client;
  }

  async ready(node: GatewayNode, userId: string, options: ConnectOptions = {}): Promise<TestClient> {
    const client = await this.connect(node, userId, options);
    await client.ready(15_000);
    return client;
  }

  async stop(): Promise<void> {
    for (const client of this.clients) client.close();
    await this.#children.killAll();
    await this.redis.stop();
  }
}

/** Polls /readyz (an HTTP probe, as a load balancer would) until 200, within a deadline. */
export async function waitReady(node: { httpUrl: string }, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const response = await fetch(`${node.httpUrl}/readyz`);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${node.httpUrl} not ready within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
