import { constants, createHmac, createPublicKey, generateKeyPairSync, sign, type JsonWebKey, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Token forging for the JWT tests: any header, any payload (raw JSON text allowed, e.g.
 * `1e309`), signed by node:crypto according to the header's `alg` (HS*, RS*, PS*, ES256, none),
 * so that tests can build tokens that no well-behaved JWT library would sign.
 */

export const nowSec = (): number => Math.floor(Date.now() / 1000);

/** base64url of JSON (or of a string given as is). */
export function b64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

export function forge(header: Record<string, unknown>, payload: unknown, key: string | KeyObject | null): string {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${signature(String(header.alg), input, key)}`;
}

function signature(alg: string, input: string, key: string | KeyObject | null): string {
  if (key === null || alg.toLowerCase() === 'none') return '';
  const hash = `sha${alg.slice(2)}`;
  const data = Buffer.from(input);
  if (alg.startsWith('HS')) return createHmac(hash, key).update(data).digest('base64url');
  if (typeof key === 'string') throw new Error(`forge: ${alg} needs a private KeyObject`);
  if (alg.startsWith('RS')) return sign(hash, data, key).toString('base64url');
  if (alg.startsWith('PS')) {
    return sign(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }).toString('base64url');
  }
  if (alg.startsWith('ES')) return sign(hash, data, { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  throw new Error(`forge: unknown alg ${alg}`);
}

export interface KeyPair {
  privateKey: KeyObject;
  publicPem: string;
  publicJwk: JsonWebKey;
}

export function rsaPair(bits = 2048): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return describePair(privateKey, publicKey);
}

export function ecPair(namedCurve = 'prime256v1'): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
  return describePair(privateKey, publicKey);
}

function describePair(privateKey: KeyObject, publicKey: KeyObject): KeyPair {
  return {
    privateKey,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    publicJwk: createPublicKey(privateKey).export({ format: 'jwk' }),
  };
}

/** An HTTP server on 127.0.0.1 serving a JWKS (or anything) and counting requests. */
export class JwksServer {
  requests = 0;
  body: string;
  readonly #server: Server;

  /** Only `JwksServer.start()` constructs one (it waits until the server listens). */
  constructor(body: string) {
    this.body = body;
    this.#server = createServer((_req, res) => {
      this.requests += 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end(this.body);
    });
  }

  static async start(keys: readonly JsonWebKey[]): Promise<JwksServer & { url: string }> {
    const server = new JwksServer(JSON.stringify({ keys }));
    await new Promise<void>((resolve) => server.#server.listen(0, '127.0.0.1', resolve));
    const { port } = server.#server.address() as AddressInfo;
    return Object.assign(server, { url: `http://127.0.0.1:${port}/.well-known/jwks.json` });
  }

  setKeys(keys: readonly JsonWebKey[]): void {
    this.body = JSON.stringify({ keys });
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve, reject) => this.#server.close((err) => (err ? reject(err) : resolve())));
  }
}
