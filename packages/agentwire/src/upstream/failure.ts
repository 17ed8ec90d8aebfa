/**
 * A fault of the upstream agent or of the way to it. Its message names the cause (status code,
 * network error, or what could not be read) and becomes the run's `agent_error` `agent_failed`
 * message (PROTOCOL.md section 15).
 */
export class UpstreamFailure extends Error {
  override readonly name = 'UpstreamFailure';
}

/** Longest text of the upstream's own (an error message, a body excerpt) put into a failure message. */
export const MAX_QUOTED_CHARS = 500;

/** `text` cut to `MAX_QUOTED_CHARS`, on one line. */
export function quoted(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > MAX_QUOTED_CHARS ? `${line.slice(0, MAX_QUOTED_CHARS)}…` : line;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** One JSON value of the stream; `what` names it in the failure (never the text itself, which may be huge). */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new UpstreamFailure(`${what} is not JSON`);
  }
}

/** A string field of an upstream object, or a failure naming it. */
export function stringField(object: Record<string, unknown>, field: string, what: string): string {
  const value = object[field];
  if (typeof value !== 'string') throw new UpstreamFailure(`${what} has no string "${field}"`);
  return value;
}
