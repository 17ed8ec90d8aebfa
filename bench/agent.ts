/**
 * The fast custom agent of the benchmark: `steps:<n>` → n thinking steps with no pause, then
 * an answer (so a run is agent_started, n × agent_thinking, agent_completed). Its steps come in
 * one tick, so the run manager appends a whole run at once. With BENCH_AGENT_STEP=tick each
 * step waits for the next turn of the event loop first, as a streaming agent's steps arrive in
 * separate socket reads: then batches form only while an append is in flight.
 */
import type { Agent, AgentStep } from '../packages/agentwire/src/index.js';
import { parseSteps } from './common.js';

const STEP_PER_TICK = process.env.BENCH_AGENT_STEP === 'tick';

export const benchAgent: Agent = {
  async *run(input): AsyncIterable<AgentStep> {
    const steps = parseSteps(input.text);
    for (let i = 1; i <= steps; i++) {
      if (STEP_PER_TICK) await new Promise((resolve) => setImmediate(resolve));
      if (input.signal.aborted) return;
      yield { type: 'thinking', text: `thinking step ${i} of ${steps}` };
    }
    yield { type: 'answer', text: `done after ${steps} steps` };
  },
};
