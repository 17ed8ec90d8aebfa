import { DONE, NOTHING, ToolCalls, argsObject, sseOnly, type Decoded, type Dialect, type StreamDecoder } from './dialect.js';
import { UpstreamFailure, isRecord, parseJson, quoted, stringField } from './failure.js';

/**
 * The `ai-sdk` dialect (section 15): the request is what the AI SDK's default chat transport
 * POSTs, the answer a UI message stream (SSE). Text and reasoning deltas become deltas,
 * `tool-input-available` a tool call, `tool-output-available` / `tool-output-error` its result;
 * `error` and `abort` fail the run, `finish` completes it.
 */
export const aiSdkDialect: Dialect = {
  name: 'ai-sdk',
  accept: 'text/event-stream',
  target: (url) => url,
  body: ({ input, history }) => ({
    id: input.threadId,
    messages: [
      ...history.map((turn, index) => ({ id: `${input.threadId}-turn-${index + 1}`, role: turn.role, parts: [{ type: 'text', text: turn.text }] })),
      { id: input.messageId, role: 'user', parts: [{ type: 'text', text: input.text }] },
    ],
    trigger: 'submit-message',
  }),
  framing: sseOnly,
  decoder: () => new AiSdkDecoder(),
};

class AiSdkDecoder implements StreamDecoder {
  readonly #calls = new ToolCalls();
  #count = 0;

  decode(message: string): Decoded {
    const what = `UI message stream chunk ${++this.#count}`;
    // The stream's own end marker, after `finish`.
    if (message === '[DONE]') return DONE;
    const chunk = parseJson(message, what);
    if (!isRecord(chunk)) throw new UpstreamFailure(`${what} is not a JSON object`);
    const type = stringField(chunk, 'type', what);
    switch (type) {
      case 'text-delta':
        return { steps: [{ type: 'text_delta', text: stringField(chunk, 'delta', what) }], done: false };
      case 'reasoning-delta':
        return { steps: [{ type: 'thinking_delta', text: stringField(chunk, 'delta', what) }], done: false };
      case 'tool-input-available': {
        const callId = stringField(chunk, 'toolCallId', what);
        const tool = stringField(chunk, 'toolName', what);
        this.#calls.announce(callId, tool);
        return { steps: [{ type: 'tool_call', callId, tool, args: argsObject(chunk.input ?? {}) }], done: false };
      }
      case 'tool-output-available':
      case 'tool-output-error': {
        const callId = stringField(chunk, 'toolCallId', what);
        const ok = type === 'tool-output-available';
        const result = ok ? (chunk.output ?? null) : { error: typeof chunk.errorText === 'string' ? chunk.errorText : null };
        return { steps: [{ type: 'tool_result', callId, tool: this.#calls.toolOf(callId), ok, result }], done: false };
      }
      case 'error':
        throw new UpstreamFailure(`the upstream agent failed: ${typeof chunk.errorText === 'string' ? quoted(chunk.errorText) : '(no message)'}`);
      case 'abort':
        throw new UpstreamFailure('the upstream agent aborted its stream');
      case 'finish':
        return DONE;
      default:
        return NOTHING;
    }
  }

  ended(): void {
    throw new UpstreamFailure('the upstream UI message stream ended without finish');
  }
}
