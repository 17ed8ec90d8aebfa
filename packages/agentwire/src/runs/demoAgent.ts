import { sleep, type Clock } from '@agentwire/protocol';
import type { Agent, AgentRunInput, AgentStep } from './agent.js';
import { evaluateArithmetic, findArithmeticExpression } from './calculator.js';

export interface DemoAgentOptions {
  readonly clock: Clock;
  /** Pause before each step. */
  readonly stepMs: number;
  /**
   * Least pause between the words of the streamed answer: the run manager's flush window, so
   * that no two words are merged and each delta is one word (deterministic for tests and probes).
   * Default 0.
   */
  readonly minWordMs?: number;
}

/**
 * The built-in agent (PROTOCOL.md section 13). Deterministic so that tests and probes can check
 * its output: thinking, one tool call (`calculator` or `word_count`), its result, thinking, then
 * the answer streamed as text deltas, one word each (`answerWords`), with a pause of the step time
 * before each step and each word. Directives at the start of the text: `/slow <ms>` overrides the
 * step time, `/fail` throws after the tool result, `/hang` waits for the abort signal after the
 * first step.
 */
export function createDemoAgent(options: DemoAgentOptions): Agent {
  return {
    run: (input) => runDemo(input, options),
    // It answers each message on its own: no earlier turns to look up.
    historyTurns: 0,
  };
}

/** The fragments the demo streams an answer in: each word with the whitespace before it. */
export function answerWords(answer: string): string[] {
  return answer.match(/\s*\S+/g) ?? [answer];
}

/** The answer the demo gives to a message (directives included, as sent). */
export function demoAnswer(text: string): string {
  return useTool(parseDirectives(text).message).answer;
}

interface Directives {
  slowMs: number | null;
  fail: boolean;
  hang: boolean;
  message: string;
}

function parseDirectives(text: string): Directives {
  const directives: Directives = { slowMs: null, fail: false, hang: false, message: text.trim() };
  for (;;) {
    const match = /^\/(?:slow\s+(\d+)|fail|hang)(?:\s+|$)/.exec(directives.message);
    if (!match) return directives;
    if (match[1] !== undefined) directives.slowMs = Number(match[1]);
    else if (match[0].startsWith('/fail')) directives.fail = true;
    else directives.hang = true;
    directives.message = directives.message.slice(match[0].length);
  }
}

function countWords(text: string): number {
  return text.split(/\s+/).filter((word) => word.length > 0).length;
}

function describeWordCount(count: number): string {
  return `${count} word${count === 1 ? '' : 's'}`;
}

/** Resolves never; rejects with the signal's reason once it aborts. Holds no timer. */
function waitForAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

interface ToolUse {
  tool: 'calculator' | 'word_count';
  args: Record<string, unknown>;
  ok: boolean;
  result: unknown;
  answer: string;
}

/** Picks and runs the tool up front; both tools are pure, so only the yielding is paced. */
function useTool(message: string): ToolUse {
  const expression = findArithmeticExpression(message);
  if (expression === null) {
    const words = countWords(message);
    const answer = `Your message has ${describeWordCount(words)}.`;
    return { tool: 'word_count', args: { text: message }, ok: true, result: words, answer };
  }
  const args = { expression };
  try {
    const value = evaluateArithmetic(expression);
    return { tool: 'calculator', args, ok: true, result: value, answer: `${expression} = ${value}` };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const answer = `I could not evaluate ${expression}: ${reason}.`;
    return { tool: 'calculator', args, ok: false, result: { error: reason }, answer };
  }
}

async function* runDemo(input: AgentRunInput, options: DemoAgentOptions): AsyncGenerator<AgentStep> {
  const { clock } = options;
  const { slowMs, fail, hang, message } = parseDirectives(input.text);
  const stepMs = slowMs ?? options.stepMs;
  const wordMs = Math.max(stepMs, options.minWordMs ?? 0);
  const pause = async (ms = stepMs) => {
    if (ms > 0) await sleep(clock, ms, input.signal);
    // Without a pause there is no timer for the abort to reject, so check it here.
    else input.signal.throwIfAborted();
  };
  const callId = `${input.runId}:1`;

  await pause();
  yield { type: 'thinking', text: `Reading your message (${describeWordCount(countWords(message))}).` };
  if (hang) await waitForAbort(input.signal);

  const { tool, args, ok, result, answer } = useTool(message);
  await pause();
  yield { type: 'tool_call', callId, tool, args };
  await pause();
  yield { type: 'tool_result', callId, tool, ok, result };
  if (fail) throw new Error('demo agent failure requested by /fail');

  await pause();
  yield { type: 'thinking', text: `Writing the answer from the ${tool} result.` };
  for (const word of answerWords(answer)) {
    await pause(wordMs);
    yield { type: 'text_delta', text: word };
  }
}
