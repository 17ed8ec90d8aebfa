/** Renders server frames for people: one line per frame, the answer last. */
export function formatFrame(frame: Record<string, unknown>): string | null {
  switch (frame.type) {
    case 'connection_ready':
      return frame.resumed === true
        ? `reconnected as ${frame.user_id} (epoch ${frame.epoch}, last seq ${frame.last_seq}, ${frame.replayed} missed event${frame.replayed === 1 ? '' : 's'} replayed)`
        : `connected as ${frame.user_id} (epoch ${frame.epoch}, last seq ${frame.last_seq})`;
    case 'ack':
      return `${frame.status} ${frame.run_id} on thread ${frame.thread_id}`;
    case 'agent_started':
      return `#${frame.seq} started`;
    case 'agent_thinking':
      return `#${frame.seq} thinking: ${frame.text}`;
    case 'agent_thinking_delta':
      return `#${frame.seq} thinking: ${frame.text}`;
    case 'agent_text_delta':
      return `#${frame.seq} answer: ${frame.text}`;
    case 'tool_executing':
      return `#${frame.seq} tool ${frame.tool} ${JSON.stringify(frame.args)}`;
    case 'tool_completed':
      return `#${frame.seq} tool ${frame.tool} ${frame.ok ? 'ok' : 'failed'}: ${JSON.stringify(frame.result)}`;
    case 'agent_completed':
      return `#${frame.seq} ${frame.status}: ${frame.text}`;
    case 'agent_error':
      return `#${frame.seq} error ${frame.code}: ${frame.message}`;
    case 'error':
      return `server error ${frame.code}: ${frame.message}`;
    default:
      return null;
  }
}

const DELTA_TYPES: ReadonlySet<unknown> = new Set(['agent_text_delta', 'agent_thinking_delta']);

/**
 * The transcript as a person reads it: like `formatFrame`, except that streamed deltas are
 * printed as they arrive on one line (`#6 answer: 2+3*4 = 14`, written a fragment at a time)
 * until another frame comes, and an `agent_completed` whose text was all streamed is not
 * repeated (`#9 completed`). Returns what to write; the caller writes it at once.
 */
export class TranscriptFormatter {
  /** The delta line being written (its run and type), if any. */
  #open: { runId: unknown; type: unknown } | null = null;
  /** Per run, the answer streamed so far; dropped at the run's terminal event. */
  readonly #streamed = new Map<unknown, string>();

  /** The text for one frame (possibly '' when it prints nothing). */
  format(frame: Record<string, unknown>): string {
    if (DELTA_TYPES.has(frame.type) && typeof frame.text === 'string') {
      if (frame.type === 'agent_text_delta') this.#streamed.set(frame.run_id, (this.#streamed.get(frame.run_id) ?? '') + frame.text);
      if (this.#open && this.#open.runId === frame.run_id && this.#open.type === frame.type) return frame.text;
      const start = `${this.endLine()}${formatFrame(frame)}`;
      this.#open = { runId: frame.run_id, type: frame.type };
      return start;
    }
    let line = formatFrame(frame);
    if (frame.type === 'agent_completed' || frame.type === 'agent_error') {
      const streamed = this.#streamed.get(frame.run_id);
      this.#streamed.delete(frame.run_id);
      if (frame.type === 'agent_completed' && streamed !== undefined && streamed === frame.text) line = `#${frame.seq} ${frame.status}`;
    }
    return line === null ? '' : `${this.endLine()}${line}\n`;
  }

  /** Ends a delta line in progress: '\n' if one is open (before other output, or at exit), else ''. */
  endLine(): string {
    if (!this.#open) return '';
    this.#open = null;
    return '\n';
  }
}
