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

/**
 * One step an agent yields. Each becomes one durable event of the run, except deltas: fragments
 * yielded in quick succession may be merged into one delta event (PROTOCOL.md section 7). A
 * step's `text` is a string of at most 1 MiB (UTF-8), and a run's text steps (`answer` included)
 * together at most 16 MiB, as an upstream agent's: past that the run ends with `agent_failed`.
 */
export type AgentStep =
  /** A whole step of visible reasoning (`agent_thinking`). */
  | { readonly type: 'thinking'; readonly text: string }
  /** A fragment of streamed reasoning (`agent_thinking_delta`); empty fragments are dropped. */
  | { readonly type: 'thinking_delta'; readonly text: string }
  /**
   * A fragment of the streamed answer (`agent_text_delta`); empty fragments are dropped. An agent
   * that streams its answer needs no `answer` step: `agent_completed.text` is the concatenation.
   */
  | { readonly type: 'text_delta'; readonly text: string }
  /**
   * `args` (and a `tool_result`'s `result`) become JSON: at most 128 levels deep, serialisable,
   * at most 1 MiB; a step that is not ends the run with `agent_failed` (PROTOCOL.md section 7).
   */
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
  /**
   * The final answer of an agent that does not stream: the last one yielded becomes
   * `agent_completed.text`. Ignored once the agent yielded a `text_delta` (the answer is then
   * the concatenation of the streamed fragments, as clients saw it).
   */
  | { readonly type: 'answer'; readonly text: string };

/**
 * An agent: `run` is called once per run and yields steps; the run manager turns each step into
 * a durable event (`agent_thinking`, `agent_thinking_delta`, `agent_text_delta`, `tool_executing`,
 * `tool_completed`) and appends `agent_started` before the first and exactly one terminal event
 * after the last. The agent must stop promptly when `signal` aborts (cancel, run timeout, shutdown): whatever it yields
 * afterwards is ignored.
 */
export interface Agent {
  run(input: AgentRunInput): AsyncIterable<AgentStep>;
  /**
   * How many earlier turns this agent reads from `input.history`, at most (the gateway's
   * `historyTurns` caps it). Absent: the gateway's `historyTurns`. 0: none, and the history store
   * is not asked at all, which saves a lookup at every run start for agents that answer each
   * message on its own.
   */
  readonly historyTurns?: number;
}
