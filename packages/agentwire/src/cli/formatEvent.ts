/** A field of a server frame as text: strings as they are, anything else (hostile or not) as JSON. */
function show(value: unknown): string {
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? 'undefined');
}

/** Renders server frames for people: one line per frame, the answer last. */
export function formatFrame(frame: Record<string, unknown>): string | null {
  switch (frame.type) {
    case 'connection_ready':
      return frame.resumed === true
        ? `reconnected as ${show(frame.user_id)} (epoch ${show(frame.epoch)}, last seq ${show(frame.last_seq)}, ${show(frame.replayed)} missed event${frame.replayed === 1 ? '' : 's'} replayed)`
        : `connected as ${show(frame.user_id)} (epoch ${show(frame.epoch)}, last seq ${show(frame.last_seq)})`;
    case 'ack':
      return `${show(frame.status)} ${show(frame.run_id)} on thread ${show(frame.thread_id)}`;
    case 'agent_started':
      return `#${show(frame.seq)} started`;
    case 'agent_thinking':
      return `#${show(frame.seq)} thinking: ${show(frame.text)}`;
    case 'tool_executing':
      return `#${show(frame.seq)} tool ${show(frame.tool)} ${JSON.stringify(frame.args)}`;
    case 'tool_completed':
      return `#${show(frame.seq)} tool ${show(frame.tool)} ${frame.ok ? 'ok' : 'failed'}: ${JSON.stringify(frame.result)}`;
    case 'agent_completed':
      return `#${show(frame.seq)} ${show(frame.status)}: ${show(frame.text)}`;
    case 'agent_error':
      return `#${show(frame.seq)} error ${show(frame.code)}: ${show(frame.message)}`;
    case 'error':
      return `server error ${show(frame.code)}: ${show(frame.message)}`;
    default:
      return null;
  }
}
