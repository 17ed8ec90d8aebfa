import type { Duplex } from 'node:stream';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/index.js';
import { RedisConnection, RedisEngine } from '../../src/redis/index.js';
import type { EventBody } from '@agentwire/protocol';
import type { Agent, AgentStep } from '../../src/runs/agent.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { InstrumentedEngine } from '../helpers/instrumentedEngine.js';
import { RedisServer } from '../helpers/redisServer.js';
import { TestClient, type Frame } from '../helpers/wsClient.js';

/**
 * Write coalescing: what is produced in one tick leaves in one write. Each socket write is a
 * syscall, the largest cost per event on a busy gateway (docs/BENCHMARKS.md), so a batch of
 * events must cost one write per connection, one engine append per run, and one write to Redis.
 */

/** Counts the write operations a stream hands to its socket (one per `_write`/`_writev`). */
function countWrites(stream: Duplex): { readonly count: number } {
  const counter = { count: 0 };
  const target = stream as unknown as Record<'_write' | '_writev', ((...args: unknown[]) => void) | undefined>;
  for (const method of ['_write', '_writev'] as const) {
    const original = target[method];
    if (!original) continue;
    target[method] = function (this: unknown, ...args: unknown[]) {
      counter.count++;
      return original.apply(this, args);
    };
  }
  return counter;
}

/** Records the chunks a stream hands to its socket, in order. */
function recordChunks(stream: Duplex): unknown[] {
  const chunks: unknown[] = [];
  const target = stream as unknown as Record<'_write' | '_writev', ((...args: unknown[]) => void) | undefined>;
  const write = target._write!;
  target._write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
    chunks.push(chunk);
    return write.call(this, chunk, ...rest);
  };
  const writev = target._writev;
  if (writev) {
    target._writev = function (this: unknown, batch: unknown, ...rest: unknown[]) {
      for (const { chunk } of batch as Array<{ chunk: unknown }>) chunks.push(chunk);
      return writev.call(this, batch, ...rest);
    };
  }
  return chunks;
}

const thinking = (text: string): EventBody => ({ type: 'agent_thinking', text, run_id: 'r1', thread_id: 't1', ts: new Date(0).toISOString() });
const isEvent = (frame: Frame) => typeof frame.seq === 'number';

let env: TestGateway | undefined;
afterEach(async () => {
  await env?.stop();
  env = undefined;
});

describe('connection writes', () => {
  it('sends connection_ready and a whole replay in one write, and a batch of live events in one more', async () => {
    const engine = new MemoryEngine();
    env = await startGateway({ engine });
    const writes: Array<{ readonly count: number }> = [];
    env.server.prependListener('upgrade', (_req: unknown, socket: Duplex) => writes.push(countWrites(socket)));

    const [first] = await engine.append(
      'ada',
      Array.from({ length: 20 }, (_, i) => thinking(`old ${i}`)),
    );
    const client = await env.connect('ada', { lastSeq: 0, epoch: first!.epoch });
    await client.ready();
    await client.waitForCount(isEvent, 20);
    // The 101 response is the handshake's own write; everything after it is ours.
    const afterReplay = writes[0]!.count;
    expect(afterReplay).toBe(2);

    await engine.append(
      'ada',
      Array.from({ length: 10 }, (_, i) => thinking(`new ${i}`)),
    );
    await client.waitForCount(isEvent, 30);
    expect(writes[0]!.count).toBe(afterReplay + 1);
    expect(client.frames.filter(isEvent).map((f) => f.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  });
});

describe('event frames', () => {
  it('frames an event once: every connection of its user is written the same bytes', async () => {
    const engine = new MemoryEngine();
    env = await startGateway({ engine });
    const sockets: unknown[][] = [];
    env.server.prependListener('upgrade', (_req: unknown, socket: Duplex) => sockets.push(recordChunks(socket)));
    const clients = [await env.ready('fay'), await env.ready('fay'), await env.ready('fay')];
    const before = sockets.map((chunks) => chunks.length);
    await engine.append('fay', [thinking('shared')]);
    for (const client of clients) await client.waitForType('agent_thinking');
    const written = sockets.map((chunks, i) => chunks.slice(before[i]));
    expect(written.map((chunks) => chunks.length)).toEqual([1, 1, 1]);
    expect(Buffer.isBuffer(written[0]![0])).toBe(true);
    expect(written[1]![0]).toBe(written[0]![0]);
    expect(written[2]![0]).toBe(written[0]![0]);
  });

  it('with permessage-deflate, a connection that negotiated it and one that did not receive the same events', async () => {
    const engine = new MemoryEngine();
    env = await startGateway({ engine, permessageDeflate: true });
    const deflating = await env.ready('gus');
    const plain = new TestClient(env.url, { token: await env.token('gus'), perMessageDeflate: false });
    env.clients.push(plain);
    await plain.ready();
    expect(deflating.ws.extensions).toContain('permessage-deflate');
    expect(plain.ws.extensions).toBe('');
    // Small and large events (ws compresses from 1 KiB), some in one batch, some alone.
    await engine.append('gus', [thinking('a'), thinking('b'.repeat(4096)), thinking('c')]);
    for (let i = 0; i < 5; i++) await engine.append('gus', [thinking(`${i}`.repeat(i * 1000))]);
    for (const client of [deflating, plain]) await client.waitForCount(isEvent, 8);
    const texts = (client: TestClient) => client.frames.filter(isEvent).map((f) => [f.seq, f.text]);
    expect(texts(plain)).toEqual(texts(deflating));
    expect(texts(plain).map(([seq]) => seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });
});

describe('outbound limit with coalesced writes', () => {
  it('a batch larger than the limit to a client that reads is delivered, not taken for a backlog', async () => {
    const engine = new MemoryEngine();
    env = await startGateway({ engine, slowConsumerBytes: 256 * 1024 });
    const client = await env.ready('dee');
    const big = 'x'.repeat(30 * 1024);
    // 20 × 30 KiB in one tick: 600 KiB corked at once, over the 256 KiB limit.
    await engine.append(
      'dee',
      Array.from({ length: 20 }, () => thinking(big)),
    );
    await client.waitForCount(isEvent, 20);
    client.send({ type: 'ping', id: 'after' });
    await client.waitFor((f) => f.type === 'pong');
    expect(client.closeCode).toBeNull();
  });
  // A client that does not read still gets 4008: test/badInput.test.ts, test/hardening.test.ts.
});

describe('run appends', () => {
  /** Yields `steps` thinking steps; with `pauseMs`, waits on a timer before each. */
  function stepper(steps: number, pauseMs?: number): Agent {
    return {
      async *run(): AsyncGenerator<AgentStep> {
        for (let i = 1; i <= steps; i++) {
          if (pauseMs !== undefined) await new Promise((resolve) => setTimeout(resolve, pauseMs));
          yield { type: 'thinking', text: `step ${i}` };
        }
        yield { type: 'answer', text: 'done' };
      },
    };
  }

  it('appends what an agent yields without waiting on I/O in one append, terminal event included', async () => {
    const engine = new InstrumentedEngine(new MemoryEngine(), {}, new Set());
    env = await startGateway({ engine, agent: stepper(12) });
    const client = await env.ready('bea');
    client.send({ type: 'user_message', id: 'm1', thread_id: 't1', text: 'go' });
    await client.waitForType('agent_completed');
    expect(engine.countOf('append', 'bea')).toBe(1);
    expect(client.frames.filter(isEvent).map((f) => f.type)).toEqual(['agent_started', ...Array(12).fill('agent_thinking'), 'agent_completed']);
  });

  it('does not hold back a step that follows I/O: each goes out on its own when the log is idle', async () => {
    const engine = new InstrumentedEngine(new MemoryEngine(), {}, new Set());
    env = await startGateway({ engine, agent: stepper(3, 5) });
    const client = await env.ready('cai');
    client.send({ type: 'user_message', id: 'm1', thread_id: 't1', text: 'go' });
    await client.waitForType('agent_completed');
    // agent_started, three steps each after a timer, then the completion right after the last step.
    expect(engine.countOf('append', 'cai')).toBe(4);
  });
});

describe('Redis writes', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('sends the appends of one tick to Redis in one write', async () => {
    const connection = new RedisConnection({ url: redis.url, keyPrefix: 'coalesce' });
    const engine = new RedisEngine(connection);
    await engine.ready();
    const writes = countWrites((connection.client as Redis).stream);
    const users = Array.from({ length: 25 }, (_, i) => `user-${i}`);
    const appended = await Promise.all(users.map((user) => engine.append(user, [thinking('a'), thinking('b')])));
    expect(appended.map((entries) => entries.map((e) => e.seq))).toEqual(users.map(() => [1, 2]));
    expect(writes.count).toBe(1);
    await connection.close();
  });
});
