/**
 * The custom agent of the benchmark; what a run does comes from its message text (see Workload
 * in ./common.ts):
 * - `steps:<n>`: n thinking steps with no pause, then an answer. Its steps come in one tick, so
 *   the run manager appends a whole run at once. With BENCH_AGENT_STEP=tick each step waits for
 *   the next turn of the event loop first, as a streaming agent's steps arrive in separate
 *   socket reads: then batches form only while an append is in flight.
 * - `deltas:<n>`: n stamped fragments, each in its own tick, alternating text and thinking.
 * - `stream:<n>:<ms>`: n stamped text fragments, one every <ms> ms.
 * The same agent runs in the gateway process and behind bench/servers/upstreamAgent.ts (HTTP).
 */
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import type { Agent, AgentStep } from '../packages/agentwire/src/index.js';
import { fragmentText, parseWorkload } from './common.js';

const STEP_PER_TICK = process.env.BENCH_AGENT_STEP === 'tick';

export const benchAgent: Agent = {
  // Like the demo agent, it answers each message on its own (docs/BENCHMARKS.md: the lookup's cost).
  historyTurns: 0,
  async *run(input): AsyncIterable<AgentStep> {
    const workload = parseWorkload(input.text);
    switch (workload.kind) {
      case 'steps':
        for (let i = 1; i <= workload.n; i++) {
          if (STEP_PER_TICK) await nextTurn();
          if (input.signal.aborted) return;
          yield { type: 'thinking', text: `thinking step ${i} of ${workload.n}` };
        }
        yield { type: 'answer', text: `done after ${workload.n} steps` };
        return;
      case 'deltas':
        for (let i = 0; i < workload.n; i++) {
          await nextTurn();
          if (input.signal.aborted) return;
          yield { type: i % 2 === 0 ? 'text_delta' : 'thinking_delta', text: fragmentText() };
        }
        return;
      case 'stream':
        for (let i = 0; i < workload.n; i++) {
          await sleep(workload.everyMs, undefined, { signal: input.signal });
          yield { type: 'text_delta', text: fragmentText() };
        }
        return;
    }
  },
};
