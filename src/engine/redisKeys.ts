/**
 * Redis key and channel names. Every key of one user carries the same hash tag, `{<user>}`, so
 * they share a Redis Cluster slot and one Lua script may touch them all.
 */
export interface UserKeys {
  /** Hash: `epoch`, `seq`. */
  readonly meta: string;
  /** Stream of the user's events; entry id `<seq>-0`. */
  readonly log: string;
  /** Pub/sub channel waking the nodes that serve this user. */
  readonly live: string;
  /** Prefix of idempotency keys: `<claims><messageId>`. */
  readonly claims: string;
  /** Prefix of run records: `<runs><runId>` (hash). */
  readonly runs: string;
  /** Prefix of per-thread run queues: `<threads><threadId>` (list of run ids). */
  readonly threads: string;
  /** Sorted set of the user's live connections across nodes (score = expiry). */
  readonly connections: string;
}

/** `{` and `}` would break the hash tag; `%` is escaped first so the encoding is reversible. */
function tag(userId: string): string {
  return userId.replace(/%/g, '%25').replace(/\{/g, '%7B').replace(/\}/g, '%7D');
}

export function userKeys(prefix: string, userId: string): UserKeys {
  const base = `${prefix}:{${tag(userId)}}`;
  return {
    meta: `${base}:meta`,
    log: `${base}:log`,
    live: `${base}:live`,
    claims: `${base}:msg:`,
    runs: `${base}:run:`,
    threads: `${base}:thread:`,
    connections: `${base}:conns`,
  };
}
