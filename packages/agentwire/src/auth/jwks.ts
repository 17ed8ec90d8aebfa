import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, customFetch, type FetchImplementation } from 'jose';
import { publicKeyAlgorithm, spkiPem } from './keys.js';
import type { JwksPolicy } from './types.js';

/** Checks a token against one key; throws fast-jwt's TokenError when it does not verify. */
export type TokenCheck = (token: string) => Record<string, unknown>;

/** Keys of the document beyond this many are ignored (a JWKS holds a handful). */
const MAX_KEYS = 64;

interface KeyEntry {
  readonly kid: string | undefined;
  readonly algorithm: 'RS256' | 'ES256';
  readonly check: TokenCheck;
}

/**
 * The keys of the configured JWKS URL, each imported once into its own pinned checker.
 *
 * Fetch policy (jose's createRemoteJWKSet does the fetching: timeout, no redirects, document
 * validation): the first fetch starts at construction, so it does not fall into a connection's
 * auth timeout; a stale document is refetched in the background while its keys keep serving;
 * a token naming a key not in the document triggers at most one refetch per cooldown (failed
 * fetches included), so unknown `kid`s cannot make the gateway hammer the key server. Nothing
 * in a token (`jku`, `x5u`, `jwk`, `iss`) ever chooses what is fetched.
 */
export class JwksKeys {
  readonly #fetchSet: ReturnType<typeof createRemoteJWKSet>;
  readonly #buildCheck: (pem: string, algorithm: 'RS256' | 'ES256') => TokenCheck;
  readonly #cooldownMs: number;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  #entries: KeyEntry[] = [];
  #loadedAt: number | null = null;
  #attemptedAt = Number.NEGATIVE_INFINITY;
  #loading: Promise<void> | null = null;
  #lastError: string | null = null;
  readonly #first: Promise<void>;

  constructor(url: URL, buildCheck: (pem: string, algorithm: 'RS256' | 'ES256') => TokenCheck, policy: JwksPolicy = {}) {
    this.#buildCheck = buildCheck;
    this.#cooldownMs = policy.cooldownMs ?? 30_000;
    this.#maxAgeMs = policy.maxAgeMs ?? 600_000;
    this.#now = policy.now ?? Date.now;
    this.#fetchSet = createRemoteJWKSet(url, {
      timeoutDuration: policy.timeoutMs ?? 3000,
      [customFetch]: boundedFetch(policy.maxBytes ?? 64 * 1024),
    });
    this.#first = this.#load();
  }

  /** Resolves once the first fetch succeeded; rejects with why it failed. */
  async ready(): Promise<void> {
    await this.#first;
    if (this.#loadedAt === null) throw new Error(`JWKS not loaded: ${this.#lastError ?? 'unknown error'}`);
  }

  /** The checker for the key a token's header names, or why there is none. */
  async checkFor(header: { readonly alg: string; readonly kid?: string }): Promise<TokenCheck | string> {
    if (this.#loadedAt === null) {
      if (this.#loading === null && !this.#mayFetch()) return `JWKS not loaded (${this.#lastError ?? 'no answer yet'})`;
      await this.#load();
    } else if (this.#now() - this.#loadedAt >= this.#maxAgeMs && this.#mayFetch()) {
      void this.#load();
    }
    let entry = this.#find(header);
    if (entry === undefined && (this.#loading !== null || this.#mayFetch())) {
      await this.#load();
      entry = this.#find(header);
    }
    if (entry !== undefined) return entry.check;
    return this.#loadedAt === null ? `JWKS not loaded (${this.#lastError ?? 'no answer yet'})` : 'no key in the JWKS matches the token';
  }

  #mayFetch(): boolean {
    return this.#now() - this.#attemptedAt >= this.#cooldownMs;
  }

  /** A named key must match kid and algorithm; an unnamed token only a set with one key of its algorithm. */
  #find({ alg, kid }: { readonly alg: string; readonly kid?: string }): KeyEntry | undefined {
    const candidates = this.#entries.filter((entry) => entry.algorithm === alg && (kid === undefined || entry.kid === kid));
    return kid === undefined && candidates.length !== 1 ? undefined : candidates[0];
  }

  /** Joins the fetch in flight or starts one. Never rejects. */
  #load(): Promise<void> {
    if (this.#loading !== null) return this.#loading;
    this.#attemptedAt = this.#now();
    const loading = (async () => {
      try {
        await this.#fetchSet.reload();
        this.#entries = this.#importKeys(this.#fetchSet.jwks()?.keys ?? []);
        this.#loadedAt = this.#now();
        this.#lastError = null;
      } catch (err) {
        this.#lastError = err instanceof Error ? `${err.name}: ${err.message}`.slice(0, 120) : 'fetch failed';
      } finally {
        this.#loading = null;
      }
    })();
    this.#loading = loading;
    return loading;
  }

  #importKeys(keys: readonly JsonWebKey[]): KeyEntry[] {
    const entries: KeyEntry[] = [];
    for (const jwk of keys.slice(0, MAX_KEYS)) {
      if (jwk.use !== undefined && jwk.use !== 'sig') continue;
      let key: KeyObject;
      try {
        key = createPublicKey({ key: jwk, format: 'jwk' });
      } catch {
        continue; // symmetric ("oct") or malformed keys never verify anything
      }
      const algorithm = publicKeyAlgorithm(key);
      if (typeof algorithm !== 'string' || (jwk.alg !== undefined && jwk.alg !== algorithm)) continue;
      const kid = typeof jwk.kid === 'string' ? jwk.kid : undefined;
      entries.push({ kid, algorithm, check: this.#buildCheck(spkiPem(key), algorithm) });
    }
    return entries;
  }
}

/** fetch, reading at most `maxBytes` of the body (jose reads whatever it is given). */
function boundedFetch(maxBytes: number): FetchImplementation {
  return async (url, init) => {
    const response = await fetch(url, init);
    const declared = Number(response.headers.get('content-length') ?? 0);
    const reader = response.body?.getReader();
    if (declared > maxBytes) {
      await reader?.cancel();
      throw new Error(`JWKS response declares ${declared} bytes, more than ${maxBytes}`);
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (let read = await reader?.read(); read !== undefined && !read.done; read = await reader?.read()) {
      total += read.value.byteLength;
      if (total > maxBytes) {
        await reader?.cancel();
        throw new Error(`JWKS response longer than ${maxBytes} bytes`);
      }
      chunks.push(read.value);
    }
    return new Response(Buffer.concat(chunks), { status: response.status, headers: response.headers });
  };
}
