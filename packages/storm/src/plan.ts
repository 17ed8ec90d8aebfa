import { randomBytes } from 'node:crypto';
import { testTokenUrl } from './tokens.js';
import type { StormOptions, WorkerPlan } from './types.js';

/** Connections per worker process beyond which another process is used (fd limit headroom). */
export const CONNECTIONS_PER_WORKER = 8000;
/** Connections per source address beyond which another loopback address is used (ephemeral ports). */
export const CONNECTIONS_PER_SOURCE_ADDRESS = 25_000;

/** Worker processes for `connections` when --workers is not given. */
export function defaultWorkers(connections: number): number {
  return Math.max(1, Math.ceil(connections / CONNECTIONS_PER_WORKER));
}

/**
 * Source addresses when --source-addresses is not given: none (the system picks) unless the
 * target is loopback and the connections would exhaust one address's ephemeral ports.
 */
export function defaultSourceAddresses(url: string, connections: number): string[] {
  const host = new URL(url).hostname;
  if (!(host === '127.0.0.1' || host === 'localhost') || connections <= CONNECTIONS_PER_SOURCE_ADDRESS) return [];
  const count = Math.min(254, Math.ceil(connections / CONNECTIONS_PER_SOURCE_ADDRESS));
  return Array.from({ length: count }, (_, i) => `127.0.0.${i + 1}`);
}

/**
 * `127.0.0.1-127.0.0.8` (a range in the last octet), `127.0.0.1-8`, or a comma-separated list
 * of IPv4 addresses (ranges allowed inside). Throws with a clear message on anything else.
 */
export function parseSourceAddresses(spec: string): string[] {
  const out: string[] = [];
  for (const part of spec
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const range = /^(\d+\.\d+\.\d+\.)(\d+)-(?:(\d+\.\d+\.\d+\.)?(\d+))$/.exec(part);
    if (range) {
      const [, prefix, fromText, toPrefix, toText] = range;
      if (toPrefix !== undefined && toPrefix !== prefix) throw new Error(`a range must stay within one /24: ${part}`);
      const from = Number(fromText);
      const to = Number(toText);
      if (!validOctets(`${prefix}${from}`) || !validOctets(`${prefix}${to}`) || from > to) throw new Error(`bad address range: ${part}`);
      for (let i = from; i <= to; i += 1) out.push(`${prefix}${i}`);
    } else if (validOctets(part)) {
      out.push(part);
    } else {
      throw new Error(`not an IPv4 address or range: ${part}`);
    }
  }
  if (out.length === 0) throw new Error('no address given');
  return out;
}

function validOctets(address: string): boolean {
  const parts = address.split('.');
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/**
 * Splits the storm over workers. Connection c belongs to user c % users, so each user gets
 * connections/users (±1); user u goes to worker u % workers, with all of its connections, so that
 * comparisons between one user's connections stay inside one worker. Source addresses are
 * assigned round-robin over all connections.
 */
export function planWorkers(options: StormOptions, startedAt: number, runTag = randomBytes(4).toString('hex')): WorkerPlan[] {
  const workers = Math.max(1, Math.min(options.workers, options.users));
  const users = Array.from({ length: options.users }, (_, i) => `${options.userPrefix}${i}`);
  const tokenTtlSec = Math.min(86_400, Math.max(600, Math.ceil(options.durationSec + options.settleTimeoutMs / 1000 + 600)));
  const plans: WorkerPlan[] = Array.from({ length: workers }, (_, index) => ({
    index,
    url: options.url,
    auth: options.auth,
    testTokenUrl: testTokenUrl(options.url),
    tokenTtlSec,
    users: users.filter((_, u) => u % workers === index),
    connections: [],
    rate: 0,
    maxInflight: 0,
    messages: options.messages,
    threads: options.threads,
    durationMs: options.durationSec * 1000,
    keepSending: options.keepSending,
    sendIntervalMs: options.sendIntervalMs,
    readyTimeoutMs: options.readyTimeoutMs,
    ackTimeoutMs: options.ackTimeoutMs,
    settleTimeoutMs: options.settleTimeoutMs,
    startedAt,
    runTag,
  }));
  for (let c = 0; c < options.connections; c += 1) {
    const u = c % options.users;
    const addresses = options.sourceAddresses;
    plans[u % workers]!.connections.push({
      label: `c${c}`,
      user: users[u]!,
      localAddress: addresses.length > 0 ? addresses[c % addresses.length]! : null,
    });
  }
  for (const plan of plans) {
    const share = plan.connections.length / options.connections;
    plan.rate = options.rate * share;
    plan.maxInflight = Math.max(1, Math.ceil(options.maxInflight * share));
  }
  return plans;
}
