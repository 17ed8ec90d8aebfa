import type { DurableEvent } from '@agentwire/protocol';
import type { AssistantMessageView, RunStatus, ToolCallView, UserMessageView } from '../history/types.js';

/** A run as the history routes show it: the user's message and the answer as far as it got. */
export interface RunView {
  readonly user: UserMessageView;
  readonly assistant: AssistantMessageView;
}

/** The start of a run as its `agent_started` event names it. */
export interface RunStart {
  readonly runId: string;
  readonly messageId: string;
  readonly text: string;
  readonly createdAt: string;
}

/**
 * Folds one run's events (seq order) into its messages. Deltas append to the answer; a thinking
 * delta continues the step the previous thinking delta began, any other event ends that step;
 * the terminal event's text is the answer (section 7: the concatenation of the deltas, or the
 * final answer of an agent that did not stream).
 */
export function foldRun(start: RunStart, events: readonly DurableEvent[]): RunView {
  let status: RunStatus = 'running';
  let text = '';
  const thinking: string[] = [];
  let thinkingOpen = false;
  const toolCalls: ToolCallView[] = [];
  const callIndex = new Map<string, number>();
  let error: AssistantMessageView['error'] = null;
  let completedAt: string | null = null;
  for (const event of events) {
    if (event.type !== 'agent_thinking_delta') thinkingOpen = false;
    switch (event.type) {
      case 'agent_text_delta':
        text += event.text;
        break;
      case 'agent_thinking':
        thinking.push(event.text);
        break;
      case 'agent_thinking_delta':
        if (thinkingOpen) thinking[thinking.length - 1] += event.text;
        else thinking.push(event.text);
        thinkingOpen = true;
        break;
      case 'tool_executing':
        callIndex.set(event.call_id, toolCalls.length);
        toolCalls.push({ callId: event.call_id, tool: event.tool, args: event.args });
        break;
      case 'tool_completed': {
        const index = callIndex.get(event.call_id);
        const done = { callId: event.call_id, tool: event.tool, ok: event.ok, result: event.result };
        if (index === undefined) toolCalls.push({ ...done, args: {} });
        else toolCalls[index] = { ...toolCalls[index]!, ok: event.ok, result: event.result };
        break;
      }
      case 'agent_completed':
        status = event.status;
        text = event.text;
        completedAt = event.ts;
        break;
      case 'agent_error':
        status = 'error';
        error = { code: event.code, message: event.message };
        completedAt = event.ts;
        break;
      case 'agent_started':
        break;
    }
  }
  return {
    user: { id: start.messageId, role: 'user', runId: start.runId, text: start.text, createdAt: start.createdAt },
    assistant: {
      id: start.runId,
      role: 'assistant',
      runId: start.runId,
      status,
      text,
      thinking,
      toolCalls,
      error,
      createdAt: start.createdAt,
      completedAt,
    },
  };
}

/** Parses an archived event; null for anything that is not an object with a known `type`. */
export function parseArchivedEvent(json: string): DurableEvent | null {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null || typeof (value as { type?: unknown }).type !== 'string') return null;
  return value as DurableEvent;
}

/** The status a run has once `event` is its newest event, or undefined when the event says nothing of it. */
export function statusAfter(event: DurableEvent): RunStatus | undefined {
  if (event.type === 'agent_started') return 'running';
  if (event.type === 'agent_completed') return event.status;
  if (event.type === 'agent_error') return 'error';
  return undefined;
}
