import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, type JWSAlgorithm, type JWTVerifyGetKey } from 'jose';
import type { VerifierOptions } from './types.js';

/** The key material jose verifies with, plus the only algorithms it may accept for it. */
export interface VerificationKey {
  key: Uint8Array | KeyObject | JWTVerifyGetKey;
  algorithms: JWSAlgorithm[];
}

const SOURCES = [
  ['secret', 'AGENTWIRE_JWT_SECRET'],
  ['publicKey', 'AGENTWIRE_JWT_PUBLIC_KEY'],
  ['jwksUrl', 'AGENTWIRE_JWKS_URL'],
] as const;

const SOURCE_LIST = SOURCES.map(([option, env]) => `${option} (${env})`).join(', ');

/**
 * Picks the single configured key source and turns it into verification material.
 * Throws an Error naming the offending setting when the configuration is unusable.
 */
export function resolveKey(options: VerifierOptions): VerificationKey {
  const given = SOURCES.filter(([option]) => options[option] !== undefined);
  if (given.length === 0) {
    throw new Error(`no JWT key configured: set exactly one of ${SOURCE_LIST}`);
  }
  if (given.length > 1) {
    const names = given.map(([option, env]) => `${option} (${env})`).join(' and ');
    throw new Error(`conflicting JWT key settings: ${names} are ${given.length === 2 ? 'both' : 'all'} set; set exactly one of ${SOURCE_LIST}`);
  }
  if (options.secret !== undefined) return secretKey(options.secret);
  if (options.publicKey !== undefined) return pemKey(options.publicKey);
  return jwksKey(options.jwksUrl as string);
}

function secretKey(secret: string): VerificationKey {
  if (secret.length === 0) throw new Error('secret (AGENTWIRE_JWT_SECRET) is empty');
  const material = new TextEncoder().encode(secret);
  // Given raw bytes, jose imports them into a CryptoKey on every verification, a large share of
  // a connection setup's CPU (docs/BENCHMARKS.md): import once and hand jose the CryptoKey, the
  // same key (HMAC SHA-256, non-extractable, verify only) that jose would import itself.
  let imported: Promise<CryptoKey> | undefined;
  const key: JWTVerifyGetKey = () =>
    (imported ??= crypto.subtle.importKey('raw', material, { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']).catch((error: unknown) => {
      imported = undefined;
      throw error;
    }));
  return { key, algorithms: ['HS256'] };
}

function pemKey(pem: string): VerificationKey {
  // Environment variables often carry PEMs with literal "\n" sequences instead of newlines.
  const text = !pem.includes('\n') && pem.includes('\\n') ? pem.replace(/\\n/g, '\n') : pem;
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`publicKey (AGENTWIRE_JWT_PUBLIC_KEY) is not a usable PEM public key: ${why}`);
  }
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'rsa') {
    const bits = details.modulusLength ?? 0;
    if (bits < 2048) {
      throw new Error(`publicKey (AGENTWIRE_JWT_PUBLIC_KEY) is a ${bits}-bit RSA key; RS256 needs at least 2048 bits`);
    }
    return { key, algorithms: ['RS256'] };
  }
  if (type === 'ec') {
    if (details.namedCurve !== 'prime256v1') {
      throw new Error(
        `publicKey (AGENTWIRE_JWT_PUBLIC_KEY) is an EC key on curve ${details.namedCurve ?? 'unknown'}; ES256 needs P-256`,
      );
    }
    return { key, algorithms: ['ES256'] };
  }
  throw new Error(
    `publicKey (AGENTWIRE_JWT_PUBLIC_KEY) has key type ${type ?? 'unknown'}; only RSA (RS256) and EC P-256 (ES256) are supported`,
  );
}

function jwksKey(jwksUrl: string): VerificationKey {
  let url: URL;
  try {
    url = new URL(jwksUrl);
  } catch {
    throw new Error('jwksUrl (AGENTWIRE_JWKS_URL) is not a valid URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new Error(`jwksUrl (AGENTWIRE_JWKS_URL) must use http or https, not ${url.protocol}`);
  }
  return { key: createRemoteJWKSet(url), algorithms: ['RS256', 'ES256'] };
}
