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
