import { createPublicKey, type KeyObject } from 'node:crypto';
import type { VerifierOptions } from './types.js';

/** The only algorithms agentwire verifies; each key accepts exactly one of them. */
export type PinnedAlgorithm = 'HS256' | 'RS256' | 'ES256';

/** Where verification keys come from: one fixed key, or a JWKS document fetched from a configured URL. */
export type KeySource = { readonly kind: 'fixed'; readonly key: string; readonly algorithm: PinnedAlgorithm } | { readonly kind: 'jwks'; readonly url: URL };

const SOURCES = [
  ['secret', 'AGENTWIRE_JWT_SECRET'],
  ['publicKey', 'AGENTWIRE_JWT_PUBLIC_KEY'],
  ['jwksUrl', 'AGENTWIRE_JWKS_URL'],
] as const;

const SOURCE_LIST = SOURCES.map(([option, env]) => `${option} (${env})`).join(', ');
const PUBLIC_KEY_SETTING = 'publicKey (AGENTWIRE_JWT_PUBLIC_KEY)';

/**
 * Picks the single configured key source and checks it.
 * Throws an Error naming the offending setting when the configuration is unusable.
 */
export function resolveKey(options: VerifierOptions): KeySource {
  const given = SOURCES.filter(([option]) => options[option] !== undefined);
  if (given.length === 0) {
    throw new Error(`no JWT key configured: set exactly one of ${SOURCE_LIST}`);
  }
  if (given.length > 1) {
    const names = given.map(([option, env]) => `${option} (${env})`).join(' and ');
    throw new Error(`conflicting JWT key settings: ${names} are ${given.length === 2 ? 'both' : 'all'} set; set exactly one of ${SOURCE_LIST}`);
  }
  if (options.secret !== undefined) {
    if (options.secret.length === 0) throw new Error('secret (AGENTWIRE_JWT_SECRET) is empty');
    return { kind: 'fixed', key: options.secret, algorithm: 'HS256' };
  }
  if (options.publicKey !== undefined) return pemKey(options.publicKey);
  return { kind: 'jwks', url: jwksUrl(options.jwksUrl as string) };
}

function pemKey(pem: string): KeySource {
  // Environment variables often carry PEMs with literal "\n" sequences instead of newlines.
  const text = !pem.includes('\n') && pem.includes('\\n') ? pem.replace(/\\n/g, '\n') : pem;
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`${PUBLIC_KEY_SETTING} is not a usable PEM public key: ${why}`, { cause: err });
  }
  const algorithm = publicKeyAlgorithm(key);
  if (typeof algorithm !== 'string') throw new Error(`${PUBLIC_KEY_SETTING} ${algorithm.problem}`);
  // Handed on as a normalized SPKI PEM: fast-jwt takes PEM text and imports it once.
  return { kind: 'fixed', key: spkiPem(key), algorithm };
}

/**
 * The one algorithm a public key may verify: RS256 for RSA of at least 2048 bits, ES256 for
 * EC P-256. Anything else comes back as the reason it is refused (for PEMs and JWKS keys alike).
 */
export function publicKeyAlgorithm(key: KeyObject): 'RS256' | 'ES256' | { problem: string } {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'rsa') {
    const bits = details.modulusLength ?? 0;
    return bits >= 2048 ? 'RS256' : { problem: `is a ${bits}-bit RSA key; RS256 needs at least 2048 bits` };
  }
  if (type === 'ec') {
    return details.namedCurve === 'prime256v1' ? 'ES256' : { problem: `is an EC key on curve ${details.namedCurve ?? 'unknown'}; ES256 needs P-256` };
  }
  return { problem: `has key type ${type ?? 'unknown'}; only RSA (RS256) and EC P-256 (ES256) are supported` };
}

export function spkiPem(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

function jwksUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error('jwksUrl (AGENTWIRE_JWKS_URL) is not a valid URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new Error(`jwksUrl (AGENTWIRE_JWKS_URL) must use http or https, not ${url.protocol}`);
  }
  return url;
}
