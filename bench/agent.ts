/**
 * The fast custom agent of the benchmark: `steps:<n>` → n thinking steps with no pause, then
 * an answer (so a run is agent_started, n × agent_thinking, agent_completed).
 */
import type { Agent, AgentStep } from '../src/index.js';
import { parseSteps } from './common.js';

export const benchAgent: Agent = {
  async *run(input): AsyncIterable<AgentStep> {
    const steps = parseSteps(input.text);
    for (let i = 1; i <= steps; i++) {
      if (input.signal.aborted) return;
      yield { type: 'thinking', text: `thinking step ${i} of ${steps}` };
    }
    yield { type: 'answer', text: `done after ${steps} steps` };
  },
};
