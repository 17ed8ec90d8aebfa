import type { Agent, AgentRunInput, AgentStep } from '../../src/runs/agent.js';
import { Waiters } from './waitFor.js';

/**
 * A test agent driven step by step. A message starting with `/gated` makes the run take its
 * steps from its thread's channel (`push`, then `finish` with the answer), so a test decides
 * exactly when each event is produced; any other message is answered at once with one thinking
 * step and the answer `echo: <text>`. Every run's input is recorded.
 */
export class GatedAgent implements Agent {
  readonly inputs: AgentRunInput[] = [];
  readonly #channels = new Map<string, Array<AgentStep | null>>();
  readonly #waiters = new Waiters(() => `inputs=${this.inputs.length}`);

  async *run(input: AgentRunInput): AsyncIterable<AgentStep> {
    this.inputs.push(input);
    this.#waiters.notify();
    if (!input.text.startsWith('/gated')) {
      yield { type: 'thinking', text: `about ${input.text}` };
      yield { type: 'answer', text: `echo: ${input.text}` };
      return;
    }
    for (;;) {
      const step = await this.#next(input.threadId, input.signal);
      if (step === null) return;
      yield step;
    }
  }

  /** Hands the next step to the gated run of `threadId` (queued if it has not asked yet). */
  push(threadId: string, step: AgentStep): void {
    this.#channel(threadId).push(step);
    this.#waiters.notify();
  }

  /** Ends the gated run of `threadId` with `answer`. */
  finish(threadId: string, answer: string): void {
    this.push(threadId, { type: 'answer', text: answer });
    this.#channel(threadId).push(null);
    this.#waiters.notify();
  }

  /** Resolves once `count` runs have started. */
  started(count: number): Promise<AgentRunInput[]> {
    return this.#waiters.until(() => (this.inputs.length >= count ? this.inputs : undefined), 5000, `${count} runs started`);
  }

  #channel(threadId: string): Array<AgentStep | null> {
    let channel = this.#channels.get(threadId);
    if (!channel) this.#channels.set(threadId, (channel = []));
    return channel;
  }

  async #next(threadId: string, signal: AbortSignal): Promise<AgentStep | null> {
    const channel = this.#channel(threadId);
    const aborted = new Promise<null>((resolve) => signal.addEventListener('abort', () => resolve(null), { once: true }));
    const ready = this.#waiters.until(() => (channel.length > 0 ? true : undefined), 20_000, `a step for ${threadId}`);
    ready.catch(() => {});
    const got = await Promise.race([ready, aborted]);
    if (got === null) return null;
    return channel.shift()!;
  }
}
