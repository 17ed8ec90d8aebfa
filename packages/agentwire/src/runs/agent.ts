// The interface an embedding application implements to plug its agent into agentwire.
import type { ConversationTurn } from '../history/types.js';

/** What one run of an agent is given: who asked what, on which thread, and when to stop. */
export interface AgentRunInput {
  readonly runId: string;
  readonly userId: string;
  readonly threadId: string;
  /** The client's `user_message` id. */
  readonly messageId: string;
  readonly text: string;
  /**
   * The thread's earlier turns, oldest first (user texts, answers with their tool calls),
   * without this run's message; at most `AGENTWIRE_HISTORY_TURNS`. Empty when the history
   * store could not answer in time.
   */
  readonly history: readonly ConversationTurn[];
  readonly signal: AbortSignal;
}

/** One step an agent yields; each becomes one durable event of the run. */
export type AgentStep =
  | { readonly type: 'thinking'; readonly text: string }
  | {
      readonly type: 'tool_call';
      readonly callId: string;
      readonly tool: string;
      readonly args: Record<string, unknown>;
    }
  | {
      readonly type: 'tool_result';
      readonly callId: string;
      readonly tool: string;
      readonly ok: boolean;
      readonly result: unknown;
    }
  /** The final answer; the last one yielded becomes `agent_completed.text`. */
  | { readonly type: 'answer'; readonly text: string };

/**
 * An agent: `run` is called once per run and yields steps; the run manager turns each step into
 * a durable event (`agent_thinking`, `tool_executing`, `tool_completed`) and appends
 * `agent_started` before the first and exactly one terminal event after the last. The agent must
 * stop promptly when `signal` aborts (cancel, run timeout, shutdown): whatever it yields
 * afterwards is ignored.
 */
export interface Agent {
  run(input: AgentRunInput): AsyncIterable<AgentStep>;
}
