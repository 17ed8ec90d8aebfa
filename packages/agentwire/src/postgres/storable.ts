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
