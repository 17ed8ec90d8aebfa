import type { AgentStep } from '../runs/agent.js';
import { NOTHING, ToolCalls, type Decoded, type Dialect, type StreamDecoder } from './dialect.js';
import { UpstreamFailure, isRecord, parseJson, quoted, stringField } from './failure.js';

/**
 * The `agentwire` dialect (section 15): a JSON request with the turn and the earlier turns; an
 * NDJSON or SSE answer of one step object per line or event. The body ending completes the run.
 */
export const agentwireDialect: Dialect = {
  name: 'agentwire',
  accept: 'application/x-ndjson, text/event-stream',
  target: (url) => url,
  body: ({ input, history }) => ({
    run_id: input.runId,
    thread_id: input.threadId,
    user_id: input.userId,
    message_id: input.messageId,
    text: input.text,
    messages: history.map((turn) => ({ role: turn.role, text: turn.text })),
  }),
  // A standard-library server may send no content type at all: its body is read as NDJSON.
  framing: (contentType) =>
    contentType === undefined || contentType === 'application/x-ndjson' || contentType === 'application/jsonl'
      ? 'ndjson'
      : contentType === 'text/event-stream'
        ? 'sse'
        : null,
  decoder: () => new AgentwireDecoder(),
};

class AgentwireDecoder implements StreamDecoder {
  readonly #calls = new ToolCalls();
  #count = 0;

  decode(message: string): Decoded {
    const what = `step ${++this.#count} of the upstream stream`;
    const step = parseJson(message, what);
    if (!isRecord(step)) throw new UpstreamFailure(`${what} is not a JSON object`);
    const decoded = this.#step(step, what);
    return decoded === null ? NOTHING : { steps: [decoded], done: false };
  }

  ended(): void {}

  #step(step: Record<string, unknown>, what: string): AgentStep | null {
    const type = stringField(step, 'type', what);
    switch (type) {
      case 'thinking':
      case 'thinking_delta':
      case 'text_delta':
      case 'answer':
        return { type, text: stringField(step, 'text', what) };
      case 'tool_call': {
        const callId = stringField(step, 'call_id', what);
        const tool = stringField(step, 'tool', what);
        const args = step.args ?? {};
        if (!isRecord(args)) throw new UpstreamFailure(`${what} (tool_call) has "args" that is not a JSON object`);
        this.#calls.announce(callId, tool);
        return { type: 'tool_call', callId, tool, args };
      }
      case 'tool_result': {
        const callId = stringField(step, 'call_id', what);
        const announced = this.#calls.toolOf(callId);
        const tool = typeof step.tool === 'string' ? step.tool : announced;
        if (typeof step.ok !== 'boolean') throw new UpstreamFailure(`${what} (tool_result) has no boolean "ok"`);
        return { type: 'tool_result', callId, tool, ok: step.ok, result: step.result ?? null };
      }
      case 'error':
        throw new UpstreamFailure(`the upstream agent failed: ${typeof step.message === 'string' ? quoted(step.message) : '(no message)'}`);
      default:
        return null; // unknown step types are ignored (section 15)
    }
  }
}
