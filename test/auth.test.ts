import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bypassKeyMatches,
  createTokenVerifier,
  extractUpgradeCredentials,
  selectSubprotocol,
  signToken,
  type VerifyResult,
} from '../src/auth/index.js';

const SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';
const nowSec = (): number => Math.floor(Date.now() / 1000);

function rsaPair(bits = 2048): { privateKey: KeyObject; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

function ecPair(namedCurve = 'prime256v1'): { privateKey: KeyObject; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

async function hs256(claims: JWTPayload, secret = SECRET): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
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
    const result = await verifier.verify(await hs256({ sub: 'u1', exp }));
    expect(result).toEqual({ ok: true, userId: 'u1', expiresAt: exp * 1000 });
  });

  it('accepts a token without exp and reports expiresAt null', async () => {
    const result = await verifier.verify(await hs256({ sub: 'u2' }));
    expect(result).toEqual({ ok: true, userId: 'u2', expiresAt: null });
  });

  it('reports token_missing for undefined, null, empty and blank tokens', async () => {
    for (const token of [undefined, null, '', '   ']) {
      expectFailure(await verifier.verify(token), 'token_missing');
    }
  });

  it('reports token_expired for an expired token', async () => {
    const token = await hs256({ sub: 'u1', exp: nowSec() - 60 });
    expectFailure(await verifier.verify(token), 'token_expired', token);
  });

  it('tolerates clock skew within clockToleranceSec and not beyond', async () => {
    const token = await hs256({ sub: 'u1', exp: nowSec() - 20 });
    expect((await createTokenVerifier({ secret: SECRET, clockToleranceSec: 60 }).verify(token)).ok).toBe(true);
    expectFailure(await createTokenVerifier({ secret: SECRET, clockToleranceSec: 0 }).verify(token), 'token_expired');
  });

  it('reports token_invalid for a bad signature', async () => {
    const token = await hs256({ sub: 'u1', exp: nowSec() + 600 }, 'some-other-secret-entirely-0123456789');
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });

  it('reports token_invalid for a tampered payload', async () => {
    const token = await hs256({ sub: 'u1', exp: nowSec() + 600 });
    const [header, , signature] = token.split('.');
    const forged = `${header}.${b64url({ sub: 'admin', exp: nowSec() + 600 })}.${signature}`;
    expectFailure(await verifier.verify(forged), 'token_invalid', forged);
  });

  it('refuses an alg:none token', async () => {
    const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'u1', exp: nowSec() + 600 })}.`;
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });

  it('reports token_invalid for malformed tokens', async () => {
    for (const token of ['not-a-jwt', 'a.b.c', 'a.b', `${b64url({ alg: 'HS256' })}.!!!.x`]) {
      expectFailure(await verifier.verify(token), 'token_invalid', token);
    }
  });

  it('refuses a token whose nbf is in the future', async () => {
    const token = await hs256({ sub: 'u1', nbf: nowSec() + 3600, exp: nowSec() + 7200 });
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });

  it('refuses a token without sub, or with an empty or non-string sub', async () => {
    for (const claims of [{}, { sub: '' }, { sub: 42 }] as JWTPayload[]) {
      const token = await hs256({ ...claims, exp: nowSec() + 600 });
      const result = await verifier.verify(token);
      expectFailure(result, 'token_invalid', token);
      if (!result.ok) expect(result.detail).toContain('sub');
    }
  });
});

describe('issuer and audience checks', () => {
  const verifier = createTokenVerifier({ secret: SECRET, issuer: 'https://issuer.test', audience: 'agentwire' });

  it('accepts matching iss and aud', async () => {
    const token = await hs256({ sub: 'u1', iss: 'https://issuer.test', aud: 'agentwire', exp: nowSec() + 60 });
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'u1' });
  });

  it('refuses a wrong audience', async () => {
    const token = await hs256({ sub: 'u1', iss: 'https://issuer.test', aud: 'someone-else', exp: nowSec() + 60 });
    const result = await verifier.verify(token);
    expectFailure(result, 'token_invalid', token);
    if (!result.ok) expect(result.detail).toContain('aud');
  });

  it('refuses a wrong issuer', async () => {
    const token = await hs256({ sub: 'u1', iss: 'https://evil.test', aud: 'agentwire', exp: nowSec() + 60 });
    const result = await verifier.verify(token);
    expectFailure(result, 'token_invalid', token);
    if (!result.ok) expect(result.detail).toContain('iss');
  });

  it('refuses a token missing the configured claims', async () => {
    const token = await hs256({ sub: 'u1', exp: nowSec() + 60 });
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });
});

describe('createTokenVerifier with a PEM public key', () => {
  const rsa = rsaPair();
  const ec = ecPair();

  it('verifies RS256 with an RSA key', async () => {
    const verifier = createTokenVerifier({ publicKey: rsa.publicPem });
    const token = await new SignJWT({ sub: 'rsa-user' })
      .setProtectedHeader({ alg: 'RS256' })
      .setExpirationTime(nowSec() + 60)
      .sign(rsa.privateKey);
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'rsa-user' });
  });

  it('verifies ES256 with an EC P-256 key', async () => {
    const verifier = createTokenVerifier({ publicKey: ec.publicPem });
    const token = await new SignJWT({ sub: 'ec-user' })
      .setProtectedHeader({ alg: 'ES256' })
      .setExpirationTime(nowSec() + 60)
      .sign(ec.privateKey);
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'ec-user' });
  });

  it('accepts a PEM whose newlines arrive as literal \\n (environment variables)', async () => {
    const verifier = createTokenVerifier({ publicKey: ec.publicPem.replace(/\n/g, '\\n') });
    const token = await new SignJWT({ sub: 'ec-user' }).setProtectedHeader({ alg: 'ES256' }).sign(ec.privateKey);
    expect((await verifier.verify(token)).ok).toBe(true);
  });

  it('refuses an RS256 token signed by another key', async () => {
    const verifier = createTokenVerifier({ publicKey: rsa.publicPem });
    const token = await new SignJWT({ sub: 'u1' }).setProtectedHeader({ alg: 'RS256' }).sign(rsaPair().privateKey);
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });

  it('refuses an HS256 token presented to an RS256 verifier', async () => {
    const verifier = createTokenVerifier({ publicKey: rsa.publicPem });
    const token = await hs256({ sub: 'u1', exp: nowSec() + 60 });
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });

  it('refuses algorithm confusion: HS256 signed with the public key PEM as secret', async () => {
    const verifier = createTokenVerifier({ publicKey: rsa.publicPem });
    const token = await hs256({ sub: 'u1', exp: nowSec() + 60 }, rsa.publicPem);
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });

  it('refuses an RS256 token presented to an ES256 verifier', async () => {
    const verifier = createTokenVerifier({ publicKey: ec.publicPem });
    const token = await new SignJWT({ sub: 'u1' }).setProtectedHeader({ alg: 'RS256' }).sign(rsa.privateKey);
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });
});

describe('createTokenVerifier with a remote JWKS', () => {
  const rsa = rsaPair();
  let server: Server;
  let jwksUrl: string;
  let requests = 0;

  beforeAll(async () => {
    const jwk = await exportJWK(createPublicKey(rsa.privateKey));
    const body = JSON.stringify({ keys: [{ ...jwk, kid: 'key-1', alg: 'RS256', use: 'sig' }] });
    server = createServer((req, res) => {
      requests += 1;
      if (req.url !== '/.well-known/jwks.json') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    jwksUrl = `http://127.0.0.1:${port}/.well-known/jwks.json`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  });

  it('verifies an RS256 token through the JWKS', async () => {
    const verifier = createTokenVerifier({ jwksUrl });
    const token = await new SignJWT({ sub: 'jwks-user' })
      .setProtectedHeader({ alg: 'RS256', kid: 'key-1' })
      .setExpirationTime(nowSec() + 60)
      .sign(rsa.privateKey);
    expect(await verifier.verify(token)).toMatchObject({ ok: true, userId: 'jwks-user' });
    expect(requests).toBeGreaterThanOrEqual(1);
  });

  it('refuses a token signed by a key that is not in the JWKS', async () => {
    const verifier = createTokenVerifier({ jwksUrl });
    const token = await new SignJWT({ sub: 'u1' })
      .setProtectedHeader({ alg: 'RS256', kid: 'key-1' })
      .sign(rsaPair().privateKey);
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });

  it('refuses an HS256 token through the JWKS verifier', async () => {
    const verifier = createTokenVerifier({ jwksUrl });
    const token = await hs256({ sub: 'u1', exp: nowSec() + 60 });
    expectFailure(await verifier.verify(token), 'token_invalid', token);
  });
});

describe('createTokenVerifier configuration errors', () => {
  it('names all three settings when no key source is given', () => {
    expect(() => createTokenVerifier({})).toThrow(/secret.*publicKey.*jwksUrl/);
    expect(() => createTokenVerifier({ issuer: 'x' })).toThrow(/AGENTWIRE_JWT_SECRET/);
  });

  it('names the conflicting settings when two or three are given', () => {
    expect(() => createTokenVerifier({ secret: SECRET, publicKey: rsaPair().publicPem })).toThrow(
      /conflicting.*secret.*publicKey/,
    );
    expect(() => createTokenVerifier({ secret: SECRET, jwksUrl: 'https://x.test/jwks' })).toThrow(
      /conflicting.*secret.*jwksUrl/,
    );
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
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { alg: string };
    expect(header.alg).toBe('HS256');
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
    expect(
      extractUpgradeCredentials(
        h({ authorization: 'Bearer aaa.bbb.ccc', 'sec-websocket-protocol': 'agentwire.v1, jwt.aaa.bbb.ccc' }),
      ),
    ).toEqual({ token: 'aaa.bbb.ccc', method: 'header', conflict: false });
  });

  it('reports a conflict when header and subprotocol differ', () => {
    expect(
      extractUpgradeCredentials(h({ authorization: 'Bearer aaa.bbb.ccc', 'sec-websocket-protocol': 'jwt.xxx.yyy.zzz' })),
    ).toMatchObject({ conflict: true });
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
