import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import WebSocket from 'ws';
import { sleep, systemClock } from '@agentwire/protocol';
import type { Agent, AgentStep } from '../../src/runs/agent.js';
import { demoAnswer } from '../../src/runs/demoAgent.js';
import { TestCluster, type GatewayNode } from '../helpers/cluster.js';
import { fcParams } from '../helpers/fastCheck.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { seqProblem, type Frame } from '../helpers/wsClient.js';

/**
 * Exact resume mid-answer (PROTOCOL.md section 7): clients whose connections are cut at random
 * points while answers stream (the socket terminated, or the node it is on killed) reconnect with
 * their `last_seq`/`epoch` and must reassemble exactly each run's final text: no fragment twice,
 * none missing, every seq once. On one node (memory engine, an agent streaming many small
 * fragments that the flush window merges at random) and on two nodes sharing Redis.
 */

/** A client that follows a user's events across connections it cuts (or loses) and resumes. */
class ResumingReader {
  readonly events: Frame[] = [];
  epoch: string | undefined;
  dials = 0;
  readonly finished: Promise<void>;
  /** Resolves at the first connection_ready (from then on the reader misses nothing). */
  readonly ready: Promise<void>;
  #onReady!: () => void;
  #finish!: () => void;
  #fail!: (error: Error) => void;
  #ended = false;
  #ws: WebSocket | null = null;
  readonly #cuts: number[];

  /**
   * `cuts`: after how many events (counted over all connections) the reader terminates its
   * socket; `urlFor(dial)` picks the node for each dial; `done` says when it has everything.
   */
  constructor(
    readonly token: string,
    cuts: readonly number[],
    readonly urlFor: (dial: number) => string,
    readonly done: (events: readonly Frame[]) => boolean,
  ) {
    this.#cuts = [...cuts].sort((a, b) => a - b);
    this.finished = new Promise((resolve, reject) => {
      this.#finish = resolve;
      this.#fail = reject;
    });
    this.finished.catch(() => {});
    this.ready = new Promise((resolve) => (this.#onReady = resolve));
  }

  start(): this {
    this.#dial();
    return this;
  }

  stop(): void {
    this.#ended = true;
    this.#ws?.terminate();
  }

  #dial(): void {
    if (this.#ended) return;
    if (++this.dials > 200) return this.#end(new Error(`gave up after 200 dials; ${this.events.length} events`));
    const url = new URL(this.urlFor(this.dials));
    const last = this.events.at(-1);
    if (this.epoch !== undefined) {
      url.searchParams.set('last_seq', String(last?.seq ?? 0));
      url.searchParams.set('epoch', this.epoch);
    }
    const ws = new WebSocket(url, ['agentwire.v1', `jwt.${this.token}`]);
    this.#ws = ws;
    ws.on('error', () => {}); // 'close' follows
    ws.on('message', (data) => {
      if (this.#ended || this.#ws !== ws) return;
      const frame = JSON.parse((data as Buffer).toString()) as Frame;
      if (frame.type === 'connection_ready') {
        if (this.epoch !== undefined && (frame.resumed !== true || frame.epoch !== this.epoch)) {
          return this.#end(new Error(`not resumed at seq ${last?.seq ?? 0}: ${(data as Buffer).toString()}`));
        }
        this.epoch = frame.epoch;
        this.#onReady();
        return;
      }
      if (typeof frame.seq !== 'number') return;
      this.events.push(frame);
      if (this.done(this.events)) return this.#end(null);
      if (this.#cuts.length > 0 && this.events.length >= this.#cuts[0]!) {
        this.#cuts.shift();
        ws.terminate();
      }
    });
    ws.on('close', () => {
      if (this.#ended || this.#ws !== ws) return;
      // At once after a cut of our own; after a refused dial (a node down), a little later.
      setTimeout(() => this.#dial(), this.events.length === 0 ? 20 : 5);
    });
  }

  #end(error: Error | null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#ws?.close();
    if (error) this.#fail(error);
    else this.#finish();
  }
}

/** Every run's terminal event is among `events`. */
const allEnded = (runs: number) => (events: readonly Frame[]) => events.filter((e) => e.type === 'agent_completed' || e.type === 'agent_error').length >= runs;

/**
 * What every reader must have: every seq once, in order, the same list as the reference, and
 * per run the text deltas concatenated = agent_completed.text = the expected answer.
 */
function expectExactAnswers(reader: ResumingReader, reference: readonly Frame[], expected: ReadonlyMap<string, string>): void {
  expect(seqProblem(reader.events, 0)).toBeNull();
  expect(reader.events).toEqual(reference);
  for (const [runId, text] of expected) {
    const run = reader.events.filter((e) => e.run_id === runId);
    const streamed = run.filter((e) => e.type === 'agent_text_delta').map((e) => e.text as string);
    expect(streamed.every((t) => t.length > 0)).toBe(true);
    expect(streamed.join('')).toBe(text);
    expect(run.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text });
  }
}

/** Cut points: up to `max` event counts in 1..within, per reader. */
const cutsArb = (readers: number, max: number, within: number) =>
  fc.array(fc.array(fc.integer({ min: 1, max: within }), { maxLength: max }), { minLength: readers, maxLength: readers });

describe('exact resume mid-answer, one node (memory engine)', () => {
  let env: TestGateway;
  let user = 0;
  /** Reconnections over all samples: the property is only meaningful if cuts happened mid-answer. */
  let resumes = 0;

  /**
   * Streams `w<run>.<i> ` fragments, `count` of them; each pause is 0..2 ms from `pauses`, so
   * the 3 ms flush window merges some fragments and not others.
   */
  const agent: Agent = {
    async *run({ text, signal }): AsyncGenerator<AgentStep> {
      const { count, pauses } = JSON.parse(text) as { count: number; pauses: number[] };
      yield { type: 'thinking', text: 'streaming' };
      for (let i = 0; i < count; i++) {
        const pause = pauses[i % pauses.length]!;
        if (pause > 0) await sleep(systemClock, pause, signal);
        yield { type: 'text_delta', text: `w${i} ` };
      }
    },
  };
  const answerOf = (count: number) => Array.from({ length: count }, (_, i) => `w${i} `).join('');

  beforeAll(async () => {
    env = await startGateway({ agent, streamFlushMs: 3 });
  });
  afterAll(async () => {
    await env.stop();
  });

  it('every reader reassembles exactly each final text, however its connections are cut', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ count: fc.integer({ min: 20, max: 80 }), pauses: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 8 }) }), {
          minLength: 1,
          maxLength: 2,
        }),
        cutsArb(2, 4, 40),
        async (runs, cuts) => {
          const userId = `stream-${++user}`;
          const token = await env.token(userId);
          const sender = await env.ready(userId);
          const readers = cuts.map((c) => new ResumingReader(token, c, () => env.url, allEnded(runs.length)).start());
          await Promise.all(readers.map((r) => r.ready));
          const expected = new Map<string, string>();
          for (const [i, run] of runs.entries()) {
            const ack = await sender.message(`m${i}`, `t${i}`, JSON.stringify(run));
            expected.set(ack.run_id, answerOf(run.count));
          }
          for (const runId of expected.keys()) await sender.runEvents(runId, 20_000);
          try {
            await Promise.all(readers.map((r) => r.finished));
          } finally {
            for (const r of readers) r.stop();
          }
          const reference = sender.events();
          for (const reader of readers) expectExactAnswers(reader, reference, expected);
          resumes += readers.reduce((sum, r) => sum + r.dials - 1, 0);
          // The log itself agrees with what the clients reassembled.
          const log = await env.gateway.engine.read(userId, 1, reference.length);
          expect(log.map((e) => JSON.parse(e.json))).toEqual(reference);
          sender.close();
        },
      ),
      fcParams(25, 25_000),
    );
    expect(resumes).toBeGreaterThan(10);
  }, 40_000);
});

describe('exact resume mid-answer, two nodes on Redis, with node kills', () => {
  let cluster: TestCluster;
  /** The node the messages are sent on (its runs execute there); never killed. */
  let home: GatewayNode;
  let user = 0;
  let resumes = 0;
  let kills = 0;
  /** A sum of many terms: the demo agent streams `1 + 2 + … = n` a word per delta. */
  const question = (terms: number) => `what is ${Array.from({ length: terms }, (_, i) => String(i + 1)).join(' + ')}?`;

  beforeAll(async () => {
    cluster = await TestCluster.start(2, { env: { AGENTWIRE_DEMO_STEP_MS: '2', AGENTWIRE_STREAM_FLUSH_MS: '2' } });
    home = cluster.nodes[1]!;
  }, 30_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('readers on the other node, cut at random and through a kill of that node, reassemble exactly each final text', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 15, max: 40 }), { minLength: 1, maxLength: 2 }),
        cutsArb(2, 3, 60),
        fc.option(fc.integer({ min: 1, max: 50 }), { nil: null }),
        async (terms, cuts, killAfter) => {
          const userId = `cluster-stream-${++user}`;
          const token = await cluster.token(userId);
          const sender = await cluster.ready(home, userId);
          // Readers dial the other node (whichever is current) first, and alternate afterwards.
          const other = () => cluster.nodes.find((n) => n !== home && n.child.running) ?? home;
          const readers = cuts.map((c) => new ResumingReader(token, c, (dial) => (dial % 2 === 1 ? other() : home).url, allEnded(terms.length)).start());
          await Promise.all(readers.map((r) => r.ready));
          const expected = new Map<string, string>();
          for (const [i, n] of terms.entries()) {
            const text = question(n);
            const ack = await sender.message(`m${i}`, `t${i}`, text, 10_000);
            expected.set(ack.run_id, demoAnswer(text));
          }
          if (killAfter !== null) {
            // Kill the readers' node mid-stream (SIGKILL: sockets drop without a close frame). Under
            // load the flush window merges more words, so a run can end in fewer events than the
            // drawn kill point: then the kill comes after the end, which readers must survive too.
            const seqs = () => sender.frames.filter((f) => typeof f.seq === 'number');
            const ended = () => seqs().filter((f) => f.type === 'agent_completed' || f.type === 'agent_error').length === terms.length;
            await sender.until(() => seqs().length >= killAfter || ended(), 10_000, `${killAfter} events before the kill, or the end of every run`);
            const victim = other();
            if (victim !== home) {
              victim.child.signal('SIGKILL');
              kills++;
              await victim.child.waitExit(10_000);
              cluster.nodes.splice(cluster.nodes.indexOf(victim), 1);
            }
          }
          for (const runId of expected.keys()) await sender.runEvents(runId, 20_000);
          try {
            await Promise.all(readers.map((r) => r.finished));
          } finally {
            for (const r of readers) r.stop();
          }
          const reference = sender.events();
          for (const reader of readers) expectExactAnswers(reader, reference, expected);
          resumes += readers.reduce((sum, r) => sum + r.dials - 1, 0);
          sender.close();
          if (cluster.nodes.length < 2) await cluster.startNode(`n-restart-${user}`);
        },
      ),
      fcParams(6, 45_000),
    );
    expect(resumes).toBeGreaterThan(3);
    expect(kills).toBeGreaterThan(0);
  }, 60_000);
});
