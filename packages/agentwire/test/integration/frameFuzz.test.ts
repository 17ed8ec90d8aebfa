import fc from 'fast-check';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { TestClient, type Frame } from '../helpers/wsClient.js';

/**
 * Issue 8 item 10: fuzzing over real sockets against one gateway (PROTOCOL.md sections 1, 4, 5,
 * 6 and 9). Arbitrary frames — prototype names as types and keys, values nested up to 10,000
 * deep, long strings, numbers such as 1e309 as raw text, invalid JSON, oversized and binary
 * frames — are sent before and after auth by several users at once. Invariants: the gateway's
 * process lives (it is this process), nothing is closed with 1011 and no fault is counted, every
 * connection that stays open answers every frame (in order, before the last ping's pong), every
 * other one ends with a contract close code, another user's run completes, and RSS stays bounded.
 *
 * Replaying a failure: fast-check prints `{ seed, path }`; run
 *   AGENTWIRE_FC_SEED=<seed> AGENTWIRE_FC_PATH=<path> npx vitest run test/frameFuzz.test.ts
 */

const PROTOTYPE_NAMES = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', 'prototype'];
const KNOWN_TYPES = ['auth', 'ping', 'user_message', 'cancel', 'refresh_token'];
const FIELDS = ['type', 'id', 'text', 'thread_id', 'run_id', 'token', 'last_seq', 'epoch', ...PROTOTYPE_NAMES];
/** Close codes the contract allows for what a fuzzing client can cause (section 9); never 1011. */
const CONTRACT_CLOSES = new Set([1008, 1009, 1013, 4401, 4408]);
const MAX_FRAME_BYTES = 64 * 1024;
const RSS_GROWTH_LIMIT = 512 * 1024 * 1024;

/** A raw JSON value as text; `nested` and the number spellings are what JSON.stringify cannot make. */
const rawValue: fc.Arbitrary<string> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value) ?? 'null'),
  fc.constantFrom(...KNOWN_TYPES, ...PROTOTYPE_NAMES).map((name) => JSON.stringify(name)),
  fc.constantFrom('1e309', '-1e309', '1e-400', '-0', '123456789012345678901234567890', '0.1e1', '1E+2'),
  fc.record({ depth: fc.oneof(fc.constant(10_000), fc.integer({ min: 1, max: 10_000 })), kind: fc.constantFrom('[', '{"a":', '{"__proto__":') }).map(
    // Capped to fit a frame, so that most nested values are read rather than refused as too big.
    ({ depth, kind }) => {
      const levels = Math.min(depth, Math.floor(60_000 / (kind.length + 1)));
      return kind.repeat(levels) + '1' + (kind === '[' ? ']' : '}').repeat(levels);
    },
  ),
  fc.integer({ min: 129, max: 30_000 }).map((length) => JSON.stringify('x'.repeat(length))),
);

/** One client frame: mostly a JSON object with fuzzed fields, sometimes not JSON or not text at all. */
type FuzzFrame = { kind: 'text'; text: string } | { kind: 'binary' };
const fuzzFrame: fc.Arbitrary<FuzzFrame> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .record({
        type: fc.oneof(
          fc.constantFrom(...KNOWN_TYPES, ...PROTOTYPE_NAMES).map((t) => JSON.stringify(t)),
          rawValue,
        ),
        fields: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })), rawValue), { maxLength: 4 }),
      })
      .map(({ type, fields }) => ({
        kind: 'text' as const,
        text: `{"type":${type}${fields.map(([key, value]) => `,${JSON.stringify(key)}:${value}`).join('')}}`,
      })),
  },
  { weight: 1, arbitrary: rawValue.map((text) => ({ kind: 'text' as const, text })) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map((text) => ({ kind: 'text' as const, text })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'binary' as const }) },
);

interface Session {
  readonly user: number;
  /** 'upgrade': token at the upgrade; 'frame-first': auth frame then the fuzz; 'frame-last': fuzz held, then auth. */
  readonly auth: 'upgrade' | 'frame-first' | 'frame-last';
  readonly frames: FuzzFrame[];
}
const sessionArb: fc.Arbitrary<Session> = fc.record({
  user: fc.nat(2),
  auth: fc.constantFrom('upgrade', 'frame-first', 'frame-last'),
  frames: fc.array(fuzzFrame, { minLength: 1, maxLength: 8 }),
});

let env: TestGateway;
let bystander: TestClient;
let rssBefore = 0;
beforeAll(async () => {
  // The bystander sends one message per round, and rounds (shrinking ones above all) can come
  // faster than the default 20 frames/s; a fuzz session sends at most 10 frames.
  env = await startGateway({ drainTimeoutMs: 500, maxFrameBytes: MAX_FRAME_BYTES, rateLimitPerSec: 1000, rateLimitBurst: 1000 });
  bystander = await env.ready('bystander');
  rssBefore = process.memoryUsage().rss;
});
afterAll(() => env.stop());

const isAnswer = (f: Frame) => ['error', 'pong', 'ack', 'token_refreshed'].includes(f.type);
let sessionCount = 0;

/** Runs one session and returns what broke the contract, or null. */
async function runSession(session: Session): Promise<string | null> {
  const userId = `fuzz-${session.user}`;
  const token = await env.token(userId);
  const client = new TestClient(env.url, session.auth === 'upgrade' ? { token } : { via: 'none' });
  env.clients.push(client);
  try {
    await client.opened;
  } catch {
    return 'upgrade refused';
  }
  const sentinel = `end-${++sessionCount}`;
  const send = (frame: FuzzFrame) => (frame.kind === 'binary' ? client.ws.send(Buffer.from('{}'), { binary: true }) : client.send(frame.text));
  if (session.auth === 'frame-first') client.send({ type: 'auth', token });
  for (const frame of session.frames) send(frame);
  if (session.auth === 'frame-last') client.send({ type: 'auth', token });
  client.send({ type: 'ping', id: sentinel });
  await Promise.race([client.closed, client.waitFor((f) => f.ref === sentinel || f.id === sentinel, 5000, `answer to ${sentinel}`)]);
  if (client.closeCode !== null) {
    return CONTRACT_CLOSES.has(client.closeCode) ? null : `closed with ${client.closeCode} ${client.closeReason}`;
  }
  // Open: every fuzzed frame was answered once (an auth frame after auth too), then the sentinel.
  const answers = client.frames.filter(isAnswer);
  const expected = session.frames.length + 1;
  if (answers.length !== expected) return `open with ${answers.length} answers to ${expected} frames: ${JSON.stringify(answers.map((f) => f.code ?? f.type))}`;
  client.close();
  return null;
}

it('arbitrary frames from several users before and after auth end no process, no connection with 1011, no other run', async () => {
  const seed = process.env.AGENTWIRE_FC_SEED;
  const path = process.env.AGENTWIRE_FC_PATH;
  let round = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(sessionArb, { minLength: 1, maxLength: 4 }), async (sessions) => {
      const ack = await bystander.message(`b-${++round}`, 'calm', '2+3*4');
      expect(ack).toMatchObject({ type: 'ack' });
      const problems = (await Promise.all(sessions.map(runSession))).filter((problem) => problem !== null);
      expect(problems).toEqual([]);
      const events = await bystander.runEvents(ack.run_id, 20_000);
      expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed' });
      expect(bystander.closeCode).toBeNull();
      const faults = (await env.gateway.metrics.faults.get()).values.reduce((sum, v) => sum + v.value, 0);
      expect(faults).toBe(0);
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(RSS_GROWTH_LIMIT);
    }),
    {
      numRuns: 100,
      verbose: 1,
      // Ends shrinking in time for fast-check to print the seed and counterexample before the test's timeout.
      interruptAfterTimeLimit: 60_000,
      markInterruptAsFailure: true,
      ...(seed ? { seed: Number(seed) } : {}),
      ...(path ? { path } : {}),
    },
  );
  // Every fuzz session is closed by now, but a close the client saw first (1009 from ws, say)
  // reaches the server's socket later: once only the bystander is left, nothing may stay held.
  await vi.waitFor(() => expect(env.gateway.connectionCount).toBe(1), { timeout: 10_000, interval: 10 });
  expect(env.gateway.heldBytes).toBe(0);
}, 120_000);
