import type { IncomingHttpHeaders } from 'node:http';
import { PROTOCOL_NAME, TOKEN_PROTOCOL_PREFIX } from '@agentwire/protocol';

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

export interface UpgradeCredentials {
  token: string | null;
  method: 'header' | 'subprotocol' | null;
  /** Header and subprotocol (or two subprotocol entries) carry different tokens: refuse with 4401. */
  conflict: boolean;
}

/**
 * Reads credentials from an upgrade request: `Authorization: Bearer <jwt>` and/or a
 * `jwt.<jwt>` entry in `Sec-WebSocket-Protocol`. The header wins when both agree; when they
 * differ, `conflict` is true (the header token is still reported, but must not be used).
 */
export function extractUpgradeCredentials(headers: IncomingHttpHeaders): UpgradeCredentials {
  const headerToken = bearerToken(headers.authorization);
  const protocolTokens = [
    ...new Set(
      subprotocolEntries(headers['sec-websocket-protocol'])
        .filter((entry) => entry.startsWith(TOKEN_PROTOCOL_PREFIX) && entry.length > TOKEN_PROTOCOL_PREFIX.length)
        .map((entry) => entry.slice(TOKEN_PROTOCOL_PREFIX.length)),
    ),
  ];
  const protocolToken = protocolTokens[0] ?? null;
  const conflict = protocolTokens.length > 1 || (headerToken !== null && protocolToken !== null && headerToken !== protocolToken);

  if (headerToken !== null) return { token: headerToken, method: 'header', conflict };
  if (protocolToken !== null) return { token: protocolToken, method: 'subprotocol', conflict };
  return { token: null, method: null, conflict: false };
}

/**
 * Chooses the subprotocol to answer with (usable as `ws`'s `handleProtocols`): `agentwire.v1`
 * when offered, else the first `jwt.*` entry (older clients expect it echoed), else none.
 */
export function selectSubprotocol(offered: Set<string>): string | false {
  if (offered.has(PROTOCOL_NAME)) return PROTOCOL_NAME;
  for (const entry of offered) {
    if (entry.startsWith(TOKEN_PROTOCOL_PREFIX)) return entry;
  }
  return false;
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(value: string | undefined): string | null {
  if (value === undefined) return null;
  const match = BEARER.exec(value.trim());
  return match?.[1] ?? null;
}

function subprotocolEntries(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const joined = Array.isArray(value) ? value.join(',') : value;
  return joined
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
}
