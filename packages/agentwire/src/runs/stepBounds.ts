import type { EventPayload } from '@agentwire/protocol';
import { MAX_JSON_DEPTH, quoted } from '../upstream/failure.js';
import { MAX_MESSAGE_BYTES } from '../upstream/framing.js';

// An in-process agent yields live values, not JSON text: args or a result may hold a BigInt, a
// cycle, nesting that overflows every later JSON.stringify, or megabytes. Unchecked, the engine's
// encodeEvent throws inside the append, which the run manager takes for an unavailable log. So a
// step is held to the bounds an upstream agent's steps have (section 15): 128 levels, 1 MiB; and
// a run's text to an upstream agent's whole answer, 16 MiB.

/**
 * UTF-8 bytes of text (answer, thinking and delta steps together) one run may yield: what an
 * upstream agent's answer body may hold (httpAgent.ts). The run keeps its streamed text for its
 * `agent_completed`, and the log keeps the deltas: unbounded, one agent could fill the memory.
 */
export const MAX_RUN_TEXT_BYTES = 16 * 1024 * 1024;

/**
 * The text one run's agent yields, held to an upstream agent's bounds: each step's text a string
 * of at most 1 MiB (UTF-8, an upstream line's bound), all of them together at most
 * MAX_RUN_TEXT_BYTES.
 */
export class RunTextBudget {
  #left = MAX_RUN_TEXT_BYTES;

  /** Counts the text of one step: null, or what is wrong with it, as the end of a sentence ("the step …"). */
  take(text: unknown): string | null {
    if (typeof text !== 'string') return 'whose text is not a string';
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_MESSAGE_BYTES) return 'with over 1 MiB of text';
    if (bytes > this.#left) return `past ${MAX_RUN_TEXT_BYTES / 1024 / 1024} MiB of text in the run`;
    this.#left -= bytes;
    return null;
  }
}

/** Thrown from the replacer to stop the walk; never escapes `checkStep`. */
class Exceeded extends Error {}

/** A step checked: the event as it was when checked (a copy the agent cannot change), or what is wrong with it. */
export type CheckedStep = { readonly event: EventPayload; readonly fault: null } | { readonly event: null; readonly fault: string };

/**
 * `event` (an agent step as an event) checked for the log: a copy of it as JSON has it, or what
 * makes it unfit, as the end of a sentence ("the step …"): nested deeper than MAX_JSON_DEPTH, not
 * serialisable as JSON, or over MAX_MESSAGE_BYTES of JSON (UTF-8). The copy is what is appended:
 * the agent holds the original and may change it (add a cycle) before the append encodes it.
 *
 * One JSON.stringify with a replacer: it sees values after `toJSON` (a Date is a string), cycles
 * and BigInts fail inside it, and the replacer stops it past the depth, or once the text surely
 * passes the size, so a shared subtree repeated exponentially costs at most the bound.
 */
export function checkStep(event: EventPayload): CheckedStep {
  const depths = new Map<object, number>();
  let chars = 0; // a lower bound of the text's length so far: bytes are at least as many
  let json: string | undefined;
  try {
    json = JSON.stringify(event, function (this: unknown, key: string, value: unknown) {
      const kind = typeof value;
      if (kind === 'undefined' || kind === 'function' || kind === 'symbol') return value; // left out
      if (depths.has(this as object) && !Array.isArray(this)) chars += key.length + 3; // "key": (not the root's wrapper)
      if (kind === 'string') chars += (value as string).length + 2;
      else if (kind === 'object' && value !== null) {
        const depth = (depths.get(this as object) ?? 0) + 1;
        if (depth > MAX_JSON_DEPTH) throw new Exceeded(`nested deeper than ${MAX_JSON_DEPTH} levels`);
        depths.set(value as object, depth);
        chars += 2;
      } else chars += 1;
      if (chars > MAX_MESSAGE_BYTES) throw new Exceeded('over 1 MiB as JSON');
      return value;
    });
  } catch (error) {
    if (error instanceof Exceeded) return { event: null, fault: error.message };
    return { event: null, fault: `that is not serialisable as JSON (${quoted(error instanceof Error ? error.message : String(error))})` };
  }
  if (json === undefined) return { event: null, fault: 'that is not serialisable as JSON' };
  if (json.length > MAX_MESSAGE_BYTES / 3 && Buffer.byteLength(json) > MAX_MESSAGE_BYTES) return { event: null, fault: 'over 1 MiB as JSON' };
  return { event: JSON.parse(json) as EventPayload, fault: null };
}
