import { DONE, NOTHING, sseOnly, type Decoded, type Dialect, type StreamDecoder } from './dialect.js';
import { UpstreamFailure, isRecord, parseJson, quoted } from './failure.js';
import type { AgentStep } from '../runs/agent.js';

/**
 * The `openai` dialect (section 15): the configured URL is an OpenAI-compatible base URL; each
 * run POSTs `<url>/chat/completions` with the model, the conversation and `stream: true`.
 * `delta.content` becomes text deltas, `delta.reasoning_content` (or `delta.reasoning`) thinking
 * deltas; `[DONE]` completes the run, an `error` object fails it.
 */
export const openaiDialect: Dialect = {
  name: 'openai',
  accept: 'text/event-stream',
  target: (url) => {
    const target = new URL(url);
    target.pathname = `${target.pathname.replace(/\/+$/, '')}/chat/completions`;
    return target;
  },
  body: ({ input, history, model }) => ({
    model,
    messages: [...history.map((turn) => ({ role: turn.role, content: turn.text })), { role: 'user', content: input.text }],
    stream: true,
  }),
  framing: sseOnly,
  decoder: () => new OpenaiDecoder(),
};

class OpenaiDecoder implements StreamDecoder {
  #count = 0;

  decode(message: string): Decoded {
    if (message === '[DONE]') return DONE;
    const what = `chat completion chunk ${++this.#count}`;
    const chunk = parseJson(message, what);
    if (!isRecord(chunk)) throw new UpstreamFailure(`${what} is not a JSON object`);
    if (chunk.error !== undefined && chunk.error !== null) {
      const error = chunk.error;
      const text = isRecord(error) && typeof error.message === 'string' ? error.message : typeof error === 'string' ? error : '(no message)';
      throw new UpstreamFailure(`the upstream model failed: ${quoted(text)}`);
    }
    // A usage chunk has no choices; only the first choice is the answer (the request asks for one).
    const choice: unknown = Array.isArray(chunk.choices) ? chunk.choices[0] : undefined;
    if (!isRecord(choice) || !isRecord(choice.delta)) return NOTHING;
    const { content, reasoning_content: reasoningContent, reasoning } = choice.delta;
    const steps: AgentStep[] = [];
    const thinking = typeof reasoningContent === 'string' ? reasoningContent : typeof reasoning === 'string' ? reasoning : '';
    if (thinking !== '') steps.push({ type: 'thinking_delta', text: thinking });
    if (typeof content === 'string' && content !== '') steps.push({ type: 'text_delta', text: content });
    return { steps, done: false };
  }

  ended(): void {
    throw new UpstreamFailure('the upstream chat completion stream ended without [DONE]');
  }
}
