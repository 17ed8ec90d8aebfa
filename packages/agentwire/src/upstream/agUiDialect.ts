import {
  DONE,
  MAX_TOOL_CALLS,
  MAX_TOOL_CALL_CHARS,
  NOTHING,
  ToolCalls,
  argsObject,
  sseOnly,
  type Decoded,
  type Dialect,
  type StreamDecoder,
} from './dialect.js';
import { UpstreamFailure, isRecord, parseJson, quoted, stringField } from './failure.js';
import { MAX_MESSAGE_BYTES } from './framing.js';

/**
 * The `ag-ui` dialect (section 15): the request is AG-UI's RunAgentInput, the answer AG-UI
 * events over SSE. Text and reasoning content become deltas, a tool call's START/ARGS/END one
 * `tool_call` (arguments parsed from the concatenated ARGS), TOOL_CALL_RESULT its result;
 * RUN_FINISHED completes, RUN_ERROR fails, and a stream without either fails.
 */
export const agUiDialect: Dialect = {
  name: 'ag-ui',
  accept: 'text/event-stream',
  target: (url) => url,
  body: ({ input, history }) => ({
    threadId: input.threadId,
    runId: input.runId,
    messages: [
      // Earlier turns have no ids of their own in the history: they are numbered within the thread.
      ...history.map((turn, index) => ({ id: `${input.threadId}-turn-${index + 1}`, role: turn.role, content: turn.text })),
      { id: input.messageId, role: 'user', content: input.text },
    ],
    tools: [],
    context: [],
    state: {},
    forwardedProps: {},
  }),
  framing: sseOnly,
  decoder: () => new AgUiDecoder(),
};

interface OpenToolCall {
  readonly tool: string;
  args: string;
}

class AgUiDecoder implements StreamDecoder {
  readonly #calls = new ToolCalls();
  /** Tool calls between START and END, with their arguments so far. */
  readonly #open = new Map<string, OpenToolCall>();
  /** Bytes of arguments held for open calls, all together: a bound like the line bound. */
  #openArgsChars = 0;
  /** Characters of the open calls' ids and tool names, bounded like announced ones. */
  #openNameChars = 0;
  #count = 0;

  decode(message: string): Decoded {
    const what = `AG-UI event ${++this.#count}`;
    const event = parseJson(message, what);
    if (!isRecord(event)) throw new UpstreamFailure(`${what} is not a JSON object`);
    const type = stringField(event, 'type', what);
    switch (type) {
      case 'TEXT_MESSAGE_CONTENT':
      case 'TEXT_MESSAGE_CHUNK':
        return delta('text_delta', event, type === 'TEXT_MESSAGE_CONTENT', what);
      case 'REASONING_MESSAGE_CONTENT':
      case 'REASONING_MESSAGE_CHUNK':
        return delta('thinking_delta', event, type === 'REASONING_MESSAGE_CONTENT', what);
      case 'TOOL_CALL_START': {
        const callId = stringField(event, 'toolCallId', what);
        const tool = stringField(event, 'toolCallName', what);
        if (this.#open.has(callId)) this.#close(callId);
        if (this.#open.size >= MAX_TOOL_CALLS) throw new UpstreamFailure(`the upstream opened more than ${MAX_TOOL_CALLS} tool calls`);
        this.#openNameChars += callId.length + tool.length;
        if (this.#openNameChars > MAX_TOOL_CALL_CHARS)
          throw new UpstreamFailure('the call ids and tool names of the upstream’s open tool calls are over 4 MiB');
        this.#open.set(callId, { tool, args: '' });
        return NOTHING;
      }
      case 'TOOL_CALL_ARGS': {
        const call = this.#openCall(event, what);
        const chunk = stringField(event, 'delta', what);
        this.#openArgsChars += chunk.length;
        if (this.#openArgsChars > MAX_MESSAGE_BYTES) throw new UpstreamFailure('the upstream sent tool call arguments over 1 MiB');
        call.args += chunk;
        return NOTHING;
      }
      case 'TOOL_CALL_END': {
        const call = this.#openCall(event, what);
        const callId = stringField(event, 'toolCallId', what);
        this.#close(callId);
        const args = call.args.trim() === '' ? {} : parseJson(call.args, `the arguments of tool call ${JSON.stringify(callId.slice(0, 100))}`);
        this.#calls.announce(callId, call.tool);
        return { steps: [{ type: 'tool_call', callId, tool: call.tool, args: argsObject(args) }], done: false };
      }
      case 'TOOL_CALL_RESULT': {
        const callId = stringField(event, 'toolCallId', what);
        return { steps: [{ type: 'tool_result', callId, tool: this.#calls.toolOf(callId), ok: true, result: event.content ?? null }], done: false };
      }
      case 'RUN_FINISHED':
        return DONE;
      case 'RUN_ERROR':
        throw new UpstreamFailure(`the upstream agent failed: ${typeof event.message === 'string' ? quoted(event.message) : '(no message)'}`);
      default:
        return NOTHING;
    }
  }

  ended(): void {
    throw new UpstreamFailure('the upstream AG-UI stream ended without RUN_FINISHED or RUN_ERROR');
  }

  /** Forgets an open call and what it held. */
  #close(callId: string): void {
    const call = this.#open.get(callId)!;
    this.#open.delete(callId);
    this.#openArgsChars -= call.args.length;
    this.#openNameChars -= callId.length + call.tool.length;
  }

  #openCall(event: Record<string, unknown>, what: string): OpenToolCall {
    const callId = stringField(event, 'toolCallId', what);
    const call = this.#open.get(callId);
    if (call === undefined) throw new UpstreamFailure(`${what} refers to tool call ${JSON.stringify(callId.slice(0, 100))}, which has no TOOL_CALL_START`);
    return call;
  }
}

/** A text or reasoning fragment; a CHUNK event may leave its `delta` out. */
function delta(type: 'text_delta' | 'thinking_delta', event: Record<string, unknown>, required: boolean, what: string): Decoded {
  if (!required && event.delta === undefined) return NOTHING;
  return { steps: [{ type, text: stringField(event, 'delta', what) }], done: false };
}
