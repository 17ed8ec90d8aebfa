import { Readable } from 'node:stream';
import { EventType, type BaseEvent } from '@ag-ui/core';
import { RunAgentInputSchema } from '@ag-ui/core/schemas';
import { EventEncoder } from '@ag-ui/encoder';
import { convertToModelMessages, simulateReadableStream, stepCountIs, streamText, tool, validateUIMessages, type UIMessage } from 'ai';
import { MockLanguageModelV3 } from 'ai/test';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { ConversationTurn } from '../../src/history/types.js';
import type { AgentRunInput, AgentStep } from '../../src/runs/agent.js';
import { createHttpAgent, type HttpAgentOptions } from '../../src/upstream/index.js';
import { PYTHON_AGENT_RUN_TYPES, startPythonAgent } from '../helpers/pythonAgent.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { runProblem } from '../helpers/runInvariants.js';
import { UpstreamServer, type UpstreamHandler } from '../helpers/upstreamServer.js';

/**
 * The four dialects of PROTOCOL.md section 15 against real producers: the Python example agent
 * (agentwire, NDJSON), a server emitting through the AG-UI reference encoder (ag-ui), a route
 * built on the AI SDK's streamText over its mock model (ai-sdk), and a stream in the documented
 * chat completion chunk format (openai). Each is checked at the step level (what the agent
 * yields) and, for the Python agent, through the gateway as durable events.
 */

/** A part of the mock model's stream (the provider's LanguageModelV3StreamPart, without depending on that package). */
type StreamPart = Awaited<ReturnType<MockLanguageModelV3['doStream']>>['stream'] extends ReadableStream<infer T> ? T : never;

const children = new ChildTracker();
let upstream: UpstreamServer | undefined;
let env: TestGateway | undefined;
afterEach(async () => {
  await env?.stop();
  await upstream?.stop();
  await children.killAll();
  env = undefined;
  upstream = undefined;
});

const HISTORY: ConversationTurn[] = [
  { role: 'user', text: 'hi' },
  { role: 'assistant', text: 'hello!' },
];

function input(text: string, history: readonly ConversationTurn[] = HISTORY): AgentRunInput {
  return { runId: 'run_1', userId: 'alice@example.com', threadId: 't1', messageId: 'm1', text, history, signal: new AbortController().signal };
}

async function collect(options: HttpAgentOptions, text: string): Promise<AgentStep[]> {
  const steps: AgentStep[] = [];
  for await (const step of createHttpAgent(options).run(input(text))) steps.push(step);
  return steps;
}

/** The text of a run's deltas of one kind. */
function joined(steps: readonly AgentStep[], type: 'text_delta' | 'thinking_delta'): string {
  return steps.map((s) => (s.type === type ? s.text : '')).join('');
}

describe('agentwire dialect: examples/python-agent/agent.py (python3, standard library only)', () => {
  it('streams thinking, a tool call and its result, and the answer token by token', async () => {
    const url = await startPythonAgent(children);
    const steps = await collect({ url }, 'count these four words');
    expect(steps.map((s) => s.type)).toEqual([
      'thinking_delta',
      'thinking_delta',
      'tool_call',
      'tool_result',
      'text_delta',
      'text_delta',
      'text_delta',
      'text_delta',
      'text_delta',
    ]);
    // The thread's earlier turns went with the request.
    expect(joined(steps, 'thinking_delta')).toBe('2 earlier turns. Counting the words.');
    expect(steps[2]).toEqual({ type: 'tool_call', callId: 'c1', tool: 'word_count', args: { text: 'count these four words' } });
    expect(steps[3]).toEqual({ type: 'tool_result', callId: 'c1', tool: 'word_count', ok: true, result: 4 });
    expect(joined(steps, 'text_delta')).toBe('Your message has 4 words.');
  });

  it('through the gateway: durable events in order, agent_completed.text is the deltas', async () => {
    env = await startGateway({ agent: createHttpAgent({ url: await startPythonAgent(children) }) });
    const client = await env.ready('alice');
    const ack = await client.message('m1', 't1', 'one two three');
    const events = await client.runEvents(ack.run_id);
    expect(runProblem(events)).toBeNull();
    expect(events.map((e) => e.type)).toEqual(PYTHON_AGENT_RUN_TYPES);
    const deltas = events
      .filter((e) => e.type === 'agent_text_delta')
      .map((e) => e.text)
      .join('');
    expect(deltas).toBe('Your message has 3 words.');
    expect(events.at(-1)).toMatchObject({ status: 'completed', text: deltas });
  });
});

describe('agentwire dialect over SSE', () => {
  it('reads one step per data field, and what the gateway sends is section 15 exactly', async () => {
    upstream = await new UpstreamServer(({ res }) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': a comment\n\n');
      res.write(`data: ${JSON.stringify({ type: 'thinking', text: 'a whole thought' })}\n\n`);
      res.write(`data: ${JSON.stringify({ type: 'something_new', x: 1 })}\n\n`);
      res.end(`data: ${JSON.stringify({ type: 'answer', text: 'done' })}\n\n`);
    }).start();
    expect(await collect({ url: upstream.url, headers: { 'x-api-key': 'k-123456' } }, 'now')).toEqual([
      { type: 'thinking', text: 'a whole thought' },
      { type: 'answer', text: 'done' },
    ]);
    const request = upstream.requests[0]!;
    expect(request.path).toBe('/run');
    expect(request.headers).toMatchObject({
      'content-type': 'application/json',
      accept: 'application/x-ndjson, text/event-stream',
      'x-agentwire-user': 'alice%40example.com',
      'x-agentwire-run': 'run_1',
      'x-api-key': 'k-123456',
    });
    expect(request.body).toEqual({
      run_id: 'run_1',
      thread_id: 't1',
      user_id: 'alice@example.com',
      message_id: 'm1',
      text: 'now',
      messages: [
        { role: 'user', text: 'hi' },
        { role: 'assistant', text: 'hello!' },
      ],
    });
  });
});

describe('ag-ui dialect: a server emitting through @ag-ui/encoder', () => {
  it('maps text, reasoning, a tool call and its result; RUN_FINISHED completes; the request is a valid RunAgentInput', async () => {
    const handler: UpstreamHandler = ({ res, headers }) => {
      const encoder = new EventEncoder({ accept: headers.accept });
      res.writeHead(200, { 'content-type': encoder.getContentType() });
      const events: BaseEvent[] = [
        { type: EventType.RUN_STARTED, threadId: 't1', runId: 'run_1' } as BaseEvent,
        { type: EventType.REASONING_START, messageId: 'r1' } as BaseEvent,
        { type: EventType.REASONING_MESSAGE_START, messageId: 'r1', role: 'reasoning' } as BaseEvent,
        { type: EventType.REASONING_MESSAGE_CONTENT, messageId: 'r1', delta: 'Let me ' } as BaseEvent,
        { type: EventType.REASONING_MESSAGE_CONTENT, messageId: 'r1', delta: 'count.' } as BaseEvent,
        { type: EventType.REASONING_MESSAGE_END, messageId: 'r1' } as BaseEvent,
        { type: EventType.REASONING_END, messageId: 'r1' } as BaseEvent,
        { type: EventType.TOOL_CALL_START, toolCallId: 'call-1', toolCallName: 'word_count' } as BaseEvent,
        { type: EventType.TOOL_CALL_ARGS, toolCallId: 'call-1', delta: '{"text":' } as BaseEvent,
        { type: EventType.TOOL_CALL_ARGS, toolCallId: 'call-1', delta: '"a b"}' } as BaseEvent,
        { type: EventType.TOOL_CALL_END, toolCallId: 'call-1' } as BaseEvent,
        { type: EventType.TOOL_CALL_RESULT, messageId: 'tool-1', toolCallId: 'call-1', content: '2' } as BaseEvent,
        { type: EventType.TEXT_MESSAGE_START, messageId: 'a1', role: 'assistant' } as BaseEvent,
        { type: EventType.TEXT_MESSAGE_CONTENT, messageId: 'a1', delta: 'Two ' } as BaseEvent,
        { type: EventType.TEXT_MESSAGE_CHUNK, messageId: 'a1', delta: 'words.' } as BaseEvent,
        { type: EventType.TEXT_MESSAGE_END, messageId: 'a1' } as BaseEvent,
        { type: EventType.RUN_FINISHED, threadId: 't1', runId: 'run_1' } as BaseEvent,
      ];
      res.end(events.map((event) => encoder.encode(event)).join(''));
    };
    upstream = await new UpstreamServer(handler).start();
    const steps = await collect({ url: upstream.url, protocol: 'ag-ui' }, 'a b');
    expect(steps).toEqual([
      { type: 'thinking_delta', text: 'Let me ' },
      { type: 'thinking_delta', text: 'count.' },
      { type: 'tool_call', callId: 'call-1', tool: 'word_count', args: { text: 'a b' } },
      { type: 'tool_result', callId: 'call-1', tool: 'word_count', ok: true, result: '2' },
      { type: 'text_delta', text: 'Two ' },
      { type: 'text_delta', text: 'words.' },
    ]);
    const request = upstream.requests[0]!;
    expect(request.headers.accept).toBe('text/event-stream');
    expect(RunAgentInputSchema.parse(request.body)).toMatchObject({ threadId: 't1', runId: 'run_1' });
    expect(request.body.messages).toEqual([
      { id: 't1-turn-1', role: 'user', content: 'hi' },
      { id: 't1-turn-2', role: 'assistant', content: 'hello!' },
      { id: 'm1', role: 'user', content: 'a b' },
    ]);
    expect(request.body).toMatchObject({ tools: [], context: [], state: {}, forwardedProps: {} });
  });

  it('RUN_ERROR fails with its message; a stream without RUN_FINISHED fails', async () => {
    let finish: 'error' | 'none' = 'error';
    upstream = await new UpstreamServer(({ res, headers }) => {
      const encoder = new EventEncoder({ accept: headers.accept });
      res.writeHead(200, { 'content-type': encoder.getContentType() });
      res.write(encoder.encode({ type: EventType.RUN_STARTED, threadId: 't1', runId: 'run_1' } as BaseEvent));
      res.end(finish === 'error' ? encoder.encode({ type: EventType.RUN_ERROR, message: 'graph exploded' } as BaseEvent) : '');
    }).start();
    await expect(collect({ url: upstream.url, protocol: 'ag-ui' }, 'x')).rejects.toThrow('the upstream agent failed: graph exploded');
    finish = 'none';
    await expect(collect({ url: upstream.url, protocol: 'ag-ui' }, 'x')).rejects.toThrow('the upstream AG-UI stream ended without RUN_FINISHED or RUN_ERROR');
  });
});

describe('ai-sdk dialect: a route built with streamText + toUIMessageStreamResponse() over MockLanguageModelV3', () => {
  it('maps reasoning, the tool call and its output, and the text; finish completes; the request holds valid UI messages', async () => {
    const usage = { inputTokens: { total: 3, noCache: 3, cacheRead: 0, cacheWrite: 0 }, outputTokens: { total: 5, text: 5, reasoning: 0 } };
    let calls = 0;
    const model = new MockLanguageModelV3({
      doStream: async () => ({
        stream: simulateReadableStream<StreamPart>({
          chunks:
            calls++ === 0
              ? [
                  { type: 'stream-start', warnings: [] },
                  { type: 'reasoning-start', id: 'r1' },
                  { type: 'reasoning-delta', id: 'r1', delta: 'Counting ' },
                  { type: 'reasoning-delta', id: 'r1', delta: 'words.' },
                  { type: 'reasoning-end', id: 'r1' },
                  { type: 'tool-call', toolCallId: 'tc1', toolName: 'word_count', input: '{"text":"a b c"}' },
                  { type: 'finish', finishReason: { unified: 'tool-calls', raw: undefined }, usage },
                ]
              : [
                  { type: 'stream-start', warnings: [] },
                  { type: 'text-start', id: 't1' },
                  { type: 'text-delta', id: 't1', delta: 'Three ' },
                  { type: 'text-delta', id: 't1', delta: 'words.' },
                  { type: 'text-end', id: 't1' },
                  { type: 'finish', finishReason: { unified: 'stop', raw: undefined }, usage },
                ],
        }),
      }),
    });
    upstream = await new UpstreamServer(async ({ res, body }) => {
      const messages = await validateUIMessages<UIMessage>({ messages: body.messages });
      const result = streamText({
        model,
        messages: await convertToModelMessages(messages),
        tools: {
          word_count: tool({ inputSchema: z.object({ text: z.string() }), execute: async ({ text }) => text.split(' ').length }),
        },
        stopWhen: stepCountIs(2),
      });
      const response = result.toUIMessageStreamResponse();
      const headers: Record<string, string> = {};
      response.headers.forEach((value, name) => (headers[name] = value));
      res.writeHead(response.status, headers);
      Readable.fromWeb(response.body! as Parameters<typeof Readable.fromWeb>[0]).pipe(res);
    }).start();
    const steps = await collect({ url: upstream.url, protocol: 'ai-sdk' }, 'a b c');
    expect(steps).toEqual([
      { type: 'thinking_delta', text: 'Counting ' },
      { type: 'thinking_delta', text: 'words.' },
      { type: 'tool_call', callId: 'tc1', tool: 'word_count', args: { text: 'a b c' } },
      { type: 'tool_result', callId: 'tc1', tool: 'word_count', ok: true, result: 3 },
      { type: 'text_delta', text: 'Three ' },
      { type: 'text_delta', text: 'words.' },
    ]);
    const { body } = upstream.requests[0]!;
    expect(body).toEqual({
      id: 't1',
      trigger: 'submit-message',
      messages: [
        { id: 't1-turn-1', role: 'user', parts: [{ type: 'text', text: 'hi' }] },
        { id: 't1-turn-2', role: 'assistant', parts: [{ type: 'text', text: 'hello!' }] },
        { id: 'm1', role: 'user', parts: [{ type: 'text', text: 'a b c' }] },
      ],
    });
  });

  it('a tool that throws is a tool result with ok false; an error chunk fails the run', async () => {
    upstream = await new UpstreamServer(({ res, body }) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-vercel-ai-ui-message-stream': 'v1' });
      const chunks =
        body.messages.at(-1).parts[0].text === 'tool'
          ? [
              { type: 'start' },
              { type: 'tool-input-available', toolCallId: 'x', toolName: 'search', input: { q: 'a' } },
              { type: 'tool-output-error', toolCallId: 'x', errorText: 'index offline' },
              { type: 'finish' },
            ]
          : [{ type: 'start' }, { type: 'error', errorText: 'rate limited' }];
      res.end(`${chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('')}data: [DONE]\n\n`);
    }).start();
    expect(await collect({ url: upstream.url, protocol: 'ai-sdk' }, 'tool')).toEqual([
      { type: 'tool_call', callId: 'x', tool: 'search', args: { q: 'a' } },
      { type: 'tool_result', callId: 'x', tool: 'search', ok: false, result: { error: 'index offline' } },
    ]);
    await expect(collect({ url: upstream.url, protocol: 'ai-sdk' }, 'other')).rejects.toThrow('the upstream agent failed: rate limited');
  });
});

describe('openai dialect: the documented chat completion chunk stream', () => {
  const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'qwen3',
    choices: [{ index: 0, delta, finish_reason: finish }],
  });

  it('POSTs <url>/chat/completions; reasoning_content and reasoning become thinking, content text; usage chunk ignored; [DONE] completes', async () => {
    upstream = await new UpstreamServer(({ res }) => {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
      const chunks = [
        chunk({ role: 'assistant', content: '' }),
        chunk({ reasoning_content: 'The user ' }),
        chunk({ reasoning: 'greets me.' }),
        chunk({ content: 'Hello' }),
        chunk({ content: ' there!' }),
        chunk({}, 'stop'),
        {
          id: 'chatcmpl-1',
          object: 'chat.completion.chunk',
          created: 1,
          model: 'qwen3',
          choices: [],
          usage: { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13 },
        },
      ];
      res.end(`${chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('')}data: [DONE]\n\n`);
    }).start('/v1/');
    const steps = await collect({ url: upstream.url, protocol: 'openai', model: 'qwen3', headers: { authorization: 'Bearer sk-local' } }, 'hello');
    expect(steps).toEqual([
      { type: 'thinking_delta', text: 'The user ' },
      { type: 'thinking_delta', text: 'greets me.' },
      { type: 'text_delta', text: 'Hello' },
      { type: 'text_delta', text: ' there!' },
    ]);
    const request = upstream.requests[0]!;
    expect(request.path).toBe('/v1/chat/completions');
    expect(request.headers).toMatchObject({ authorization: 'Bearer sk-local', accept: 'text/event-stream', 'x-agentwire-run': 'run_1' });
    expect(request.body).toEqual({
      model: 'qwen3',
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'hello!' },
        { role: 'user', content: 'hello' },
      ],
      stream: true,
    });
  });

  it('an error object fails with its message; a stream without [DONE] fails', async () => {
    let answer = 'error';
    upstream = await new UpstreamServer(({ res }) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(
        answer === 'error'
          ? `data: ${JSON.stringify({ error: { message: 'context length exceeded', type: 'invalid_request_error' } })}\n\n`
          : `data: ${JSON.stringify(chunk({ content: 'Hel' }))}\n\n`,
      );
    }).start('/v1');
    await expect(collect({ url: upstream.url, protocol: 'openai', model: 'm' }, 'x')).rejects.toThrow('the upstream model failed: context length exceeded');
    answer = 'cut';
    await expect(collect({ url: upstream.url, protocol: 'openai', model: 'm' }, 'x')).rejects.toThrow(
      'the upstream chat completion stream ended without [DONE]',
    );
  });
});
