import type { DurableEvent } from '@agentwire/protocol';
import { createFold, foldEvents, threadMessages } from '../history/fold.js';
import type { AssistantMessageView, RunStatus, UserMessageView } from '../history/types.js';

// The archive folds one run at a time (a page of a thread is a list of runs), with the same fold
// as the log-folded store, so both stores show a run alike.

/** A run as the history routes show it: the user's message and the answer as far as it got. */
export interface RunView {
  readonly user: UserMessageView;
  readonly assistant: AssistantMessageView;
}

/** The start of a run as its stored row names it (used when its `agent_started` is not among the events). */
export interface RunStart {
  readonly runId: string;
  readonly messageId: string;
  readonly text: string;
  readonly createdAt: string;
}

/** Folds one run's events (in log order, its `agent_started` first) into its two messages. */
export function foldRun(start: RunStart, events: readonly DurableEvent[]): RunView {
  const threadId = events[0]?.thread_id;
  const messages = threadId === undefined ? null : threadMessages(foldEvents(createFold(), events), threadId);
  const user = messages?.[0]?.message;
  const assistant = messages?.[1]?.message;
  if (user?.role === 'user' && assistant?.role === 'assistant') return { user, assistant };
  return {
    user: { id: start.messageId, role: 'user', runId: start.runId, text: start.text, createdAt: start.createdAt },
    assistant: {
      id: start.runId,
      role: 'assistant',
      runId: start.runId,
      status: 'running',
      text: '',
      thinking: [],
      toolCalls: [],
      error: null,
      createdAt: start.createdAt,
      completedAt: null,
    },
  };
}

/** The status a run has once `event` is its newest event, or undefined when the event says nothing of it. */
export function statusAfter(event: DurableEvent): RunStatus | undefined {
  if (event.type === 'agent_started') return 'running';
  if (event.type === 'agent_completed') return event.status;
  if (event.type === 'agent_error') return 'error';
  return undefined;
}
