import { generateKeyPairSync } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bypassKeyMatches, createTokenVerifier, extractUpgradeCredentials, selectSubprotocol, signToken, type VerifyResult } from '../../src/auth/index.js';
import { JwksServer, ecPair, forge, nowSec, rsaPair } from '../helpers/jwt.js';

/**
 * The verifier's working paths (the refusals are all in test/jwtAttacks.test.ts), its
 * configuration errors, signToken, upgrade credentials, subprotocol selection, bypass keys.
 */

const SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

function hs256(claims: Record<string, unknown>, secret = SECRET): string {
  return forge({ alg: 'HS256', typ: 'JWT' }, claims, secret);
}

function expectFailure(result: VerifyResult, reason: string, token?: string): void {
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.reason).toBe(reason);
  expect(result.detail.length).toBeGreaterThan(0);
  if (token !== undefined) expect(result.detail).not.toContain(token);
}

describe('createTokenVerifier with an HS256 secret', () => {
  const verifier = createTokenVerifier({ secret: SECRET });

  it('accepts a valid token and reports user and expiry', async () => {
    const exp = nowSec() + 600;
    const result = await verifier.verify(hs256({ sub: 'u1', exp }));
    expect(result).toEqual({ ok: true, userId: 'u1', expiresAt: exp * 1000 });
  });

  it('is ready at once', async () => {
    await expect(verifier.ready?.()).resolves.toBeUndefined();
  });

  it('reports token_missing for undefined, null, empty and blank tokens', async () => {
    for (const token of [undefined, null, '', '   ']) {
      expectFailure(await verifier.verify(token), 'token_missing');
    }
  });

  it('tolerates clock skew within clockToleranceSec and not beyond', async () => {
    const token = hs256({ sub: 'u1', exp: nowSec() - 20 });
    expect((await createTokenVerifier({ secret: SECRET, clockToleranceSec: 60 }).verify(token)).ok).toBe(true);
    expectFailure(await createTokenVerifier({ secret: SECRET, clockToleranceSec: 0 }).verify(token), 'token_expired');
  });
});

describe('issuer and audience checks', () => {
  const verifier = createTokenVerifier({ secret: SECRET, issuer: 'https://issuer.test', audience: 'agentwire' });

  it('accepts matching iss and aud (aud also as an array)', async () => {
    const token = hs256({ sub: 'u1', iss: 'https://issuer.test', aud: 'agentwire', exp: nowSec() + 60 });
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'u1' });
    const listed = hs256({ sub: 'u1', iss: 'https://issuer.test', aud: ['other', 'agentwire'], exp: nowSec() + 60 });
    expect(await verifier.verify(listed)).toMatchObject({ ok: true, userId: 'u1' });
  });
});

describe('createTokenVerifier with a PEM public key', () => {
  const rsa = rsaPair();
  const ec = ecPair();

  it('verifies RS256 with an RSA key', async () => {
    const verifier = createTokenVerifier({ publicKey: rsa.publicPem });
    const token = forge({ alg: 'RS256' }, { sub: 'rsa-user', exp: nowSec() + 60 }, rsa.privateKey);
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'rsa-user' });
  });

  it('verifies ES256 with an EC P-256 key', async () => {
    const verifier = createTokenVerifier({ publicKey: ec.publicPem });
    const token = forge({ alg: 'ES256' }, { sub: 'ec-user', exp: nowSec() + 60 }, ec.privateKey);
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'ec-user' });
  });

  it('accepts a PEM whose newlines arrive as literal \\n (environment variables)', async () => {
    const verifier = createTokenVerifier({ publicKey: ec.publicPem.replace(/\n/g, '\\n') });
    const token = forge({ alg: 'ES256' }, { sub: 'ec-user', exp: nowSec() + 60 }, ec.privateKey);
    expect((await verifier.verify(token)).ok).toBe(true);
  });
});

describe('createTokenVerifier with a remote JWKS', () => {
  const rsa = rsaPair();
  const ec = ecPair();
  let jwks: JwksServer & { url: string };

  beforeAll(async () => {
    jwks = await JwksServer.start([
      { ...rsa.publicJwk, kid: 'key-1', alg: 'RS256', use: 'sig' },
      { ...ec.publicJwk, kid: 'key-2' },
    ]);
  });

  afterAll(() => jwks.close());

  it('fetches the JWKS when created (before any token) and then verifies RS256 and ES256 tokens', async () => {
    const before = jwks.requests;
    const verifier = createTokenVerifier({ jwksUrl: jwks.url });
    await verifier.ready?.();
    expect(jwks.requests).toBe(before + 1);
    const rs = forge({ alg: 'RS256', kid: 'key-1' }, { sub: 'jwks-user', exp: nowSec() + 60 }, rsa.privateKey);
    expect(await verifier.verify(rs)).toMatchObject({ ok: true, userId: 'jwks-user' });
    const es = forge({ alg: 'ES256', kid: 'key-2' }, { sub: 'ec-user', exp: nowSec() + 60 }, ec.privateKey);
    expect(await verifier.verify(es)).toMatchObject({ ok: true, userId: 'ec-user' });
    expect(jwks.requests).toBe(before + 1);
  });

  it('picks the only key of the algorithm for a token without kid', async () => {
    const verifier = createTokenVerifier({ jwksUrl: jwks.url });
    const token = forge({ alg: 'ES256' }, { sub: 'no-kid', exp: nowSec() + 60 }, ec.privateKey);
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'no-kid' });
  });

  it('verifies a token signed by a rotated-in key after one refetch (cooldown passed)', async () => {
    const verifier = createTokenVerifier({ jwksUrl: jwks.url, jwks: { cooldownMs: 0 } });
    await verifier.ready?.();
    const next = rsaPair();
    jwks.setKeys([
      { ...rsa.publicJwk, kid: 'key-1' },
      { ...next.publicJwk, kid: 'key-3' },
    ]);
    try {
      const before = jwks.requests;
      const token = forge({ alg: 'RS256', kid: 'key-3' }, { sub: 'rotated', exp: nowSec() + 60 }, next.privateKey);
      expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'rotated' });
      expect(jwks.requests).toBe(before + 1);
    } finally {
      jwks.setKeys([
        { ...rsa.publicJwk, kid: 'key-1', alg: 'RS256', use: 'sig' },
        { ...ec.publicJwk, kid: 'key-2' },
      ]);
    }
  });

  it('ready() rejects, naming the failure, when the JWKS cannot be loaded', async () => {
    const verifier = createTokenVerifier({ jwksUrl: 'http://127.0.0.1:1/jwks.json' });
    await expect(verifier.ready?.()).rejects.toThrow(/JWKS not loaded/);
  });
});

describe('createTokenVerifier configuration errors', () => {
  it('names all three settings when no key source is given', () => {
    expect(() => createTokenVerifier({})).toThrow(/secret.*publicKey.*jwksUrl/);
    expect(() => createTokenVerifier({ issuer: 'x' })).toThrow(/AGENTWIRE_JWT_SECRET/);
  });

  it('names the conflicting settings when two or three are given', () => {
    expect(() => createTokenVerifier({ secret: SECRET, publicKey: rsaPair().publicPem })).toThrow(/conflicting.*secret.*publicKey/);
    expect(() => createTokenVerifier({ secret: SECRET, jwksUrl: 'https://x.test/jwks' })).toThrow(/conflicting.*secret.*jwksUrl/);
  });

  it('rejects an empty secret, an unusable PEM and unsupported key types', () => {
    expect(() => createTokenVerifier({ secret: '' })).toThrow(/secret/);
    expect(() => createTokenVerifier({ publicKey: 'not a pem' })).toThrow(/publicKey.*PEM/);
    expect(() => createTokenVerifier({ publicKey: ecPair('secp384r1').publicPem })).toThrow(/publicKey.*P-256/);
    expect(() => createTokenVerifier({ publicKey: rsaPair(1024).publicPem })).toThrow(/publicKey.*2048/);
    const ed = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(() => createTokenVerifier({ publicKey: ed })).toThrow(/publicKey.*ed25519/);
  });

  it('rejects a bad jwksUrl and a bad clockToleranceSec', () => {
    expect(() => createTokenVerifier({ jwksUrl: 'not a url' })).toThrow(/jwksUrl/);
    expect(() => createTokenVerifier({ jwksUrl: 'file:///etc/jwks.json' })).toThrow(/jwksUrl/);
    expect(() => createTokenVerifier({ secret: SECRET, clockToleranceSec: -1 })).toThrow(/clockToleranceSec/);
  });
});

describe('signToken', () => {
  it('round-trips through a verifier with iss and aud', async () => {
    const before = Date.now();
    const { token, expiresAt } = await signToken(SECRET, {
      sub: 'u1',
      ttlSec: 600,
      issuer: 'agentwire',
      audience: 'agentwire-clients',
    });
    expect(expiresAt.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 600_000);
    expect(expiresAt.getTime()).toBeLessThanOrEqual(before + 601_000);
    const verifier = createTokenVerifier({ secret: SECRET, issuer: 'agentwire', audience: 'agentwire-clients' });
    expect(await verifier.verify(token)).toEqual({ ok: true, userId: 'u1', expiresAt: expiresAt.getTime() });
    const [header, claims] = token.split('.', 2).map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>);
    expect(header).toEqual({ alg: 'HS256', typ: 'JWT' });
    expect(claims).toEqual({ sub: 'u1', iat: expect.any(Number), exp: expiresAt.getTime() / 1000, iss: 'agentwire', aud: 'agentwire-clients' });
    expect((claims!.exp as number) - (claims!.iat as number)).toBe(600);
  });

  it('is refused by a verifier expecting another audience or secret', async () => {
    const { token } = await signToken(SECRET, { sub: 'u1', ttlSec: 60, audience: 'a' });
    expectFailure(await createTokenVerifier({ secret: SECRET, audience: 'b' }).verify(token), 'token_invalid');
    expectFailure(await createTokenVerifier({ secret: `${SECRET}x` }).verify(token), 'token_invalid');
  });

  it('rejects bad arguments', async () => {
    await expect(signToken('', { sub: 'u1', ttlSec: 60 })).rejects.toThrow(/secret/);
    await expect(signToken(SECRET, { sub: '', ttlSec: 60 })).rejects.toThrow(/sub/);
    await expect(signToken(SECRET, { sub: 'u1', ttlSec: 0 })).rejects.toThrow(/ttlSec/);
  });
});

describe('extractUpgradeCredentials', () => {
  const h = (headers: IncomingHttpHeaders): IncomingHttpHeaders => headers;

  it('reads a Bearer header with any scheme case', () => {
    expect(extractUpgradeCredentials(h({ authorization: 'Bearer aaa.bbb.ccc' }))).toEqual({
      token: 'aaa.bbb.ccc',
      method: 'header',
      conflict: false,
    });
    expect(extractUpgradeCredentials(h({ authorization: 'bEaReR   aaa.bbb.ccc ' })).token).toBe('aaa.bbb.ccc');
  });

  it('ignores non-Bearer authorization headers', () => {
    expect(extractUpgradeCredentials(h({ authorization: 'Basic dXNlcjpwYXNz' }))).toEqual({
      token: null,
      method: null,
      conflict: false,
    });
  });

  it('reads a jwt.* subprotocol entry, trimming entries', () => {
    expect(extractUpgradeCredentials(h({ 'sec-websocket-protocol': 'agentwire.v1 ,  jwt.aaa.bbb.ccc ' }))).toEqual({
      token: 'aaa.bbb.ccc',
      method: 'subprotocol',
      conflict: false,
    });
  });

  it('reports header when both are present and equal', () => {
    expect(extractUpgradeCredentials(h({ authorization: 'Bearer aaa.bbb.ccc', 'sec-websocket-protocol': 'agentwire.v1, jwt.aaa.bbb.ccc' }))).toEqual({
      token: 'aaa.bbb.ccc',
      method: 'header',
      conflict: false,
    });
  });

  it('reports a conflict when header and subprotocol differ', () => {
    expect(extractUpgradeCredentials(h({ authorization: 'Bearer aaa.bbb.ccc', 'sec-websocket-protocol': 'jwt.xxx.yyy.zzz' }))).toMatchObject({
      conflict: true,
    });
  });

  it('reports a conflict when two different jwt.* entries are offered', () => {
    expect(extractUpgradeCredentials(h({ 'sec-websocket-protocol': 'jwt.a.b.c, jwt.d.e.f' }))).toMatchObject({
      conflict: true,
    });
  });

  it('returns nothing when no credentials are present', () => {
    expect(extractUpgradeCredentials(h({}))).toEqual({ token: null, method: null, conflict: false });
    expect(extractUpgradeCredentials(h({ 'sec-websocket-protocol': 'agentwire.v1, jwt.' }))).toEqual({
      token: null,
      method: null,
      conflict: false,
    });
  });
});

describe('selectSubprotocol', () => {
  it('prefers agentwire.v1', () => {
    expect(selectSubprotocol(new Set(['jwt.a.b.c', 'agentwire.v1']))).toBe('agentwire.v1');
  });

  it('echoes the first jwt.* entry for older clients', () => {
    expect(selectSubprotocol(new Set(['chat', 'jwt.a.b.c', 'jwt.d.e.f']))).toBe('jwt.a.b.c');
  });

  it('returns false when nothing usable is offered', () => {
    expect(selectSubprotocol(new Set())).toBe(false);
    expect(selectSubprotocol(new Set(['chat', 'agentwire.v2']))).toBe(false);
  });
});

describe('bypassKeyMatches', () => {
  it('matches only the exact key', () => {
    expect(bypassKeyMatches('s3cret-key', 's3cret-key')).toBe(true);
    expect(bypassKeyMatches('s3cret-key', 's3cret-kez')).toBe(false);
  });

  it('refuses a missing key, keys of different length and an empty expected key', () => {
    expect(bypassKeyMatches('s3cret-key', undefined)).toBe(false);
    expect(bypassKeyMatches('s3cret-key', '')).toBe(false);
    expect(bypassKeyMatches('s3cret-key', 's3cret-key-but-longer')).toBe(false);
    expect(bypassKeyMatches('s3cret-key', 's3cret')).toBe(false);
    expect(bypassKeyMatches('', '')).toBe(false);
  });
});
