import { answerWords, demoAnswer } from '../../src/runs/demoAgent.js';
import type { Frame } from './wsClient.js';

/**
 * The event types of one run of the demo agent for the message `text`, in order: thinking, one
 * tool call, thinking, the answer streamed one word per delta, completed.
 */
export function demoRunTypes(text: string): string[] {
  const deltas = answerWords(demoAnswer(text)).map(() => 'agent_text_delta');
  return ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_thinking', ...deltas, 'agent_completed'];
}

export const TERMINAL_TYPES: ReadonlySet<string> = new Set(['agent_completed', 'agent_error']);

export function isTerminal(frame: Frame): boolean {
  return TERMINAL_TYPES.has(frame.type);
}

/**
 * Checks one run's events (in the order received) against PROTOCOL.md section 7: one run and
 * thread, rising seqs, `agent_started` first, each `tool_completed` after the `tool_executing`
 * with its `call_id`, exactly one terminal event and it is last. Returns the first problem or null.
 */
export function runProblem(events: readonly Frame[]): string | null {
  if (events.length === 0) return 'no events';
  const first = events[0]!;
  if (first.type !== 'agent_started') return `first event is ${first.type}, not agent_started`;
  const executing = new Set<string>();
  let terminals = 0;
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!;
    if (event.run_id !== first.run_id) return `event ${event.seq} belongs to run ${event.run_id}`;
    if (event.thread_id !== first.thread_id) return `event ${event.seq} is on thread ${event.thread_id}`;
    if (i > 0 && !(event.seq > events[i - 1]!.seq)) return `seq ${event.seq} does not rise after ${events[i - 1]!.seq}`;
    if (i > 0 && event.type === 'agent_started') return `second agent_started at seq ${event.seq}`;
    if (event.type === 'tool_executing') executing.add(event.call_id);
    if (event.type === 'tool_completed' && !executing.has(event.call_id)) {
      return `tool_completed ${event.call_id} at seq ${event.seq} without an earlier tool_executing`;
    }
    if (isTerminal(event)) terminals++;
  }
  if (terminals !== 1) return `${terminals} terminal events`;
  if (!isTerminal(events.at(-1)!)) return `last event is ${events.at(-1)!.type}, not terminal`;
  return null;
}

/**
 * Waits for a condition of server-side state that no frame announces (a teardown finished, a
 * run was removed). Polls on the event loop; fails with `what` after `timeoutMs`.
 */
export async function waitUntil(condition: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
