// PostgreSQL cannot hold every JavaScript string: `text` refuses U+0000, and `jsonb` refuses the
// \u0000 escape and unpaired surrogates. A user's message or an agent's answer holding one would
// fail the whole archive batch it is in (other users' events too) and every catch-up after it.
// They are stored with each such character as U+FFFD instead.

/** `text` for a `text` column. */
export function storableText(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}

/**
 * JSON.stringify(value) for a `jsonb` column. JSON.stringify writes U+0000 and an unpaired
 * surrogate only as `\u` escapes; an escaped backslash is matched first, so `\\u0000` (a
 * backslash, then the text "u0000") is left alone.
 */
export function storableJson(value: unknown): string {
  return JSON.stringify(value).replace(/\\\\|\\u0000|\\ud[89a-f][0-9a-f]{2}/g, (escape) => (escape === '\\\\' ? escape : '\\ufffd'));
}

/**
 * Nesting PostgreSQL's JSON parser takes without exhausting its stack (it failed between 10,000
 * and 100,000 levels at the default max_stack_depth; JavaScript parses a million). The gateway's
 * own events nest at most about 130 levels (tool args and results are bounded at 128).
 */
export const MAX_STORED_NESTING = 1000;

/** True if the JSON text nests objects and arrays deeper than `limit`; only text longer than 2 × limit can. */
export function nestsDeeperThan(json: string, limit = MAX_STORED_NESTING): boolean {
  if (json.length <= 2 * limit) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}
