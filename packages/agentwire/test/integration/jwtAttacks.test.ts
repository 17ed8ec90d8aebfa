import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, type TokenVerifier, type VerifyResult } from '../../src/auth/index.js';
import { TEST_SECRET, startGateway, type TestGateway } from '../helpers/gateway.js';
import { JwksServer, b64url, ecPair, forge, nowSec, rsaPair } from '../helpers/jwt.js';
import { TestClient } from '../helpers/wsClient.js';

/**
 * The whole JWT attack matrix (PROTOCOL.md section 2), first against the verifier for every
 * key source (HS256 secret, RS256 and ES256 PEMs, JWKS), then over real sockets through a
 * gateway. Every refusal is `token_invalid` unless the token is merely expired, and no detail
 * ever contains the token. Keys are never taken from a token: a `jku`/`x5u` pointing at a
 * server the test runs must cause no request to it.
 */

const OTHER_SECRET = 'another-secret-that-is-also-long-enough-0123456789';
const later = () => nowSec() + 600;
const rsa = rsaPair();
const ec = ecPair();
const attacker = rsaPair();
const attackerEc = ecPair();

/** A server a token may point at (jku, x5u): it counts requests and serves the attacker's key. */
let bait: Server;
let baitUrl = '';
let baitRequests = 0;

beforeAll(async () => {
  bait = createServer((_req, res) => {
    baitRequests += 1;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [{ ...attacker.publicJwk, kid: 'evil' }] }));
  });
  await new Promise<void>((resolve) => bait.listen(0, '127.0.0.1', resolve));
  baitUrl = `http://127.0.0.1:${(bait.address() as AddressInfo).port}/jwks.json`;
});

afterAll(async () => {
  bait.closeAllConnections();
  await new Promise<void>((resolve) => bait.close(() => resolve()));
  expect(baitRequests).toBe(0);
});

interface Attack {
  readonly name: string;
  readonly token: () => string;
  /** Default token_invalid. */
  readonly reason?: 'token_invalid' | 'token_expired';
  /** A word the failure detail must contain. */
  readonly detail?: RegExp;
}

const hs = (claims: unknown, header: Record<string, unknown> = {}, secret: string | null = TEST_SECRET) =>
  forge({ alg: 'HS256', typ: 'JWT', ...header }, claims, secret);

/** Attacks on an HS256 verifier keyed with TEST_SECRET; also sent over sockets. */
const HS256_ATTACKS: Attack[] = [
  { name: 'alg none, empty signature', token: () => forge({ alg: 'none', typ: 'JWT' }, { sub: 'u1', exp: later() }, null), detail: /alg/ },
  { name: 'alg None (other case)', token: () => forge({ alg: 'None' }, { sub: 'u1', exp: later() }, null), detail: /alg/ },
  { name: 'alg none with the HMAC signature kept', token: () => forge({ alg: 'none' }, { sub: 'u1', exp: later() }, TEST_SECRET), detail: /alg/ },
  { name: 'no alg at all', token: () => forge({ typ: 'JWT' }, { sub: 'u1', exp: later() }, null), detail: /alg/ },
  {
    name: 'HS512 signed with the right secret (unexpected algorithm)',
    token: () => forge({ alg: 'HS512' }, { sub: 'u1', exp: later() }, TEST_SECRET),
    detail: /alg/,
  },
  { name: 'RS256 signed by an attacker key', token: () => forge({ alg: 'RS256' }, { sub: 'u1', exp: later() }, attacker.privateKey), detail: /alg/ },
  { name: 'signature of another secret', token: () => hs({ sub: 'u1', exp: later() }, {}, OTHER_SECRET), detail: /signature/ },
  { name: 'signature of an empty secret', token: () => hs({ sub: 'u1', exp: later() }, {}, ''), detail: /signature/ },
  {
    name: 'payload swapped under a valid signature',
    token: () => {
      const [header, , signature] = hs({ sub: 'u1', exp: later() }).split('.');
      return `${header}.${b64url({ sub: 'admin', exp: later() })}.${signature}`;
    },
    detail: /signature/,
  },
  { name: 'signature stripped', token: () => hs({ sub: 'u1', exp: later() }, {}, null) },
  { name: 'crit naming an extension, validly signed', token: () => hs({ sub: 'u1', exp: later() }, { crit: ['x-ext'], 'x-ext': 1 }), detail: /crit/ },
  { name: 'crit naming exp, validly signed', token: () => hs({ sub: 'u1', exp: later() }, { crit: ['exp'] }), detail: /crit/ },
  { name: 'jku to a server of the attacker, validly signed', token: () => hs({ sub: 'u1', exp: later() }, { jku: baitUrl }), detail: /jku/ },
  { name: 'x5u to a server of the attacker, validly signed', token: () => hs({ sub: 'u1', exp: later() }, { x5u: baitUrl }), detail: /x5u/ },
  {
    name: 'embedded jwk of the attacker',
    token: () => forge({ alg: 'HS256', jwk: attacker.publicJwk }, { sub: 'u1', exp: later() }, TEST_SECRET),
    detail: /jwk/,
  },
  { name: 'embedded x5c chain', token: () => hs({ sub: 'u1', exp: later() }, { x5c: ['MIIB'] }), detail: /x5c/ },
  {
    name: 'kid path traversal with an empty-secret signature',
    token: () => hs({ sub: 'u1', exp: later() }, { kid: '../../../../dev/null' }, ''),
    detail: /signature/,
  },
  {
    name: 'kid SQL injection signed with a guessed secret',
    token: () => hs({ sub: 'u1', exp: later() }, { kid: "x' UNION SELECT 'k" }, 'k'),
    detail: /signature/,
  },
  { name: 'kid __proto__ with another secret', token: () => hs({ sub: 'u1', exp: later() }, { kid: '__proto__' }, OTHER_SECRET), detail: /signature/ },
  { name: 'kid that is not a string', token: () => hs({ sub: 'u1', exp: later() }, { kid: { $ne: null } }), detail: /kid/ },
  { name: 'expired', token: () => hs({ sub: 'u1', exp: nowSec() - 120 }), reason: 'token_expired', detail: /exp/ },
  { name: 'missing exp', token: () => hs({ sub: 'u1' }), detail: /exp/ },
  { name: 'exp as a string', token: () => hs({ sub: 'u1', exp: String(later()) }), detail: /exp/ },
  { name: 'exp of 1e309 (Infinity once parsed)', token: () => hs('{"sub":"u1","exp":1e309}'), detail: /exp/ },
  { name: 'exp past the last representable date', token: () => hs({ sub: 'u1', exp: 9e15 }), detail: /exp/ },
  { name: 'nbf an hour ahead', token: () => hs({ sub: 'u1', nbf: nowSec() + 3600, exp: nowSec() + 7200 }), detail: /nbf/ },
  { name: 'missing sub', token: () => hs({ exp: later() }), detail: /sub/ },
  { name: 'sub and exp only under a "__proto__" key', token: () => hs(`{"__proto__":{"sub":"admin","exp":${later()}}}`), detail: /exp|sub/ },
  { name: 'sub "constructor" with exp under "__proto__"', token: () => hs(`{"sub":"constructor","__proto__":{"exp":${later()}}}`), detail: /exp/ },
  { name: 'empty sub', token: () => hs({ sub: '', exp: later() }), detail: /sub/ },
  { name: 'sub of 1025 characters', token: () => hs({ sub: 'x'.repeat(1025), exp: later() }), detail: /sub/ },
  { name: 'sub of 1025 astral characters', token: () => hs({ sub: '😀'.repeat(1025), exp: later() }), detail: /sub/ },
  { name: 'sub a number', token: () => hs({ sub: 42, exp: later() }), detail: /sub/ },
  { name: 'sub an array', token: () => hs({ sub: ['victim'], exp: later() }), detail: /sub/ },
  { name: 'sub an object', token: () => hs({ sub: { toString: 'victim' }, exp: later() }), detail: /sub/ },
  { name: 'sub null', token: () => hs({ sub: null, exp: later() }), detail: /sub/ },
  { name: 'token of 16 KiB + 1', token: () => `${hs({ sub: 'u1', exp: later() })}${'A'.repeat(16 * 1024)}`.slice(0, 16 * 1024 + 1), detail: /longer/ },
  { name: 'token of 60 KB (fits in one frame)', token: () => hs({ sub: 'u1', exp: later(), pad: 'p'.repeat(45_000) }), detail: /longer/ },
  { name: 'header segment not base64url', token: () => `!!!.${b64url({ sub: 'u1' })}.sig`, detail: /base64url/ },
  { name: 'header segment base64 with padding', token: () => `${b64url({ alg: 'HS256' })}==.${b64url({ sub: 'u1' })}.sig`, detail: /base64url/ },
  { name: 'header not JSON', token: () => `${b64url('{"alg":"HS256"')}.${b64url({ sub: 'u1' })}.sig`, detail: /JSON/ },
  { name: 'header a JSON array', token: () => `${b64url('["HS256"]')}.${b64url({ sub: 'u1' })}.sig`, detail: /object/ },
  { name: 'header a JSON string', token: () => `${b64url('"HS256"')}.${b64url({ sub: 'u1' })}.sig`, detail: /object/ },
  { name: 'payload not JSON, validly signed', token: () => hs('{"sub":"u1",') },
  { name: 'payload a JSON array, validly signed', token: () => hs('["u1"]') },
  { name: 'payload segment not base64url', token: () => `${b64url({ alg: 'HS256' })}.$$$.sig` },
  { name: 'signature segment not base64url', token: () => `${hs({ sub: 'u1', exp: later() })}!` },
  { name: 'two segments', token: () => hs({ sub: 'u1', exp: later() }).split('.').slice(0, 2).join('.') },
  { name: 'four segments', token: () => `${hs({ sub: 'u1', exp: later() })}.x` },
  { name: 'a.b.c', token: () => 'a.b.c' },
  { name: 'just dots', token: () => '...' },
  { name: 'not a JWT', token: () => 'not-a-jwt' },
];

function expectRefused(result: VerifyResult, attack: Attack, token: string): void {
  expect(result, attack.name).toMatchObject({ ok: false, reason: attack.reason ?? 'token_invalid' });
  if (result.ok) return;
  if (attack.detail) expect(result.detail, attack.name).toMatch(attack.detail);
  expect(result.detail.length, attack.name).toBeLessThanOrEqual(160);
  expect(result.detail, attack.name).not.toContain(token);
  expect(result.detail, attack.name).not.toContain(token.split('.')[1] || token);
}

async function refuses(verifier: TokenVerifier, attacks: readonly Attack[]): Promise<void> {
  for (const attack of attacks) {
    const token = attack.token();
    expectRefused(await verifier.verify(token), attack, token);
  }
}

describe('HS256 verifier', () => {
  const verifier = createTokenVerifier({ secret: TEST_SECRET });

  it('refuses every attack of the matrix', async () => {
    await refuses(verifier, HS256_ATTACKS);
  });

  it('refuses a 100 KB token without parsing it', async () => {
    const token = hs({ sub: 'u1', exp: later(), pad: 'p'.repeat(100_000) });
    expectRefused(await verifier.verify(token), { name: '100 KB', token: () => token, detail: /longer than 16384/ }, token);
  });

  it('accepts the limits: sub of exactly 1024 characters (also astral), any characters, a token of 16 KiB', async () => {
    for (const sub of ['x'.repeat(1024), '😀'.repeat(1024), 'line\nbreak:{}\u0000', 'u']) {
      expect(await verifier.verify(hs({ sub, exp: later() })), JSON.stringify(sub).slice(0, 20)).toMatchObject({ ok: true, userId: sub });
    }
    const base = hs({ sub: 'u1', exp: later(), pad: '' });
    const padded = hs({ sub: 'u1', exp: later(), pad: 'p'.repeat(Math.floor(((16 * 1024 - base.length) * 3) / 4) - 2) });
    expect(padded.length).toBeLessThanOrEqual(16 * 1024);
    expect(padded.length).toBeGreaterThan(16 * 1024 - 8);
    expect(await verifier.verify(padded)).toMatchObject({ ok: true, userId: 'u1' });
  });

  it('refuses iss and aud that are wrong or missing when configured', async () => {
    const strict = createTokenVerifier({ secret: TEST_SECRET, issuer: 'https://issuer.test', audience: 'agentwire' });
    const good = { sub: 'u1', iss: 'https://issuer.test', aud: 'agentwire', exp: later() };
    expect(await strict.verify(hs(good))).toMatchObject({ ok: true });
    await refuses(strict, [
      { name: 'wrong iss', token: () => hs({ ...good, iss: 'https://evil.test' }), detail: /iss/ },
      { name: 'missing iss', token: () => hs({ ...good, iss: undefined }), detail: /iss/ },
      { name: 'iss as an array', token: () => hs({ ...good, iss: ['https://issuer.test'] }), detail: /iss/ },
      { name: 'wrong aud', token: () => hs({ ...good, aud: 'someone-else' }), detail: /aud/ },
      { name: 'wrong aud list', token: () => hs({ ...good, aud: ['a', 'b'] }), detail: /aud/ },
      { name: 'missing aud', token: () => hs({ ...good, aud: undefined }), detail: /aud/ },
    ]);
  });
});

/** Attacks on a verifier pinned to a public key (RS256 or ES256). */
function publicKeyAttacks(pem: string, own: 'RS256' | 'ES256'): Attack[] {
  const other = own === 'RS256' ? 'ES256' : 'RS256';
  const otherKey = own === 'RS256' ? attackerEc.privateKey : attacker.privateKey;
  const ownAttackerKey = own === 'RS256' ? attacker.privateKey : attackerEc.privateKey;
  const claims = () => ({ sub: 'u1', exp: later() });
  return [
    { name: 'algorithm confusion: HS256 keyed with the public key PEM', token: () => forge({ alg: 'HS256' }, claims(), pem), detail: /alg/ },
    {
      name: 'algorithm confusion: HS256 keyed with the PEM without its final newline',
      token: () => forge({ alg: 'HS256' }, claims(), pem.trim()),
      detail: /alg/,
    },
    { name: `${other} token`, token: () => forge({ alg: other }, claims(), otherKey), detail: /alg/ },
    { name: 'PS256 (other RSA padding)', token: () => forge({ alg: 'PS256' }, claims(), attacker.privateKey), detail: /alg/ },
    { name: 'alg none', token: () => forge({ alg: 'none' }, claims(), null), detail: /alg/ },
    { name: `${own} signed by another key`, token: () => forge({ alg: own }, claims(), ownAttackerKey), detail: /signature/ },
    {
      name: `${own} with the attacker key embedded as jwk`,
      token: () => forge({ alg: own, jwk: attacker.publicJwk }, claims(), ownAttackerKey),
      detail: /jwk/,
    },
    { name: `${own} with jku to the attacker`, token: () => forge({ alg: own, jku: baitUrl, kid: 'evil' }, claims(), ownAttackerKey), detail: /jku/ },
    { name: `${own} with x5u to the attacker`, token: () => forge({ alg: own, x5u: baitUrl }, claims(), ownAttackerKey), detail: /x5u/ },
    { name: `${own} with crit`, token: () => forge({ alg: own, crit: ['b64'], b64: false }, claims(), ownAttackerKey), detail: /crit/ },
  ];
}

describe('PEM verifiers (RS256, ES256)', () => {
  it('an RS256 verifier refuses the matrix and accepts its own tokens', async () => {
    const verifier = createTokenVerifier({ publicKey: rsa.publicPem });
    await refuses(verifier, publicKeyAttacks(rsa.publicPem, 'RS256'));
    expect(await verifier.verify(forge({ alg: 'RS256' }, { sub: 'u1', exp: later() }, rsa.privateKey))).toMatchObject({ ok: true });
    await refuses(verifier, [{ name: 'RS256 missing exp', token: () => forge({ alg: 'RS256' }, { sub: 'u1' }, rsa.privateKey), detail: /exp/ }]);
  });

  it('an ES256 verifier refuses the matrix, and DER-encoded signatures', async () => {
    const verifier = createTokenVerifier({ publicKey: ec.publicPem });
    await refuses(verifier, publicKeyAttacks(ec.publicPem, 'ES256'));
    const valid = forge({ alg: 'ES256' }, { sub: 'u1', exp: later() }, ec.privateKey);
    expect(await verifier.verify(valid)).toMatchObject({ ok: true });
    const { sign } = await import('node:crypto');
    const [h, p] = valid.split('.');
    const der = sign('sha256', Buffer.from(`${h}.${p}`), ec.privateKey).toString('base64url');
    await refuses(verifier, [{ name: 'ES256 with a DER signature', token: () => `${h}.${p}.${der}` }]);
  });
});

describe('JWKS verifier', () => {
  let jwks: JwksServer & { url: string };
  let clockMs = 1_000_000;

  beforeAll(async () => {
    jwks = await JwksServer.start([
      { ...rsa.publicJwk, kid: 'rsa' },
      { ...ec.publicJwk, kid: 'ec' },
      // Keys that must never verify: symmetric, a weak RSA key, one marked for encryption.
      { kty: 'oct', k: Buffer.from(TEST_SECRET).toString('base64url'), kid: 'oct', alg: 'HS256' },
      { ...rsaPair(1024).publicJwk, kid: 'weak' },
      { ...attacker.publicJwk, kid: 'enc', use: 'enc' },
    ]);
  });

  afterAll(() => jwks.close());

  it('refuses the matrix; keys the JWKS must not lend are never used', async () => {
    const verifier = createTokenVerifier({ jwksUrl: jwks.url, jwks: { now: () => clockMs } });
    await verifier.ready?.();
    const claims = () => ({ sub: 'u1', exp: later() });
    // Both algorithms are open to a JWKS, each only for keys of its type.
    const crossAlgorithm = /^(RS256|ES256) token$/;
    await refuses(verifier, [
      ...publicKeyAttacks(rsa.publicPem, 'RS256').filter((attack) => !crossAlgorithm.test(attack.name)),
      ...publicKeyAttacks(ec.publicPem, 'ES256').filter((attack) => !crossAlgorithm.test(attack.name)),
      { name: 'HS256 keyed with the JWKS oct key', token: () => forge({ alg: 'HS256', kid: 'oct' }, claims(), TEST_SECRET), detail: /alg/ },
      { name: 'HS256 keyed with the JWKS document', token: () => forge({ alg: 'HS256', kid: 'rsa' }, claims(), jwks.body), detail: /alg/ },
      { name: 'RS256 naming the ES key', token: () => forge({ alg: 'RS256', kid: 'ec' }, claims(), rsa.privateKey), detail: /no key/ },
      { name: 'RS256 naming the encryption key', token: () => forge({ alg: 'RS256', kid: 'enc' }, claims(), attacker.privateKey), detail: /no key/ },
      { name: 'RS256 naming the 1024-bit key', token: () => forge({ alg: 'RS256', kid: 'weak' }, claims(), attacker.privateKey), detail: /no key/ },
      { name: 'RS256 naming kid __proto__', token: () => forge({ alg: 'RS256', kid: '__proto__' }, claims(), rsa.privateKey), detail: /no key/ },
      { name: 'RS256 naming kid constructor', token: () => forge({ alg: 'RS256', kid: 'constructor' }, claims(), rsa.privateKey), detail: /no key/ },
      { name: 'RS256 with the right key but a kid of another', token: () => forge({ alg: 'RS256', kid: 'evil' }, claims(), rsa.privateKey), detail: /no key/ },
      { name: 'RS256 missing exp', token: () => forge({ alg: 'RS256', kid: 'rsa' }, { sub: 'u1' }, rsa.privateKey), detail: /exp/ },
      { name: 'RS256 expired', token: () => forge({ alg: 'RS256', kid: 'rsa' }, { sub: 'u1', exp: nowSec() - 60 }, rsa.privateKey), reason: 'token_expired' },
    ]);
    expect(await verifier.verify(forge({ alg: 'RS256', kid: 'rsa' }, claims(), rsa.privateKey))).toMatchObject({ ok: true });
  });

  it('unknown kids refetch at most once per cooldown, failed fetches included', async () => {
    const verifier = createTokenVerifier({ jwksUrl: jwks.url, jwks: { now: () => clockMs, cooldownMs: 30_000 } });
    await verifier.ready?.();
    const before = jwks.requests;
    const unknown = (i: number) => forge({ alg: 'RS256', kid: `random-${i}` }, { sub: 'u1', exp: later() }, attacker.privateKey);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => verifier.verify(unknown(i))));
    expect(results.every((r) => !r.ok)).toBe(true);
    expect(jwks.requests).toBe(before);
    clockMs += 30_000;
    await Promise.all(Array.from({ length: 50 }, (_, i) => verifier.verify(unknown(i))));
    expect(jwks.requests).toBe(before + 1);
  });

  it('a JWKS response over the size bound is not loaded', async () => {
    const huge = await JwksServer.start([{ ...rsa.publicJwk, kid: 'rsa', pad: 'x'.repeat(70 * 1024) } as never]);
    try {
      const verifier = createTokenVerifier({ jwksUrl: huge.url });
      await expect(verifier.ready?.()).rejects.toThrow(/longer than|more than/);
    } finally {
      await huge.close();
    }
  });
});

describe('the matrix over real sockets', () => {
  let env: TestGateway;

  beforeAll(async () => {
    env = await startGateway({ drainTimeoutMs: 500 });
  });

  afterAll(() => env.stop());

  async function closeOf(token: string, via: 'subprotocol' | 'frame'): Promise<{ code: number; reason: string }> {
    const client = new TestClient(env.url, { token, via });
    env.clients.push(client);
    if (via === 'frame') {
      await client.opened;
      client.ws.send(JSON.stringify({ type: 'auth', token }));
    }
    return client.closed;
  }

  it('every attack token closes the socket with 4401 and its reason, in the auth frame and (where it fits) the subprotocol', async () => {
    const outcomes = await Promise.all(
      HS256_ATTACKS.flatMap((attack) => {
        const token = attack.token();
        const expected = { code: 4401, reason: attack.reason ?? 'token_invalid' };
        // A subprotocol entry must be an HTTP token: long or odd tokens only go in the frame.
        const fitsHeader = token.length < 8 * 1024 && /^[A-Za-z0-9._~+-]+$/.test(token) && !token.startsWith('.');
        const vias = fitsHeader ? (['frame', 'subprotocol'] as const) : (['frame'] as const);
        return vias.map(async (via) => ({ name: `${attack.name} via ${via}`, expected, got: await closeOf(token, via) }));
      }),
    );
    for (const { name, expected, got } of outcomes) expect(got, name).toEqual(expected);
  });

  it('a 100 KB token in the auth frame ends the connection at the frame limit (1009); the gateway lives on', async () => {
    const token = hs({ sub: 'u1', exp: later(), pad: 'p'.repeat(100_000) });
    expect((await closeOf(token, 'frame')).code).toBe(1009);
    const alice = await env.ready('alice');
    expect(alice.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'alice' });
  });
});
