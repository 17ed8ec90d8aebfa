/**
 * The parsers of the settings table: each turns one raw value (an environment variable's text,
 * a flag's text, or `true` for a value-less flag) into a typed value or throws InvalidValue
 * with the reason. They know nothing of setting names; the loader adds those.
 */

import { headerProblems } from '../upstream/headers.js';

/** A value a setting cannot take. The loader turns it into a ConfigError naming the setting. */
export class InvalidValue extends Error {}

export type RawValue = string | boolean;
export type Parser<T> = (value: RawValue) => T;

/** Largest delay Node's timers accept; larger values silently become 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

function got(value: RawValue): string {
  return `(got ${JSON.stringify(value)})`;
}

/**
 * An integer in [min, max]. `showRange` words every complaint as `from min to max` (for
 * bounds people should see at once, like a port); otherwise each names the bound it broke.
 */
export function integer(min: number, max: number, showRange = false): Parser<number> {
  const range = showRange ? `from ${min} to ${max}` : undefined;
  return (value) => {
    if (typeof value !== 'string') throw new InvalidValue(`needs a value (an integer ${range ?? `>= ${min}`})`);
    const s = value.trim();
    if (!/^[+-]?\d+$/.test(s)) throw new InvalidValue(`must be an integer ${range ?? `>= ${min}`} ${got(value)}`);
    const n = Number(s) + 0; // + 0 turns "-0" into 0
    if (n < min) throw new InvalidValue(`must be an integer ${range ?? `>= ${min}`} ${got(value)}`);
    if (n > max || !Number.isSafeInteger(n)) throw new InvalidValue(`must be an integer ${range ?? `<= ${max}`} ${got(value)}`);
    return n;
  };
}

/** Free text, trimmed unless it is key material (where every character counts). */
export function text({ trim }: { trim: boolean }): Parser<string> {
  return (value) => {
    if (typeof value !== 'string') throw new InvalidValue('needs a value');
    return trim ? value.trim() : value;
  };
}

/** `true`/`false`/`1`/`0` in any letter case; a value-less flag is `true`. */
export const boolean: Parser<boolean> = (value) => {
  const parsed = booleanOrUndefined(value);
  if (parsed === undefined) throw new InvalidValue(`must be true, false, 1 or 0 ${got(value)}`);
  return parsed;
};

/** The boolean a literal spells, or undefined; `--production false` uses it to tell a value from an argument. */
export function booleanOrUndefined(value: RawValue): boolean | undefined {
  if (typeof value === 'boolean') return value;
  const v = value.trim().toLowerCase();
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  return undefined;
}

/** One of `choices`, in any letter case. */
export function oneOf<T extends string>(choices: readonly T[]): Parser<T> {
  const wanted = choices.length === 2 ? `${choices[0]} or ${choices[1]}` : `one of ${choices.join(', ')}`;
  return (value) => {
    const v = typeof value === 'string' ? value.trim().toLowerCase() : '';
    const choice = choices.find((c) => c === v);
    if (choice === undefined) throw new InvalidValue(`must be ${wanted} ${got(value)}`);
    return choice;
  };
}

/** Trimmed text matching `pattern`, which `described` puts in words. */
export function matching(pattern: RegExp, described: string): Parser<string> {
  const parseText = text({ trim: true });
  return (value) => {
    const s = parseText(value);
    if (!pattern.test(s)) throw new InvalidValue(`must be ${described} ${got(s)}`);
    return s;
  };
}

/** A URL with one of `protocols`. `redactCredentials` keeps a password out of the complaint. */
export function url(protocols: readonly string[], described: string, redactCredentials = false): Parser<string> {
  const parseText = text({ trim: true });
  return (value) => {
    const s = parseText(value);
    let parsed: URL | undefined;
    try {
      parsed = new URL(s);
    } catch {
      parsed = undefined;
    }
    if (!parsed || !protocols.includes(parsed.protocol)) {
      throw new InvalidValue(`must be ${described} ${got(redactCredentials ? s.replace(/\/\/([^/@]*)@/, '//***@') : s)}`);
    }
    return s;
  };
}

/** An SPKI PEM public key. Never echoes the value: it may be a private key pasted by mistake. */
export const pemPublicKey: Parser<string> = (value) => {
  const raw = text({ trim: false })(value);
  // PEMs passed through environment files often have their newlines written as `\n`.
  const pem = !raw.includes('\n') && raw.includes('\\n') ? raw.replace(/\\n/g, '\n') : raw;
  if (!pem.includes('BEGIN PUBLIC KEY')) {
    throw new InvalidValue('must be a PEM public key containing "-----BEGIN PUBLIC KEY-----" (SPKI; certificates and private keys are not accepted)');
  }
  return pem.trim();
};

/** A comma-separated list of http(s) origins, normalized and deduplicated; `*` (or nothing set) = any = null. */
export const origins: Parser<string[] | null> = (value) => {
  const s = text({ trim: true })(value);
  const entries = s
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (entries.includes('*')) return null;
  if (entries.length === 0) throw new InvalidValue(`must be a comma-separated list of origins ${got(s)}`);
  const out: string[] = [];
  for (const entry of entries) {
    const origin = originOf(entry);
    if (origin === undefined) throw new InvalidValue(`each entry must be an origin like https://app.example.com ${got(entry)}`);
    if (!out.includes(origin)) out.push(origin);
  }
  return out;
};

/** `scheme://host[:port]` of an http(s) origin entry; undefined when it has a path, query, fragment or credentials. */
function originOf(entry: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(entry);
  } catch {
    return undefined;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return undefined;
  if (parsed.pathname !== '/' || parsed.search !== '' || parsed.hash !== '' || parsed.username !== '' || parsed.password !== '') {
    return undefined;
  }
  return parsed.origin;
}

/** Most nodes a cluster list may name: any few masters suffice to discover the rest. */
const MAX_HOST_PORTS = 64;
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$/;

/** A comma-separated list of `host:port` (an IPv6 host in brackets), at most 64. */
export const hostPorts: Parser<Array<{ host: string; port: number }>> = (value) => {
  const s = text({ trim: true })(value);
  const items = s.split(',').map((item) => item.trim());
  if (items.length > MAX_HOST_PORTS) throw new InvalidValue(`names at most ${MAX_HOST_PORTS} nodes (got ${items.length})`);
  return items.map((item) => {
    const match = HOST_PORT.exec(item);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65_535) {
      throw new InvalidValue(`must be comma-separated host:port, port 1 to 65535 (got ${JSON.stringify(item.slice(0, 300))})`);
    }
    return { host: match[1]!.replace(/^\[(.*)\]$/, '$1'), port };
  });
};

/**
 * A JSON object of string values: extra HTTP request headers. Never echoes the value (it holds
 * credentials); a problem with one header names the header only.
 */
export const headersJson: Parser<Readonly<Record<string, string>>> = (value) => {
  const raw = text({ trim: true })(value);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new InvalidValue('must be a JSON object of string values, like {"authorization":"Bearer …"} (the value is not shown: it may hold credentials)');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidValue('must be a JSON object of string values (the value is not shown: it may hold credentials)');
  }
  const problems = headerProblems(parsed as Record<string, string>);
  if (problems.length > 0) throw new InvalidValue(problems.join('; '));
  // fromEntries defines own properties: a "__proto__" key stays a (rejected or plain) name.
  return Object.freeze(Object.fromEntries(Object.entries(parsed as Record<string, string>)));
};
