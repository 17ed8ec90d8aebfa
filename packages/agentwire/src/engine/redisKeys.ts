/**
 * Redis key and channel names. Users are spread over LEASE_BUCKETS fixed buckets; every key of
 * a user carries its bucket's hash tag, `<prefix>:{b<k>}:{<user>}:...`, and so does the
 * bucket's lease set (`<prefix>:{b<k>}:run-leases`). A user's keys and the leases of its runs
 * thus share one Redis Cluster slot, so every Lua script touches a single slot, on one Redis or
 * on a Cluster alike. The user stays in braces of its own (the second pair: only the first is
 * the hash tag), which delimit it from what follows.
 *
 * No id a client controls (user, message, thread) ever needs a separator: each is written with
 * `encodeId` (reversible, and free of `{`/`}`), and only as the last part of a key or as the
 * whole hash tag, whose end the first `}` marks. Run ids are the gateway's own
 * (`isRunId`); a client-sent one is checked before it is used in a key.
 */
export interface UserKeys {
  /** Sorted set of the leases of the bucket's running runs (member `[user, run]` JSON, score = expiry). */
  readonly leases: string;
  /** Hash: `epoch`, `seq`. */
  readonly meta: string;
  /** Stream of the user's events; entry id `<seq>-0`. */
  readonly log: string;
  /** Pub/sub channel waking the nodes that serve this user. */
  readonly live: string;
  /** Prefix of run records (hashes), for Lua scripts; from TypeScript use `run()`. */
  readonly runs: string;
  /** Sorted set of the user's live connections across nodes (score = expiry). */
  readonly connections: string;
  /** Sorted set of the user's runs that are running or queued (member = run id, score = enqueue time). */
  readonly activeRuns: string;
  /** Hash: the history's marks on threads (field = encoded thread id, value = JSON: title, deletion). */
  readonly threadMarks: string;
  /** Idempotency key of a message id (string: the claim's JSON). */
  claim(messageId: string): string;
  /** A run record (hash). Throws for anything but a run id of the gateway's format. */
  run(runId: string): string;
  /** A thread's run queue (list of run ids). */
  thread(threadId: string): string;
}

/**
 * Run ids as the gateway makes them (`run_<uuid>`), and any id of that alphabet: no separator,
 * no escape, nothing that could reach another key.
 */
const RUN_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function isRunId(value: string): boolean {
  return RUN_ID.test(value);
}

/** A lone surrogate half: Redis stores UTF-8, which would turn it into U+FFFD (lossy). */
const ESCAPED = /[%{}]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const ESCAPE = /%(25|7B|7D|u[0-9A-F]{4})/g;

/**
 * Reversible and one-to-one: `%` (first, so `%7B` stays distinct from `{`), `{` and `}` (they
 * would end the hash tag) and lone surrogate halves (lossy in UTF-8, so `a\uD800` and `a\uFFFD`
 * would share keys) become `%25`, `%7B`, `%7D`, `%uD800`. Well-formed text is otherwise kept.
 */
export function encodeId(id: string): string {
  return id.replace(ESCAPED, (char) => {
    if (char === '%') return '%25';
    if (char === '{') return '%7B';
    if (char === '}') return '%7D';
    return `%u${char.charCodeAt(0).toString(16).toUpperCase()}`;
  });
}

export function decodeId(encoded: string): string {
  return encoded.replace(ESCAPE, (_, code: string) => {
    if (code === '25') return '%';
    if (code === '7B') return '{';
    if (code === '7D') return '}';
    return String.fromCharCode(Number.parseInt(code.slice(1), 16));
  });
}

/**
 * How many slots the users are spread over, and how many lease sets a sweeper reads. Fixed: a
 * different count would move every user's keys. 256 tags land on slots of every master of a
 * Cluster (and are moved slot by slot when it is resharded).
 */
export const LEASE_BUCKETS = 256;

/** FNV-1a over the encoded id's UTF-16 units: cheap, and the same on every node and version. */
export function bucketOf(encodedUser: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < encodedUser.length; i++) {
    hash ^= encodedUser.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % LEASE_BUCKETS;
}

function bucketBase(prefix: string, bucket: number): string {
  return `${prefix}:{b${bucket}}`;
}

/** Every bucket's lease set, for the sweepers. */
export function allLeaseKeys(prefix: string): string[] {
  return Array.from({ length: LEASE_BUCKETS }, (_, bucket) => `${bucketBase(prefix, bucket)}:run-leases`);
}

export function userKeys(prefix: string, userId: string): UserKeys {
  const user = encodeId(userId);
  const bucket = bucketBase(prefix, bucketOf(user));
  const base = `${bucket}:{${user}}`;
  const runs = `${base}:run:`;
  return {
    leases: `${bucket}:run-leases`,
    meta: `${base}:meta`,
    log: `${base}:log`,
    live: `${base}:live`,
    runs,
    connections: `${base}:conns`,
    activeRuns: `${base}:active`,
    threadMarks: `${base}:thread-marks`,
    claim: (messageId) => `${base}:msg:${encodeId(messageId)}`,
    run: (runId) => {
      if (!isRunId(runId)) throw new TypeError(`not a run id: ${JSON.stringify(runId.slice(0, 80))}`);
      return runs + runId;
    },
    thread: (threadId) => `${base}:thread:${encodeId(threadId)}`,
  };
}
