import { afterEach, describe, expect, it, vi } from 'vitest';
import { systemClock } from '@agentwire/protocol';
import { RedisPresence, RedisRunStore } from '../../src/redis/index.js';
import type { LogEntry } from '@agentwire/protocol';
import { createDemoAgent } from '../../src/runs/demoAgent.js';
import { leaseMember } from '../../src/redis/keys.js';
import { RunManager, type CancelReply, type SubmitReply } from '../../src/runs/runManager.js';
import type { RunAssignment, RunRecord } from '../../src/runs/runStore.js';
import { TestCluster, type GatewayNode } from '../helpers/cluster.js';
import { TestRedisEngine, userKeys } from '../helpers/redisBackend.js';
import { RedisServer } from '../helpers/redisServer.js';
import { isTerminal, runProblem } from '../helpers/runInvariants.js';
import { Waiters } from '../helpers/waitFor.js';
import { seqProblem, type Frame, type TestClient } from '../helpers/wsClient.js';

/**
 * Scale-out over Redis with real gateway processes (test/helpers/cluster.ts: lease 1500 ms,
 * lost-run sweep 250 ms, demo step 5 ms): a node killed mid-run, messages for one thread
 * racing on two nodes, cancel across nodes, and the cluster-wide per-user connection cap.
 */

const LEASE_MS = 1500;
const SWEEP_MS = 250;
/** Key prefix of the Redis engine when serve does not set one. */
const PREFIX = 'aw';

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

function nodes(c: TestCluster): [GatewayNode, GatewayNode] {
  return [c.nodes[0]!, c.nodes[1]!];
}

function userMessage(id: string, threadId: string, text: string): Frame {
  return { type: 'user_message', id, thread_id: threadId, text };
}

function terminalOf(runId: string): (frame: Frame) => boolean {
  return (frame) => frame.run_id === runId && isTerminal(frame);
}

/**
 * Splits a seq-ordered event list into maximal blocks of one run each. When runs of one thread
 * never overlap, every run is exactly one block.
 */
function runBlocks(events: readonly Frame[]): Array<{ runId: string; events: Frame[] }> {
  const blocks: Array<{ runId: string; events: Frame[] }> = [];
  for (const event of events) {
    const last = blocks.at(-1);
    if (last && last.runId === event.run_id) last.events.push(event);
    else blocks.push({ runId: event.run_id, events: [event] });
  }
  return blocks;
}

/** What a client last saw, for reconnecting with `last_seq`/`epoch`. */
function position(client: TestClient): { lastSeq: number; epoch: string } {
  const ready = client.frames.find((f) => f.type === 'connection_ready')!;
  const events = client.events();
  return { lastSeq: events.length ? events.at(-1)!.seq : ready.last_seq, epoch: ready.epoch };
}

describe('cluster: a node dies mid-run', () => {
  it('clients of the killed node resume on another node; the run ends once with run_lost after its lease; other runs are unaffected', async () => {
    cluster = await TestCluster.start(2);
    const [nodeA, nodeB] = nodes(cluster);
    const redis = cluster.redis.client();
    try {
      const a1 = await cluster.ready(nodeA, 'u-kill');
      const a2 = await cluster.ready(nodeA, 'u-kill');
      const b1 = await cluster.ready(nodeB, 'u-kill');
      const v = await cluster.ready(nodeB, 'v-kill');

      // Runs on node B, started before the kill (about 1.5 s long).
      const vAck = await v.message('v1', 'tv', '/slow 300 count these four words');
      const uOnB = await b1.message('ub1', 't-b', '/slow 300 what is 2+3*4');
      // The run node A executes when it dies: about two seconds long, killed after its first step.
      const lost = await a1.message('ua1', 't-a', '/slow 400 this run dies with its node');
      expect([vAck.status, uOnB.status, lost.status]).toEqual(['started', 'started', 'started']);
      await a1.waitFor((f) => f.run_id === lost.run_id && f.type === 'agent_thinking', 5000, 'first step of the doomed run');
      expect(a1.frames.some(terminalOf(lost.run_id))).toBe(false);

      const killedAt = Date.now();
      nodeA.child.signal('SIGKILL');
      await nodeA.child.waitExit();
      // Node A renewed this lease until it died; the score is the moment the run may be presumed lost.
      const leaseScore = await redis.zscore(userKeys(PREFIX, 'u-kill').leases, leaseMember('u-kill', lost.run_id));
      expect(leaseScore).not.toBeNull();
      const leaseExpiry = Number(leaseScore);
      expect(leaseExpiry).toBeGreaterThan(killedAt);
      expect(leaseExpiry).toBeLessThanOrEqual(killedAt + LEASE_MS);

      expect((await a1.waitClosed()).code).toBe(1006);
      expect((await a2.waitClosed()).code).toBe(1006);

      // The dead node's run still holds its thread: a message for it now waits in the queue.
      const afterLost = await b1.message('ub2', 't-a', 'runs after the lost run');
      expect(afterLost).toMatchObject({ type: 'ack', status: 'queued', thread_id: 't-a' });

      // The dropped clients reconnect to node B from where they were.
      const p1 = position(a1);
      const p2 = position(a2);
      const r1 = await cluster.ready(nodeB, 'u-kill', p1);
      const r2 = await cluster.ready(nodeB, 'u-kill', p2);
      for (const [resumedClient, p] of [
        [r1, p1],
        [r2, p2],
      ] as const) {
        const ready = resumedClient.frames[0]!;
        expect(ready).toMatchObject({ type: 'connection_ready', resumed: true, epoch: p.epoch });
        expect(ready.replayed).toBe(ready.last_seq - p.lastSeq);
      }

      const lostTerminal = await b1.waitFor(terminalOf(lost.run_id), LEASE_MS + SWEEP_MS + 3000 + 1000, 'run_lost');
      const arrivedAt = Date.now();
      expect(lostTerminal).toMatchObject({ type: 'agent_error', code: 'run_lost', run_id: lost.run_id, thread_id: 't-a' });
      // Not before the lease could have expired, and within lease + sweep + margin of the kill.
      expect(Date.parse(lostTerminal.ts)).toBeGreaterThanOrEqual(leaseExpiry);
      expect(arrivedAt - killedAt).toBeLessThanOrEqual(LEASE_MS + SWEEP_MS + 3000);

      const uRuns = [uOnB.run_id, lost.run_id, afterLost.run_id];
      for (const client of [b1, r1, r2]) {
        for (const runId of uRuns) await client.waitFor(terminalOf(runId), 10_000, `terminal of ${runId}`);
      }
      await v.waitFor(terminalOf(vAck.run_id), 10_000, 'terminal of the other user run');

      // The client that stayed on node B saw the user's whole history, contiguous from seq 1.
      const reference = b1.events();
      expect(b1.frames[0]).toMatchObject({ type: 'connection_ready', last_seq: 0 });
      expect(seqProblem(reference, 0)).toBeNull();
      expect(new Set(reference.map((e) => e.run_id))).toEqual(new Set(uRuns));
      // Each resumed client: what it saw before the kill, then (replay + live) after it,
      // is exactly that history — no gap, no duplicate.
      for (const [before, after] of [
        [a1, r1],
        [a2, r2],
      ] as const) {
        expect(seqProblem(before.events(), 0)).toBeNull();
        expect(seqProblem(after.events(), position(before).lastSeq)).toBeNull();
        expect([...before.events(), ...after.events()]).toEqual(reference);
      }

      const byRun = (runId: string) => reference.filter((e) => e.run_id === runId);
      for (const runId of uRuns) expect(runProblem(byRun(runId))).toBeNull();
      const lostEvents = byRun(lost.run_id);
      expect(lostEvents.filter(isTerminal)).toEqual([lostTerminal]);
      expect(lostEvents.map((e) => e.type).slice(0, 2)).toEqual(['agent_started', 'agent_thinking']);
      expect(byRun(uOnB.run_id).at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
      expect(byRun(uOnB.run_id).at(-1)!.text).toContain('14');
      // The thread moved on after run_lost, on the surviving node.
      const next = byRun(afterLost.run_id);
      expect(next[0]!.seq).toBeGreaterThan(lostTerminal.seq);
      expect(next.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });

      // The other user's run on node B: complete, contiguous, nothing of u-kill.
      const vEvents = v.events();
      expect(seqProblem(vEvents, 0)).toBeNull();
      expect(runProblem(vEvents)).toBeNull();
      expect(vEvents.every((e) => e.run_id === vAck.run_id)).toBe(true);
      expect(vEvents.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });

      for (const client of [b1, r1, r2, v]) expect(client.closeCode).toBeNull();
    } finally {
      redis.disconnect();
    }
  }, 60_000);
});

describe('cluster: one thread, messages arriving at two nodes at once', () => {
  it('queues them in one FIFO order: one started, the rest queued, runs never overlap, each ends once', async () => {
    cluster = await TestCluster.start(2);
    const [nodeA, nodeB] = nodes(cluster);
    const redis = cluster.redis.client();
    try {
      const ca = await cluster.ready(nodeA, 'u-burst');
      const cb = await cluster.ready(nodeB, 'u-burst');
      // The first of each connection is slow, so whichever Redis receives first holds the
      // thread through the whole burst.
      for (let i = 0; i < 10; i++) {
        const text = i === 0 ? '/slow 300 first of the burst' : `burst message ${i}`;
        ca.send(userMessage(`a${i}`, 't', `${text} via a`));
        cb.send(userMessage(`b${i}`, 't', `${text} via b`));
      }
      const acks = [
        ...(await ca.waitForCount((f) => f.type === 'ack', 10, 10_000, 'acks on a')),
        ...(await cb.waitForCount((f) => f.type === 'ack', 10, 10_000, 'acks on b')),
      ];
      // The order Redis queued them in, read while the first run still holds the thread.
      const queue = await redis.lrange(userKeys(PREFIX, 'u-burst').thread('t'), 0, -1);

      expect(ca.frames.concat(cb.frames).filter((f) => f.type === 'error')).toEqual([]);
      const started = acks.filter((a) => a.status === 'started');
      expect(started).toHaveLength(1);
      expect(['a0', 'b0']).toContain(started[0]!.id);
      expect(acks.filter((a) => a.status === 'queued')).toHaveLength(19);
      expect(new Set(acks.map((a) => a.run_id)).size).toBe(20);
      const idOfRun = new Map(acks.map((a) => [a.run_id as string, a.id as string]));
      expect(queue).toHaveLength(20);
      expect(queue[0]).toBe(started[0]!.run_id);
      expect(new Set(queue)).toEqual(new Set(idOfRun.keys()));

      await ca.waitForCount(isTerminal, 20, 20_000, 'terminal events on a');
      await cb.waitForCount(isTerminal, 20, 20_000, 'terminal events on b');
      const events = ca.events();
      expect(cb.events()).toEqual(events);
      expect(seqProblem(events, 0)).toBeNull();

      // Each run is one contiguous block from agent_started to its single terminal event.
      const blocks = runBlocks(events);
      expect(blocks).toHaveLength(20);
      expect(new Set(blocks.map((b) => b.runId)).size).toBe(20);
      for (const block of blocks) {
        expect(runProblem(block.events)).toBeNull();
        expect(block.events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
        expect(block.events[0]!.message_id).toBe(idOfRun.get(block.runId));
      }
      // FIFO: executed in the order Redis queued them, which keeps each connection's send order.
      const executed = blocks.map((b) => b.runId);
      expect(executed).toEqual(queue);
      const executedIds = executed.map((runId) => idOfRun.get(runId)!);
      expect(executedIds.filter((id) => id.startsWith('a'))).toEqual(Array.from({ length: 10 }, (_, i) => `a${i}`));
      expect(executedIds.filter((id) => id.startsWith('b'))).toEqual(Array.from({ length: 10 }, (_, i) => `b${i}`));
      // The thread's last hand-off (ADVANCE) follows its terminal event: wait for it, do not race it.
      await vi.waitFor(async () => expect(await redis.exists(userKeys(PREFIX, 'u-burst').thread('t'))).toBe(0), { timeout: 5000, interval: 20 });
    } finally {
      redis.disconnect();
    }
  }, 60_000);

  it('a message id sent to two nodes at the same moment starts exactly one run; the other node answers duplicate', async () => {
    cluster = await TestCluster.start(2);
    const [nodeA, nodeB] = nodes(cluster);
    const redis = cluster.redis.client();
    try {
      const ca = await cluster.ready(nodeA, 'u-dup');
      const cb = await cluster.ready(nodeB, 'u-dup');
      const pairOf = async (id: string) => [
        await ca.waitFor((f) => f.type === 'ack' && f.id === id, 10_000, `ack of ${id} on a`),
        await cb.waitFor((f) => f.type === 'ack' && f.id === id, 10_000, `ack of ${id} on b`),
      ];
      // Round 0 alone: its run is slow and holds the thread while rounds 1..9 arrive.
      ca.send(userMessage('d0', 'td', '/slow 400 the same message twice'));
      cb.send(userMessage('d0', 'td', '/slow 400 the same message twice'));
      const first = await pairOf('d0');
      expect(first[0]!.run_id).toBe(first[1]!.run_id);
      expect(first.map((a) => a.status).sort()).toEqual(['duplicate', 'started']);

      for (let i = 1; i < 10; i++) {
        ca.send(userMessage(`d${i}`, 'td', `duplicate round ${i}`));
        cb.send(userMessage(`d${i}`, 'td', `duplicate round ${i}`));
      }
      const runIds = [first[0]!.run_id as string];
      for (let i = 1; i < 10; i++) {
        const pair = await pairOf(`d${i}`);
        expect(pair[0]!.run_id).toBe(pair[1]!.run_id);
        expect(pair.map((a) => a.status).sort()).toEqual(['duplicate', 'queued']);
        runIds.push(pair[0]!.run_id);
      }
      expect(new Set(runIds).size).toBe(10);
      // Exactly the ten runs are queued, none twice.
      const queue = await redis.lrange(userKeys(PREFIX, 'u-dup').thread('td'), 0, -1);
      expect(queue).toHaveLength(10);
      expect(new Set(queue)).toEqual(new Set(runIds));

      await ca.waitForCount(isTerminal, 10, 20_000, 'terminal events on a');
      await cb.waitForCount(isTerminal, 10, 20_000, 'terminal events on b');
      const events = ca.events();
      expect(cb.events()).toEqual(events);
      expect(seqProblem(events, 0)).toBeNull();
      const blocks = runBlocks(events);
      expect(blocks.map((b) => b.runId)).toEqual(queue);
      for (const block of blocks) expect(runProblem(block.events)).toBeNull();
      expect(
        events
          .filter((e) => e.type === 'agent_started')
          .map((e) => e.message_id)
          .sort(),
      ).toEqual(Array.from({ length: 10 }, (_, i) => `d${i}`).sort());
      // The thread's last hand-off (ADVANCE) follows its terminal event: wait for it, do not race it.
      await vi.waitFor(async () => expect(await redis.exists(userKeys(PREFIX, 'u-dup').thread('td'))).toBe(0), { timeout: 5000, interval: 20 });
    } finally {
      redis.disconnect();
    }
  }, 60_000);

  it('with AGENTWIRE_THREAD_POLICY=reject on both nodes: one started, the concurrent other gets thread_busy', async () => {
    cluster = await TestCluster.start(2, { env: { AGENTWIRE_THREAD_POLICY: 'reject' } });
    const [nodeA, nodeB] = nodes(cluster);
    const ca = await cluster.ready(nodeA, 'u-reject');
    const cb = await cluster.ready(nodeB, 'u-reject');
    const threads = Array.from({ length: 5 }, (_, i) => `r${i}`);
    for (const thread of threads) {
      ca.send(userMessage(`${thread}-a`, thread, `/slow 200 ${thread} via a`));
      cb.send(userMessage(`${thread}-b`, thread, `/slow 200 ${thread} via b`));
    }
    const rejected: Array<{ client: TestClient; id: string; thread: string }> = [];
    const startedRuns: string[] = [];
    for (const thread of threads) {
      const a = await ca.waitFor((f) => f.id === `${thread}-a` || f.ref === `${thread}-a`, 10_000, `answer on a for ${thread}`);
      const b = await cb.waitFor((f) => f.id === `${thread}-b` || f.ref === `${thread}-b`, 10_000, `answer on b for ${thread}`);
      const answers = [a, b];
      const ack = answers.filter((f) => f.type === 'ack');
      const busy = answers.filter((f) => f.type === 'error');
      expect(ack).toHaveLength(1);
      expect(ack[0]).toMatchObject({ status: 'started', thread_id: thread });
      expect(busy).toHaveLength(1);
      expect(busy[0]).toMatchObject({ type: 'error', code: 'thread_busy' });
      startedRuns.push(ack[0]!.run_id);
      rejected.push(busy[0] === a ? { client: ca, id: `${thread}-a`, thread } : { client: cb, id: `${thread}-b`, thread });
    }
    for (const runId of startedRuns) {
      await ca.waitFor(terminalOf(runId), 10_000, `terminal of ${runId} on a`);
      await cb.waitFor(terminalOf(runId), 10_000, `terminal of ${runId} on b`);
    }
    // Only the five accepted messages ran.
    expect(
      ca
        .events()
        .filter((e) => e.type === 'agent_started')
        .map((e) => e.run_id)
        .sort(),
    ).toEqual([...startedRuns].sort());

    // The threads are free again, and a rejected id was released: the same id now starts a run.
    for (const { client, id, thread } of rejected) {
      const from = client.frames.length;
      client.send(userMessage(id, thread, `retry of ${id}`));
      const ack = await client.waitFor((f) => f.id === id || f.ref === id, 10_000, `answer to the retry of ${id}`, from);
      expect(ack).toMatchObject({ type: 'ack', id, status: 'started', thread_id: thread });
      const events = await client.runEvents(ack.run_id, 10_000);
      expect(runProblem(events)).toBeNull();
    }
    for (const client of [ca, cb]) await client.waitForCount(isTerminal, 10, 10_000, 'terminal events');
    const all = ca.events();
    expect(cb.events()).toEqual(all);
    expect(seqProblem(all, 0)).toBeNull();
    expect(all.filter(isTerminal)).toHaveLength(10);
    // No error other than the five thread_busy answers.
    const errors = [...ca.frames, ...cb.frames].filter((f) => f.type === 'error');
    expect(errors.map((e) => e.code)).toEqual(Array(5).fill('thread_busy'));
  }, 60_000);
});

describe('cluster: cancel reaches the node that executes the run', () => {
  it('a /hang run started via node A is cancelled from a client on node B', async () => {
    cluster = await TestCluster.start(2);
    const [nodeA, nodeB] = nodes(cluster);
    const ca = await cluster.ready(nodeA, 'u-cancel');
    const cb = await cluster.ready(nodeB, 'u-cancel');
    const ack = await ca.message('h1', 'th', '/hang wait for a cancel');
    expect(ack).toMatchObject({ status: 'started' });
    await cb.waitFor((f) => f.run_id === ack.run_id && f.type === 'agent_thinking', 5000, 'the hang run executing');

    cb.send({ type: 'cancel', id: 'c1', run_id: ack.run_id });
    const cancelAck = await cb.waitFor((f) => f.id === 'c1' || f.ref === 'c1', 5000, 'answer to the cancel');
    expect(cancelAck).toEqual({ type: 'ack', id: 'c1', run_id: ack.run_id, thread_id: 'th', status: 'cancelling' });
    for (const client of [ca, cb]) {
      const events = await client.runEvents(ack.run_id, 5000);
      expect(runProblem(events)).toBeNull();
      expect(events.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_completed']);
      expect(events.at(-1)).toMatchObject({ status: 'cancelled' });
      expect(seqProblem(client.events(), 0)).toBeNull();
    }
    expect(cb.events()).toEqual(ca.events());
    // Ended once: cancelling again finds no run.
    cb.send({ type: 'cancel', id: 'c2', run_id: ack.run_id });
    expect(await cb.waitFor((f) => f.ref === 'c2' || f.id === 'c2', 5000, 'answer to the second cancel')).toMatchObject({
      type: 'error',
      code: 'run_not_found',
    });
  }, 60_000);

  it('a queued run cancelled from the other node ends as started + cancelled when its turn comes', async () => {
    cluster = await TestCluster.start(2);
    const [nodeA, nodeB] = nodes(cluster);
    const ca = await cluster.ready(nodeA, 'u-cq');
    const cb = await cluster.ready(nodeB, 'u-cq');
    const head = await ca.message('h1', 'tq', '/hang holds the thread');
    const queued = await cb.message('q2', 'tq', 'cancelled while queued');
    const after = await cb.message('q3', 'tq', 'runs normally after 2+2');
    expect([head.status, queued.status, after.status]).toEqual(['started', 'queued', 'queued']);

    // Cancel the queued run via node A (it was queued via node B).
    ca.send({ type: 'cancel', id: 'c-q2', run_id: queued.run_id });
    expect(await ca.waitFor((f) => f.id === 'c-q2' || f.ref === 'c-q2', 5000, 'answer to the queued cancel')).toEqual({
      type: 'ack',
      id: 'c-q2',
      run_id: queued.run_id,
      thread_id: 'tq',
      status: 'cancelling',
    });
    // Still waiting for its turn: the head run hangs, nothing of q2 has been appended.
    await ca.waitFor((f) => f.run_id === head.run_id && f.type === 'agent_thinking', 5000, 'the hang run executing');
    expect(ca.frames.some((f) => f.run_id === queued.run_id && typeof f.seq === 'number')).toBe(false);

    // End the head run from node B; the thread moves on to q2 (cancelled at once) and q3.
    cb.send({ type: 'cancel', id: 'c-h1', run_id: head.run_id });
    expect(await cb.waitFor((f) => f.id === 'c-h1' || f.ref === 'c-h1', 5000, 'answer to the head cancel')).toMatchObject({
      type: 'ack',
      status: 'cancelling',
    });
    for (const client of [ca, cb]) {
      await client.runEvents(after.run_id, 10_000);
      const events = client.events();
      expect(seqProblem(events, 0)).toBeNull();
      const blocks = runBlocks(events);
      expect(blocks.map((b) => b.runId)).toEqual([head.run_id, queued.run_id, after.run_id]);
      for (const block of blocks) expect(runProblem(block.events)).toBeNull();
      expect(blocks[0]!.events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
      expect(blocks[1]!.events.map((e) => [e.type, e.status])).toEqual([
        ['agent_started', undefined],
        ['agent_completed', 'cancelled'],
      ]);
      expect(blocks[1]!.events[0]).toMatchObject({ message_id: 'q2', text: 'cancelled while queued' });
      expect(blocks[2]!.events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
      expect(blocks[2]!.events.at(-1)!.text).toContain('4');
    }
    expect(cb.events()).toEqual(ca.events());
  }, 60_000);

  it("another user's cancel via another node gets forbidden and the run goes on", async () => {
    cluster = await TestCluster.start(2);
    const [nodeA, nodeB] = nodes(cluster);
    const owner = await cluster.ready(nodeA, 'u-owner');
    const intruder = await cluster.ready(nodeB, 'u-intruder');
    const ack = await owner.message('h1', 'tf', '/hang not yours to cancel');
    await owner.waitFor((f) => f.run_id === ack.run_id && f.type === 'agent_thinking', 5000, 'the hang run executing');

    intruder.send({ type: 'cancel', id: 'x1', run_id: ack.run_id });
    const answer = await intruder.waitFor((f) => f.id === 'x1' || f.ref === 'x1', 5000, 'answer to the foreign cancel');
    expect(answer).toMatchObject({ type: 'error', code: 'forbidden', ref: 'x1' });
    intruder.send({ type: 'cancel', id: 'x2', run_id: 'run_does-not-exist' });
    expect(await intruder.waitFor((f) => f.id === 'x2' || f.ref === 'x2', 5000, 'answer to an unknown cancel')).toMatchObject({
      type: 'error',
      code: 'run_not_found',
      ref: 'x2',
    });

    // The run was not touched: its owner can still cancel it (from node B), and it ends once.
    const ownerOnB = await cluster.ready(nodeB, 'u-owner');
    ownerOnB.send({ type: 'cancel', id: 'c1', run_id: ack.run_id });
    expect(await ownerOnB.waitFor((f) => f.id === 'c1' || f.ref === 'c1', 5000, 'answer to the owner cancel')).toMatchObject({
      type: 'ack',
      status: 'cancelling',
      run_id: ack.run_id,
    });
    const events = await owner.runEvents(ack.run_id, 5000);
    expect(runProblem(events)).toBeNull();
    expect(events.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_completed']);
    expect(events.at(-1)).toMatchObject({ status: 'cancelled' });
    expect(intruder.events()).toEqual([]);
  }, 60_000);
});

/** A cluster node in this process: engine, run store and run manager over a shared Redis. */
interface InProcessNode {
  readonly engine: TestRedisEngine;
  readonly store: RedisRunStore;
  readonly runs: RunManager;
}

function inProcessNode(url: string, nodeId: string, store?: (engine: TestRedisEngine) => RedisRunStore): InProcessNode {
  const engine = TestRedisEngine.on({ url });
  const runStore = store?.(engine) ?? new RedisRunStore(engine.connection, { nodeId, leaseMs: 60_000 });
  const runs = new RunManager({
    engine,
    agent: createDemoAgent({ clock: systemClock, stepMs: 5 }),
    clock: systemClock,
    threadPolicy: 'enqueue',
    runTimeoutMs: 60_000,
    store: runStore,
    lostRunSweepMs: 60_000,
  });
  return { engine, store: runStore, runs };
}

/**
 * Holds the reply of `advance` (after its script ran in Redis) until the test releases it: the
 * moment in which Redis already names this node as the run's owner but the node has not
 * started the run yet, as when the reply is still on the wire.
 */
class GatedRunStore extends RedisRunStore {
  gate: Promise<void> | null = null;
  #reached: Array<(assignment: RunAssignment | null) => void> = [];

  reached(): Promise<RunAssignment | null> {
    return new Promise((resolve) => this.#reached.push(resolve));
  }

  override async advance(record: RunRecord): Promise<RunAssignment | null> {
    const next = await super.advance(record);
    for (const resolve of this.#reached.splice(0)) resolve(next);
    if (this.gate) await this.gate;
    return next;
  }
}

function submitTo(node: InProcessNode, userId: string, id: string, threadId: string, text: string): Promise<SubmitReply> {
  return new Promise((resolve, reject) => void node.runs.submit(userId, { id, threadId, text }, resolve).catch(reject));
}

function cancelVia(node: InProcessNode, userId: string, runId: string): Promise<CancelReply> {
  return new Promise((resolve, reject) => void node.runs.cancel(userId, runId, resolve).catch(reject));
}

describe('cluster: cancel while a queued run is handed to its node', () => {
  for (const via of ['the other node', 'the same node'] as const) {
    it(`a cancel via ${via} that arrives after Redis made the run running but before the node started it still cancels it`, async () => {
      const server = await RedisServer.start();
      const redis = server.client();
      let gated: GatedRunStore | undefined;
      const nodeA = inProcessNode(server.url, 'node-a', (engine) => {
        gated = new GatedRunStore(engine.connection, { nodeId: 'node-a', leaseMs: 60_000 });
        return gated;
      });
      const nodeB = inProcessNode(server.url, 'node-b');
      const store = gated!;
      let release = () => {};
      try {
        await Promise.all([nodeA.engine.ready(), nodeB.engine.ready()]);
        // Node A listens for cancels addressed to it (its control channel is subscribed; sharded
        // pub/sub, as on Redis 7 every channel of the backend).
        const channel = 'aw:node:node-a:cancel';
        for (const deadline = Date.now() + 5000; ;) {
          const [, count] = (await redis.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
          if (Number(count) === 1) break;
          if (Date.now() > deadline) throw new Error(`${channel} not subscribed`);
        }
        const log: LogEntry[] = [];
        const logWaiters = new Waiters(() => `log: ${log.map((e) => e.type).join(', ')}`);
        const subscription = await nodeA.engine.subscribe('u-gate', (entry) => {
          log.push(entry);
          logWaiters.notify();
        });
        const waitForEntry = (predicate: (event: Record<string, any>) => boolean, what: string) =>
          logWaiters.until<Record<string, any>>(() => log.map((e) => JSON.parse(e.json)).find(predicate), 10_000, what);

        const first = await submitTo(nodeA, 'u-gate', 'm1', 'tg', '/hang holds the thread');
        const second = await submitTo(nodeA, 'u-gate', 'm2', 'tg', 'handed over next');
        expect(first).toMatchObject({ kind: 'ack', status: 'started' });
        expect(second).toMatchObject({ kind: 'ack', status: 'queued' });
        const secondRun = (second as { runId: string }).runId;

        store.gate = new Promise<void>((resolve) => (release = resolve));
        const handedOver = store.reached();
        expect(await cancelVia(nodeA, 'u-gate', (first as { runId: string }).runId)).toMatchObject({ kind: 'ack', status: 'cancelling' });
        // Redis now names node A as the owner of the second run; node A has not started it.
        expect((await handedOver)?.record.runId).toBe(secondRun);
        expect(await redis.hget(userKeys('aw', 'u-gate').run(secondRun), 'state')).toBe('running');

        const delivered = new Promise<void>((resolve) => store.onCancelRequest((runId) => runId === secondRun && resolve()));
        const canceller = via === 'the other node' ? nodeB : nodeA;
        expect(await cancelVia(canceller, 'u-gate', secondRun)).toEqual({
          kind: 'ack',
          status: 'cancelling',
          runId: secondRun,
          threadId: 'tg',
        });
        if (via === 'the other node') await delivered;
        release();

        const terminal = await waitForEntry((e) => e.run_id === secondRun && isTerminal(e), 'terminal of the second run');
        expect(terminal).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
        const events = log.map((e) => JSON.parse(e.json)).filter((e) => e.run_id === secondRun);
        expect(runProblem(events)).toBeNull();
        await subscription.unsubscribe();
      } finally {
        store.gate = null;
        release();
        await nodeA.runs.drain(0);
        await nodeB.runs.drain(0);
        await Promise.all([nodeA.runs.close(), nodeB.runs.close()]);
        await Promise.all([nodeA.engine.close(), nodeB.engine.close()]);
        redis.disconnect();
        await server.stop();
      }
    });
  }
});

describe('cluster: per-user connection cap', () => {
  it('holds across nodes: 2 on A + 1 on B are ready, a 4th on either gets 4429, and a slot frees after a close', async () => {
    cluster = await TestCluster.start(2, { env: { AGENTWIRE_MAX_CONNECTIONS_PER_USER: '3' } });
    const [nodeA, nodeB] = nodes(cluster);
    const a1 = await cluster.ready(nodeA, 'u-cap');
    await cluster.ready(nodeA, 'u-cap');
    await cluster.ready(nodeB, 'u-cap');

    const refused = async (node: GatewayNode) => {
      const client = await cluster!.connect(node, 'u-cap');
      const closed = await client.waitClosed(10_000);
      expect(closed).toEqual({ code: 4429, reason: 'too_many_connections' });
      expect(client.frames).toEqual([]);
    };
    await refused(nodeA);
    await refused(nodeB);
    // The cap is per user: another user connects to the same nodes.
    await cluster.ready(nodeA, 'u-other');
    await cluster.ready(nodeB, 'u-other');

    a1.close();
    expect((await a1.waitClosed()).code).toBe(1000);
    // The slot is released asynchronously (Redis): retry on 4429 within a bound.
    let replacement: TestClient | null = null;
    for (let attempt = 0; attempt < 100 && !replacement; attempt++) {
      const client = await cluster.connect(nodeB, 'u-cap');
      const outcome = await Promise.race([client.ready(10_000).then(() => 'ready' as const), client.closed.then((c) => c.code)]);
      if (outcome === 'ready') replacement = client;
      else expect(outcome).toBe(4429);
    }
    expect(replacement).not.toBeNull();
    expect(replacement!.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'u-cap' });
    // Full again.
    await refused(nodeA);
    await refused(nodeB);
  }, 60_000);

  it("renewal keeps a user's connection set counted after the set's first TTL would have run out", async () => {
    const server = await RedisServer.start();
    const engine = TestRedisEngine.on({ url: server.url });
    const redis = server.client();
    try {
      await engine.ready();
      const presence = new RedisPresence(engine.connection, { ttlMs: 30_000 });
      const refs = [
        { userId: 'u-long', connectionId: 'c1' },
        { userId: 'u-long', connectionId: 'c2' },
      ];
      for (const ref of refs) expect(await presence.acquire(ref, 2)).toBe(true);
      const key = engine.keys('u-long').connections;
      // As if the connections had lived for almost the set's whole TTL without a new acquire.
      await redis.pexpire(key, 1000);
      await presence.renew(refs);
      expect(await redis.pttl(key)).toBeGreaterThan(30_000);
      expect(await presence.acquire({ userId: 'u-long', connectionId: 'c3' }, 2)).toBe(false);
      await presence.release(refs[0]!);
      expect(await presence.acquire({ userId: 'u-long', connectionId: 'c3' }, 2)).toBe(true);
    } finally {
      redis.disconnect();
      await engine.close();
      await server.stop();
    }
  });
});
