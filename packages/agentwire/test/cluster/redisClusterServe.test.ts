import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../../src/auth/index.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { CLUSTER_SECRET, waitReady, type GatewayNode } from '../helpers/cluster.js';
import { RedisClusterServer } from '../helpers/redisCluster.js';
import { isTerminal } from '../helpers/runInvariants.js';
import { seqProblem, TestClient, type ConnectOptions, type Frame } from '../helpers/wsClient.js';

/**
 * `agentwire serve` processes (the built bin, as deployed) on a real 3-master Redis Cluster,
 * selected by AGENTWIRE_REDIS_CLUSTER_NODES: a demo run end to end, a gateway node killed
 * mid-run (its run ends once with run_lost on another node, its clients resume there), and the
 * per-user run cap and message-id idempotency across gateway nodes. The Redis Cluster is shared
 * by the file; each test has users of its own and gateway nodes of its own.
 */

const LEASE_MS = 1500;
const SWEEP_MS = 250;

let redisCluster: RedisClusterServer;
beforeAll(async () => {
  redisCluster = await RedisClusterServer.start();
}, 60_000);
afterAll(async () => {
  await redisCluster?.stop();
});

const children = new ChildTracker();
const clients: TestClient[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await children.killAll();
});

/** Starts `agentwire serve` on the Redis Cluster; resolves once its /readyz is 200. */
async function startNode(name: string, env: Record<string, string> = {}): Promise<GatewayNode> {
  const child = children.spawn(['serve'], {
    PORT: '0',
    AGENTWIRE_JWT_SECRET: CLUSTER_SECRET,
    // One node of the three is enough: the client discovers the rest.
    AGENTWIRE_REDIS_CLUSTER_NODES: redisCluster.ports.map((port) => `127.0.0.1:${port}`).join(','),
    AGENTWIRE_NODE_ID: name,
    AGENTWIRE_LOG_LEVEL: 'warn',
    AGENTWIRE_RUN_LEASE_MS: String(LEASE_MS),
    AGENTWIRE_RUN_SWEEP_MS: String(SWEEP_MS),
    AGENTWIRE_DEMO_STEP_MS: '5',
    ...env,
  });
  const match = await child.waitForStdout(/agentwire listening on ws:\/\/127\.0\.0\.1:(\d+)\/ws/);
  const port = Number(match[1]);
  const node: GatewayNode = { name, child, port, url: `ws://127.0.0.1:${port}/ws`, httpUrl: `http://127.0.0.1:${port}` };
  await waitReady(node);
  return node;
}

async function connect(node: GatewayNode, userId: string, options: ConnectOptions = {}): Promise<TestClient> {
  const { token } = await signToken(CLUSTER_SECRET, { sub: userId, ttlSec: 600 });
  const client = new TestClient(node.url, { token, ...options });
  clients.push(client);
  await client.ready(15_000);
  return client;
}

function terminalOf(runId: string): (frame: Frame) => boolean {
  return (frame) => frame.run_id === runId && isTerminal(frame);
}

/** What a client last saw, for reconnecting with `last_seq`/`epoch`. */
function position(client: TestClient): { lastSeq: number; epoch: string } {
  const ready = client.frames.find((f) => f.type === 'connection_ready')!;
  const events = client.events();
  return { lastSeq: events.length ? events.at(-1)!.seq : ready.last_seq, epoch: ready.epoch };
}

describe('agentwire serve on a 3-master Redis Cluster', () => {
  it('serves a demo run end to end over a WebSocket', async () => {
    const node = await startNode('solo');
    const client = await connect(node, 'serve-alice');
    const ack = await client.message('m1', 't1', 'what is 2+3*4?');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    const events = await client.runEvents(ack.run_id, 10_000);
    expect(events[0]).toMatchObject({ type: 'agent_started', message_id: 'm1' });
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
    expect(events.at(-1)!.text).toContain('14');
    expect(seqProblem(client.events(), 0)).toBeNull();
    // The user's log is on the cluster: a client of a second node reads it back from seq 1.
    const other = await startNode('solo-2');
    const reader = await connect(other, 'serve-alice', { lastSeq: 0, epoch: client.frames[0]!.epoch });
    expect(reader.frames[0]).toMatchObject({ type: 'connection_ready', resumed: true, last_seq: events.at(-1)!.seq, replayed: events.length });
    await reader.waitForCount((f) => typeof f.seq === 'number', events.length, 5000, 'replayed events');
    expect(reader.events().map((e) => e.seq)).toEqual(events.map((e) => e.seq));
  }, 60_000);

  it('a killed gateway node: its clients resume on another node, and its run ends once with run_lost there', async () => {
    const [nodeA, nodeB] = await Promise.all([startNode('kill-a'), startNode('kill-b')]);
    const onA = await connect(nodeA, 'serve-kim');
    const onB = await connect(nodeB, 'serve-kim');
    const lost = await onA.message('m1', 't1', '/slow 400 this run dies with its node');
    expect(lost).toMatchObject({ type: 'ack', status: 'started' });
    await onA.waitFor((f) => f.run_id === lost.run_id && f.type === 'agent_thinking', 10_000, 'first step of the doomed run');
    const killedAt = Date.now();
    nodeA.child.signal('SIGKILL');
    await nodeA.child.waitExit();
    expect((await onA.waitClosed()).code).toBe(1006);

    // The dropped client comes back on node B from where it was.
    const before = position(onA);
    const resumed = await connect(nodeB, 'serve-kim', before);
    const ready = resumed.frames[0]!;
    expect(ready).toMatchObject({ type: 'connection_ready', resumed: true, epoch: before.epoch });
    expect(ready.replayed).toBe(ready.last_seq - before.lastSeq);

    for (const client of [onB, resumed]) {
      const terminal = await client.waitFor(terminalOf(lost.run_id), LEASE_MS + SWEEP_MS + 5000, 'run_lost');
      expect(terminal).toMatchObject({ type: 'agent_error', code: 'run_lost', thread_id: 't1' });
    }
    expect(Date.now() - killedAt).toBeLessThanOrEqual(LEASE_MS + SWEEP_MS + 5000);
    // Exactly one terminal event, and the history seen across the kill has no gap and no duplicate.
    expect(onB.events().filter(terminalOf(lost.run_id))).toHaveLength(1);
    expect(seqProblem(onB.events(), 0)).toBeNull();
    const acrossTheKill = [...onA.events(), ...resumed.events()];
    expect(acrossTheKill.map((e) => e.seq)).toEqual(onB.events().map((e) => e.seq));
    // The thread is free again: a message to it starts at once on the surviving node.
    expect(await resumed.message('m2', 't1', 'what is 1+1?')).toMatchObject({ type: 'ack', status: 'started' });
  }, 60_000);

  it('the per-user run cap and message-id idempotency hold across gateway nodes', async () => {
    const env = { AGENTWIRE_MAX_ACTIVE_RUNS_PER_USER: '2' };
    const [nodeA, nodeB] = await Promise.all([startNode('cap-a', env), startNode('cap-b', env)]);
    const onA = await connect(nodeA, 'serve-cara');
    const onB = await connect(nodeB, 'serve-cara');
    // One message id sent through both nodes at once: one run, the other ack a duplicate of it.
    const [viaA, viaB] = await Promise.all([onA.message('same', 't1', '/hang one'), onB.message('same', 't1', '/hang one')]);
    expect([viaA.status, viaB.status].sort()).toEqual(['duplicate', 'started']);
    expect(viaA.run_id).toBe(viaB.run_id);
    // One more run on the other node reaches the cap of 2; beyond it, both nodes refuse.
    expect(await onB.message('m2', 't2', '/hang two')).toMatchObject({ type: 'ack', status: 'started' });
    expect(await onA.message('m3', 't3', '/hang three')).toMatchObject({ type: 'error', code: 'too_many_runs' });
    expect(await onB.message('m4', 't4', '/hang four')).toMatchObject({ type: 'error', code: 'too_many_runs' });
    // A cancel frees a place, cluster-wide.
    onA.send({ type: 'cancel', id: 'c1', run_id: viaA.run_id });
    await onB.waitFor(terminalOf(viaA.run_id as string), 10_000, 'the cancelled run to end');
    expect(await onB.message('m5', 't5', '/hang five')).toMatchObject({ type: 'ack', status: 'started' });
  }, 60_000);
});
