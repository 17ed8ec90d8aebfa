// The extra request headers of an upstream agent (AGENTWIRE_AGENT_HEADERS): they usually hold
// credentials, so they are checked without ever showing a value, and kept out of messages.

/** Request headers the gateway sets itself; configured headers may not replace them. */
const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'content-type',
  'content-length',
  'transfer-encoding',
  'connection',
  'accept',
  'x-agentwire-user',
  'x-agentwire-run',
]);

/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What Node accepts in a header value: no control characters but tab. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Header values shorter than this are not searched for in failure messages (they would mangle them and are no secrets). */
const MIN_REDACTED_CHARS = 4;

/**
 * Problems with the headers option, each naming the header and never its value; empty when
 * they are fine. `agentwire serve` checks AGENTWIRE_AGENT_HEADERS with it at start-up.
 */
export function headerProblems(headers: Readonly<Record<string, string>>): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (!HEADER_NAME.test(name)) problems.push(`${JSON.stringify(name.slice(0, 100))} is not a valid header name`);
    else if (RESERVED_HEADERS.has(name.toLowerCase())) problems.push(`${name} is set by the gateway itself`);
    else if (typeof value !== 'string' || !HEADER_VALUE.test(value)) problems.push(`the value of ${name} is not a string without control characters`);
  }
  return problems;
}

/** Each header value, and each of its words (a `Bearer <key>` value's key), longest first. */
export function secretsOf(headers: Readonly<Record<string, string>>): string[] {
  const secrets = new Set<string>();
  for (const value of Object.values(headers)) {
    for (const candidate of [value, ...value.split(/\s+/)]) {
      if (candidate.length >= MIN_REDACTED_CHARS) secrets.add(candidate);
    }
  }
  return [...secrets].sort((a, b) => b.length - a.length);
}

/** `message` with every secret replaced by `[redacted]`. */
export function redact(message: string, secrets: readonly string[]): string {
  let out = message;
  for (const secret of secrets) out = out.split(secret).join('[redacted]');
  return out;
}
