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

/**
 * Deepest nesting of arrays and objects in an upstream JSON value. JSON.parse reads any depth,
 * but every later JSON.stringify (log, socket, archive) recurses and overflows the stack.
 */
export const MAX_JSON_DEPTH = 128;

/** One JSON value of the stream; `what` names it in the failure (never the text itself, which may be huge). */
export function parseJson(text: string, what: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UpstreamFailure(`${what} is not JSON`);
  }
  // Nesting d takes at least 2d characters: a short text (any delta) needs no walk.
  if (text.length > 2 * MAX_JSON_DEPTH && nestedTooDeep(value)) throw new UpstreamFailure(`${what} is nested deeper than ${MAX_JSON_DEPTH} levels`);
  return value;
}

/** Walks the value without recursion (the walk must not overflow on what it looks for). */
function nestedTooDeep(value: unknown): boolean {
  const stack: Array<{ value: unknown; depth: number }> = [{ value, depth: 1 }];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    if (typeof next.value !== 'object' || next.value === null) continue;
    if (next.depth > MAX_JSON_DEPTH) return true;
    for (const child of Object.values(next.value)) if (typeof child === 'object' && child !== null) stack.push({ value: child, depth: next.depth + 1 });
  }
  return false;
}

/** A string field of an upstream object, or a failure naming it. */
export function stringField(object: Record<string, unknown>, field: string, what: string): string {
  const value = object[field];
  if (typeof value !== 'string') throw new UpstreamFailure(`${what} has no string "${field}"`);
  return value;
}
