import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { agentwireDialect } from '../../src/upstream/agentwireDialect.js';
import { agUiDialect } from '../../src/upstream/agUiDialect.js';
import { aiSdkDialect } from '../../src/upstream/aiSdkDialect.js';
import type { Dialect } from '../../src/upstream/dialect.js';
import { AGENT_PROTOCOLS, createHttpAgent, type AgentProtocol } from '../../src/upstream/index.js';
import { openaiDialect } from '../../src/upstream/openaiDialect.js';
import { sseData } from '../../src/upstream/framing.js';
import { fcParams } from '../helpers/fastCheck.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { httpGet } from '../helpers/http.js';
import { runProblem } from '../helpers/runInvariants.js';
import { ndjsonHead, UpstreamServer, type UpstreamHandler } from '../helpers/upstreamServer.js';
import { startRun, type Frame, type TestClient } from '../helpers/wsClient.js';

/**
 * A hostile upstream agent (PROTOCOL.md section 15): whatever it sends, the run it serves ends
 * with a documented outcome (completed, or agent_error agent_failed naming the cause), the gateway
 * keeps serving, and another user's run at the same time completes untouched. The upstreams are
 * real HTTP servers on 127.0.0.1; the gateway is the real one over WebSockets.
 */

let env: TestGateway | undefined;
let upstream: UpstreamServer | undefined;
const servers: Server[] = [];

afterEach(async () => {
  await env?.stop();
  await upstream?.stop();
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  env = undefined;
  upstream = undefined;
});

/** Answers the run whose text is "ok" in the dialect's own words; every other run with `attack`. */
function upstreamWith(protocol: AgentProtocol, attack: UpstreamHandler): UpstreamHandler {
  return (request, req) => {
    const text = protocol === 'agentwire' ? request.body?.text : JSON.stringify(request.body?.messages?.at(-1));
    if (!String(text).includes('"ok"') && text !== 'ok') return attack(request, req);
    healthyAnswer(protocol, request.res);
  };
}

function sseHead(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.flushHeaders();
}

const sse = (value: unknown) => `data: ${typeof value === 'string' ? value : JSON.stringify(value)}\n\n`;

/** "all fine", streamed in the dialect. */
function healthyAnswer(protocol: AgentProtocol, res: ServerResponse): void {
  const parts = ['all ', 'fine'];
  if (protocol === 'agentwire') {
    ndjsonHead(res);
    res.end(parts.map((text) => `${JSON.stringify({ type: 'text_delta', text })}\n`).join(''));
    return;
  }
  sseHead(res);
  if (protocol === 'ag-ui')
    res.end(parts.map((delta) => sse({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm', delta })).join('') + sse({ type: 'RUN_FINISHED' }));
  if (protocol === 'ai-sdk') res.end(parts.map((delta) => sse({ type: 'text-delta', id: 't', delta })).join('') + sse({ type: 'finish' }));
  if (protocol === 'openai') res.end(parts.map((content) => sse({ choices: [{ delta: { content } }] })).join('') + sse('[DONE]'));
}

async function setUp(attack: UpstreamHandler, protocol: AgentProtocol = 'agentwire'): Promise<{ mallory: TestClient; alice: TestClient }> {
  upstream = await new UpstreamServer(upstreamWith(protocol, attack)).start('/v1');
  env = await startGateway({ agent: createHttpAgent({ url: upstream.url, protocol, ...(protocol === 'openai' ? { model: 'm' } : {}) }) });
  return { mallory: await env.ready('mallory'), alice: await env.ready('alice') };
}

async function terminal(client: TestClient, runId: string, timeoutMs = 10_000): Promise<Frame> {
  const events = await client.runEvents(runId, timeoutMs);
  expect(runProblem(events)).toBeNull();
  return events.at(-1)!;
}

/**
 * Mallory's run meets the attack while Alice's healthy run goes on; Alice's completes as usual,
 * the gateway still answers /healthz, and Mallory's run's terminal event is returned.
 */
async function attacked(clients: { mallory: TestClient; alice: TestClient }, timeoutMs?: number): Promise<Frame> {
  const hostile = await startRun(clients.mallory, 'attack');
  const healthy = await startRun(clients.alice, 'ok');
  const outcome = await terminal(clients.mallory, hostile, timeoutMs);
  expect(await terminal(clients.alice, healthy)).toMatchObject({ type: 'agent_completed', status: 'completed', text: 'all fine' });
  expect((await httpGet(`http://127.0.0.1:${env!.port}/healthz`)).status).toBe(200);
  return outcome;
}

const nested = (depth: number, leaf: string) => '{"a":'.repeat(depth) + leaf + '}'.repeat(depth);
const failedWith = (message: RegExp) => ({ type: 'agent_error', code: 'agent_failed', message: expect.stringMatching(message) });

describe('a hostile upstream ends only its own run, with a documented outcome', () => {
  it('SSE data lines interleaved with comments cannot build an event past 1 MiB', async () => {
    // Each comment used to reset the byte count of the unfinished event that it sits inside.
    const clients = await setUp((request) => {
      sseHead(request.res);
      const line = `data: ${'x'.repeat(64 * 1024)}\n: keep-alive\n`;
      // Two MiB of one event, never finished: the gateway must stop reading well before its end.
      for (let i = 0; i < 32; i++) request.res.write(line);
      request.res.end('\n');
    });
    expect(await attacked(clients)).toMatchObject(failedWith(/an event over 1 MiB/));
  });

  it('a flood of comments and retry fields with no event stops at the event bound', async () => {
    const clients = await setUp((request) => {
      sseHead(request.res);
      const flood = `retry: 99999999999999999999999\n: ${'c'.repeat(1000)}\n`.repeat(64);
      for (let i = 0; i < 24; i++) request.res.write(flood);
      request.res.end();
    });
    expect(await attacked(clients)).toMatchObject(failedWith(/an event over 1 MiB/));
  });

  it.each([
    ['agentwire', 'tool_call args', (leaf: string) => `{"type":"tool_call","call_id":"c","tool":"t","args":${nested(50_000, leaf)}}\n`],
    [
      'agentwire',
      'tool_result result',
      (leaf: string) =>
        `{"type":"tool_call","call_id":"c","tool":"t","args":{}}\n{"type":"tool_result","call_id":"c","ok":true,"result":${nested(50_000, leaf)}}\n`,
    ],
    ['agentwire', 'an unknown step', (leaf: string) => `{"type":"mystery","x":${nested(50_000, leaf)}}\n`],
  ] as const)('JSON nested 50 000 deep (%s %s) fails the run instead of the serializer', async (_dialect, _where, body) => {
    const clients = await setUp((request) => {
      ndjsonHead(request.res);
      request.res.end(body('1'));
    });
    expect(await attacked(clients)).toMatchObject(failedWith(/nested deeper than 128/));
  });

  it('deep JSON in the SSE dialects: ag-ui ARGS, ai-sdk input, openai chunk', async () => {
    for (const [protocol, body] of [
      [
        'ag-ui',
        sse({ type: 'TOOL_CALL_START', toolCallId: 'c', toolCallName: 't' }) +
          sse({ type: 'TOOL_CALL_ARGS', toolCallId: 'c', delta: nested(20_000, '1') }) +
          sse({ type: 'TOOL_CALL_END', toolCallId: 'c' }),
      ],
      ['ai-sdk', `data: {"type":"tool-input-available","toolCallId":"c","toolName":"t","input":${nested(20_000, '1')}}\n\n`],
      ['openai', `data: {"choices":[{"delta":{"content":"x"}}],"x":${nested(20_000, '1')}}\n\n`],
    ] as const) {
      const clients = await setUp((request) => {
        sseHead(request.res);
        request.res.end(body);
      }, protocol);
      expect(await attacked(clients)).toMatchObject(failedWith(/nested deeper than 128/));
      await env!.stop();
      await upstream!.stop();
      env = undefined;
      upstream = undefined;
    }
  });

  it('call ids named __proto__ / constructor are data: a result for an unannounced one fails, announced ones pair up', async () => {
    const clients = await setUp((request) => {
      ndjsonHead(request.res);
      request.res.end(
        [
          { type: 'tool_call', call_id: '__proto__', tool: 'constructor', args: { __proto__: { polluted: true }, constructor: 1 } },
          { type: 'tool_result', call_id: '__proto__', ok: true, result: { ['__proto__']: 1 } },
          { type: 'tool_result', call_id: 'constructor', ok: true, result: null },
        ]
          .map((step) => `${JSON.stringify(step)}\n`)
          .join(''),
      );
    });
    const outcome = await attacked(clients);
    expect(outcome).toMatchObject(failedWith(/tool result for call "constructor", which it never announced/));
    const events = clients.mallory.events().filter((event) => event.run_id === outcome.run_id);
    expect(events.map((event) => event.type)).toEqual(['agent_started', 'tool_executing', 'tool_completed', 'agent_error']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('open ag-ui tool calls cannot make the run remember more than 4 MiB of call ids and tool names', async () => {
    const clients = await setUp((request) => {
      sseHead(request.res);
      for (let i = 0; i < 6; i++) request.res.write(sse({ type: 'TOOL_CALL_START', toolCallId: `c${i}`, toolCallName: 'n'.repeat(900 * 1024) }));
      request.res.end(sse({ type: 'RUN_FINISHED' }));
    }, 'ag-ui');
    expect(await attacked(clients)).toMatchObject(failedWith(/open tool calls are over 4 MiB/));
  });

  it('events out of order: a result before its call fails; deltas after the end are never shown', async () => {
    let clients = await setUp((request) => {
      ndjsonHead(request.res);
      request.res.end('{"type":"tool_result","call_id":"c","tool":"t","ok":true,"result":1}\n{"type":"tool_call","call_id":"c","tool":"t","args":{}}\n');
    });
    expect(await attacked(clients)).toMatchObject(failedWith(/never announced/));
    await env!.stop();
    await upstream!.stop();
    clients = await setUp((request) => {
      sseHead(request.res);
      request.res.end(
        sse({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm', delta: 'done' }) +
          sse({ type: 'RUN_FINISHED' }) +
          sse({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm', delta: 'LATE' }),
      );
    }, 'ag-ui');
    expect(await attacked(clients)).toMatchObject({ type: 'agent_completed', status: 'completed', text: 'done' });
  });

  it('invalid UTF-8 becomes U+FFFD, in NDJSON and in SSE', async () => {
    for (const protocol of ['agentwire', 'openai'] as const) {
      const clients = await setUp((request) => {
        const bad = Buffer.from([0xff, 0xc3, 0x28, 0xed, 0xa0, 0x80]);
        if (protocol === 'agentwire') {
          ndjsonHead(request.res);
          request.res.end(Buffer.concat([Buffer.from('{"type":"text_delta","text":"a'), bad, Buffer.from('b"}\n')]));
        } else {
          sseHead(request.res);
          request.res.end(Buffer.concat([Buffer.from('data: {"choices":[{"delta":{"content":"a'), bad, Buffer.from('b"}}]}\n\ndata: [DONE]\n\n')]));
        }
      }, protocol);
      const outcome = await attacked(clients);
      expect(outcome).toMatchObject({ type: 'agent_completed', status: 'completed' });
      expect(outcome.text).toMatch(/^a\uFFFD+\(\uFFFD+b$/);
      await env!.stop();
      await upstream!.stop();
      env = undefined;
      upstream = undefined;
    }
  });

  it('a redirect to another host is not followed', async () => {
    let elsewhere = 0;
    const other = createServer((_req, res) => {
      elsewhere++;
      res.end();
    });
    servers.push(other);
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const clients = await setUp((request) => {
      request.res.writeHead(307, { location: `http://127.0.0.1:${(other.address() as AddressInfo).port}/steal` });
      request.res.end();
    });
    expect(await attacked(clients)).toMatchObject(failedWith(/answered HTTP 307/));
    expect(elsewhere).toBe(0);
  });

  it('a gzip bomb is not inflated: the compressed bytes are read as they are and fail', async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, '{"type":"text_delta","text":"a"}\n'));
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const clients = await setUp((request) => {
      request.res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' });
      request.res.end(bomb);
    });
    const before = process.memoryUsage().rss;
    expect(await attacked(clients)).toMatchObject(failedWith(/is not JSON|over 1 MiB|in the middle of a line/));
    expect(process.memoryUsage().rss - before).toBeLessThan(48 * 1024 * 1024);
  });

  it('a response with 10 000 headers fails the run naming the parse error', async () => {
    const clients = await setUp((request) => {
      const socket = request.res.socket!;
      const headers = Array.from({ length: 10_000 }, (_, i) => `x-h${i}: v\r\n`).join('');
      socket.end(`HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n${headers}\r\n{"type":"text_delta","text":"x"}\n`);
    });
    expect(await attacked(clients)).toMatchObject(failedWith(/could not reach the upstream agent.*(Header overflow|HPE_HEADER_OVERFLOW)/));
  });

  it('an answer over 16 MiB in all fails the run: one upstream cannot fill the gateway for the whole run timeout', async () => {
    const clients = await setUp(async (request) => {
      ndjsonHead(request.res);
      // Steps of an unknown type: the bound is on the body, and no event floods the test's client.
      const step = `${JSON.stringify({ type: 'noise', text: 'z'.repeat(256 * 1024) })}\n`;
      for (let i = 0; i < 80 && !request.closed; i++) {
        if (!request.res.write(step)) await new Promise((resolve) => request.res.once('drain', resolve));
      }
      request.res.end();
    });
    expect(await attacked(clients)).toMatchObject(failedWith(/^the upstream sent over 16 MiB in one run$/));
  });

  it('a slow stream of many small deltas keeps the gateway answering other users', async () => {
    // Half a megabyte in 4 KiB steps, each waiting for the gateway to read it (TCP backpressure).
    const clients = await setUp(async (request) => {
      ndjsonHead(request.res);
      const step = `${JSON.stringify({ type: 'text_delta', text: 'y'.repeat(4096) })}\n`;
      for (let i = 0; i < 128; i++) {
        if (!request.res.write(step)) await new Promise((resolve) => request.res.once('drain', resolve));
      }
      request.res.end();
    });
    const outcome = await attacked(clients);
    expect(outcome).toMatchObject({ type: 'agent_completed', status: 'completed' });
    expect(outcome.text).toHaveLength(128 * 4096);
  });
});

describe('properties of the dialect decoders', () => {
  const dialects: ReadonlyMap<AgentProtocol, Dialect> = new Map<AgentProtocol, Dialect>([
    ['agentwire', agentwireDialect],
    ['ag-ui', agUiDialect],
    ['ai-sdk', aiSdkDialect],
    ['openai', openaiDialect],
  ]);

  const hostileJson = fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', 'tool_call', '[DONE]'),
      fc.string(),
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(fc.constantFrom('type', 'text', 'delta', 'call_id', 'toolCallId', 'tool', 'args', 'ok', 'result', '__proto__', 'choices'), tie('value'), {
        maxKeys: 5,
      }),
    ),
  })).value;

  /** Messages shaped like each dialect's, with hostile fields, plus deep nesting and junk. */
  const message = fc.oneof(
    hostileJson.map((value) => JSON.stringify(value) ?? 'null'),
    fc
      .record({
        type: fc.constantFrom(
          'text_delta',
          'tool_call',
          'tool_result',
          'answer',
          'error',
          'TOOL_CALL_START',
          'TOOL_CALL_ARGS',
          'TOOL_CALL_END',
          'TOOL_CALL_RESULT',
          'RUN_FINISHED',
          'text-delta',
          'tool-input-available',
          'tool-output-available',
          'finish',
        ),
        call_id: fc.constantFrom('__proto__', 'constructor', 'c1'),
        toolCallId: fc.constantFrom('__proto__', 'constructor', 'c1'),
        tool: fc.string(),
        toolCallName: fc.string(),
        toolName: fc.string(),
        text: fc.string(),
        delta: fc.oneof(
          fc.string(),
          fc.integer({ min: 1, max: 400 }).map((depth) => nested(depth, '1')),
        ),
        ok: fc.boolean(),
        args: hostileJson,
        input: hostileJson,
        result: hostileJson,
      })
      .map((step) => JSON.stringify(step)),
    // Deep enough to overflow JSON.stringify's recursion.
    fc.integer({ min: 100, max: 40_000 }).map((depth) => `{"type":"tool_call","call_id":"d","tool":"t","args":${nested(depth, '1')}}`),
    fc.integer({ min: 100, max: 40_000 }).map((depth) => `{"choices":[{"delta":{"content":"x"}}],"x":${'['.repeat(depth)}${']'.repeat(depth)}}`),
    fc.constantFrom('[DONE]', '', '{', 'null', '"text"'),
  );

  it('a run announces at most 10 000 tool calls, in every dialect that announces them', () => {
    const announce: ReadonlyMap<AgentProtocol, (i: number) => string> = new Map<AgentProtocol, (i: number) => string>([
      ['agentwire', (i) => JSON.stringify({ type: 'tool_call', call_id: `__proto__${i}`, tool: 'constructor', args: {} })],
      ['ai-sdk', (i) => JSON.stringify({ type: 'tool-input-available', toolCallId: `c${i}`, toolName: 't', input: {} })],
      ['ag-ui', (i) => JSON.stringify({ type: 'TOOL_CALL_START', toolCallId: `c${i}`, toolCallName: 't' })],
    ]);
    for (const [protocol, message] of announce) {
      const decoder = dialects.get(protocol)!.decoder();
      for (let i = 0; i < 10_000; i++) decoder.decode(message(i));
      expect(() => decoder.decode(message(10_000)), protocol).toThrow(/more than 10000 tool calls/);
    }
  });

  it('announced tool calls cannot make the run remember more than 4 MiB of call ids and tool names', () => {
    for (const [protocol, message] of [
      ['agentwire', (id: string) => JSON.stringify({ type: 'tool_call', call_id: id, tool: 't', args: {} })],
      ['ai-sdk', (id: string) => JSON.stringify({ type: 'tool-input-available', toolCallId: id, toolName: 't', input: {} })],
    ] as const) {
      const decoder = dialects.get(protocol)!.decoder();
      for (let i = 0; i < 4; i++) decoder.decode(message(`${i}-${'i'.repeat(900 * 1024)}`));
      expect(() => decoder.decode(message(`4-${'i'.repeat(900 * 1024)}`)), protocol).toThrow(/tool calls are over 4 MiB/);
    }
  });

  it('SSE: whatever mix of data, comment, field and blank lines, cut in chunks of at most 8 bytes, no event passes the bound by more than a chunk', async () => {
    const maxBytes = 32;
    const data = fc.string({ minLength: 4, maxLength: 16 }).map((text) => `data: ${text.replace(/[\r\n]/g, '')}\n`);
    const comment = fc.string({ maxLength: 8 }).map((text) => `: ${text.replace(/[\r\n]/g, '')}\n`);
    const line = fc.oneof(
      // A data line with a comment after it: what used to reset the count of an unfinished event.
      { arbitrary: fc.tuple(data, comment).map(([d, c]) => d + c), weight: 4 },
      { arbitrary: data, weight: 1 },
      { arbitrary: comment, weight: 1 },
      { arbitrary: fc.constantFrom('retry: 99999999999999999999\n', 'id: x\n', 'event: e\n', '\n'), weight: 2 },
    );
    async function* inChunks(body: Buffer, size: number): AsyncGenerator<Buffer> {
      for (let at = 0; at < body.length; at += size) yield body.subarray(at, at + size);
    }
    await fc.assert(
      fc.asyncProperty(fc.array(line, { maxLength: 40 }), fc.integer({ min: 1, max: 8 }), async (lines, size) => {
        try {
          for await (const event of sseData(inChunks(Buffer.from(lines.join('')), size), maxBytes)) {
            expect(Buffer.byteLength(event)).toBeLessThanOrEqual(maxBytes + size);
          }
        } catch (error) {
          expect((error as Error).message).toMatch(/an event over 32 bytes|in the middle of an event/);
        }
      }),
      fcParams(300, 8000),
    );
  });

  // A step becomes an event that is serialized (log, socket, archive): it must serialize.
  it('any message sequence either yields steps that serialize, or fails with an UpstreamFailure', () => {
    fc.assert(
      fc.property(fc.constantFrom(...AGENT_PROTOCOLS), fc.array(message, { maxLength: 12 }), (protocol, sequence) => {
        const decoder = dialects.get(protocol)!.decoder();
        const announced = new Set<string>();
        for (const text of sequence) {
          let decoded;
          try {
            decoded = decoder.decode(text);
          } catch (error) {
            expect((error as Error).name).toBe('UpstreamFailure');
            return;
          }
          for (const step of decoded.steps) {
            expect(typeof JSON.stringify(step)).toBe('string');
            // Section 7: a tool result only for a call announced before it.
            if (step.type === 'tool_call') announced.add(step.callId);
            if (step.type === 'tool_result') expect(announced.has(step.callId)).toBe(true);
          }
          if (decoded.done) return;
        }
      }),
      fcParams(300, 8000),
    );
  });
});
