/**
 * The Redis schema: every key and channel name and every hash and stream field the Redis
 * backend uses, owned here and nowhere else. The Lua scripts get the field names from this file
 * too (`withFieldNames`, written into each script when it is loaded), so a field written by one
 * script (the engine's append marks a run `started`) and read by another component (the run
 * store's sweeper) cannot drift apart.
 *
 * Users are spread over LEASE_BUCKETS fixed buckets; every key of a user carries its bucket's
 * hash tag, `<prefix>:{b<k>}:{<user>}:...`, and so does the bucket's lease set
 * (`<prefix>:{b<k>}:run-leases`). A user's keys and the leases of its runs thus share one Redis
 * Cluster slot, so every Lua script touches a single slot, on one Redis or on a Cluster alike.
 * The user stays in braces of its own (the second pair: only the first is the hash tag), which
 * delimit it from what follows. There is no global key: the lease index is one set per bucket,
 * the run-owner index one key per run, the cancel channel one per node.
 *
 * No id a client controls (user, message, thread) ever needs a separator: each is written with
 * `encodeId` (reversible, and free of `{`/`}`), and only as the last part of a key or as the
 * whole hash tag, whose end the first `}` marks. Run ids are the gateway's own
 * (`isRunId`); a client-sent one is checked before it is used in a key.
 */

/** The most a key outlives its retention (keyTtlMs): at most one renewal per minute per streaming user. */
const MAX_TTL_SLACK_MS = 60_000;

/**
 * The TTL every retention-bound key of a user is written with (its log, meta, thread marks, run
 * records, message claims): the retention plus a slack of a tenth of it, at most a minute. An
 * append renews the log, its meta and the thread marks only once the log has less than the
 * retention left, and its run's record only once that has (append.lua), not on every append:
 * so each lives at least `retentionMs` and at most `keyTtlMs(retentionMs)` after its last
 * append, and a user streaming deltas costs one renewal per slack, not four PEXPIREs per append
 * (two PTTLs instead: redis-server's CPU per one-event append 17.25 → 15.75 µs, docs/BENCHMARKS.md).
 * A running run's other keys (its thread queue, record, claim, the active runs, the owner index)
 * are renewed with its lease (renewRun.lua), so a run may outlive the retention.
 */
export function keyTtlMs(retentionMs: number): number {
  return retentionMs + Math.min(MAX_TTL_SLACK_MS, Math.ceil(retentionMs / 10));
}

/** Fields of a user's log meta hash. */
export const META_FIELD = { epoch: 'epoch', seq: 'seq' } as const;

/** Fields of an entry of a user's log stream (short: one set per event). */
export const LOG_FIELD = { json: 'j', type: 't', appendedAt: 'a' } as const;

/** Fields of a run record hash. */
export const RUN_FIELD = {
  /** Encoded ids and text of the run's message. */
  user: 'user',
  thread: 'thread',
  message: 'message',
  text: 'text',
  /** One of RUN_STATE. */
  state: 'state',
  /** Node executing it while running. */
  owner: 'owner',
  /** '1' once a cancel was requested. */
  cancel: 'cancel',
  /** '1' once ADVANCE handed it out (a replayed ENQUEUE then does not start it). */
  advanced: 'advanced',
  /** The run ADVANCE handed out after this one ended (answers a replayed ADVANCE). */
  next: 'next',
  /** '1' once an append carried its agent_started (written by the engine's append). */
  started: 'started',
  /** Id of the last fenced append applied, its first seq and how many events it skipped. */
  append: 'append',
  appended: 'appended',
  skipped: 'skipped',
} as const;

/** Values of `RUN_FIELD.state`. `ended` is written by the engine's append with the terminal event. */
export const RUN_STATE = { queued: 'queued', running: 'running', ended: 'ended' } as const;

/** The field names a script may use, by the name it uses them under (`RUN.state`, `META.seq`, ...). */
const LUA_FIELDS = new Map<string, Readonly<Record<string, string>>>([
  ['META', META_FIELD],
  ['LOG', LOG_FIELD],
  ['RUN', RUN_FIELD],
  ['STATE', RUN_STATE],
]);

/**
 * A script with its field names written in from this schema: `RUN.state` becomes `'state'`,
 * `META.seq` becomes `'seq'`, and so on, so the scripts name no field themselves. Written in
 * once, when the script is loaded, rather than built as Lua tables on every call (each call
 * would rebuild and then collect them). A name the schema lacks fails the load, instead of
 * becoming nil in Redis.
 */
export function withFieldNames(script: string, file: string): string {
  return script.replace(/\b(META|LOG|RUN|STATE)\.([A-Za-z_]\w*)/g, (reference, table: string, key: string) => {
    const fields = LUA_FIELDS.get(table)!;
    if (!Object.hasOwn(fields, key)) throw new Error(`${file}: ${reference} is not in the Redis schema (keys.ts)`);
    return `'${fields[key]}'`;
  });
}

/** The keys of one user, all in one Cluster slot. */
export interface UserKeys {
  /** Sorted set of the leases of the bucket's running runs (member `leaseMember(user, run)`, score = expiry). */
  readonly leases: string;
  /** Hash: META_FIELD. */
  readonly meta: string;
  /** Stream of the user's events (LOG_FIELD); entry id `<seq>-0`. */
  readonly log: string;
  /** Pub/sub channel waking the nodes that serve this user. */
  readonly live: string;
  /** Prefix of run records (hashes of RUN_FIELD), for Lua scripts; from TypeScript use `run()`. */
  readonly runs: string;
  /** Sorted set of the user's live connections across nodes (score = expiry). */
  readonly connections: string;
  /** Sorted set of the user's runs that are running or queued (member = run id, score = enqueue time). */
  readonly activeRuns: string;
  /** Hash: the history's marks on threads (field = encoded thread id, value = JSON: title, deletion). */
  readonly threadMarks: string;
  /** Idempotency key of a message id (string: the claim's JSON). */
  claim(messageId: string): string;
  /** A run record (hash of RUN_FIELD). Throws for anything but a run id of the gateway's format. */
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

/** Every key of the Redis backend under one prefix. */
export class RedisKeys {
  readonly prefix: string;
  readonly #leaseKeys: readonly string[];

  constructor(prefix: string) {
    this.prefix = prefix;
    this.#leaseKeys = Array.from({ length: LEASE_BUCKETS }, (_, bucket) => `${bucketBase(prefix, bucket)}:run-leases`);
  }

  /** Every bucket's lease set, for the sweepers. */
  get allLeaseKeys(): readonly string[] {
    return this.#leaseKeys;
  }

  user(userId: string): UserKeys {
    const user = encodeId(userId);
    const bucket = bucketOf(user);
    const base = `${bucketBase(this.prefix, bucket)}:{${user}}`;
    const runs = `${base}:run:`;
    return {
      leases: this.#leaseKeys[bucket]!,
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

  /**
   * Run id -> encoded user of a run (a key per run, in a slot of its own): tells a cancel for
   * another user's run (`forbidden`) from one for no run (`not_found`).
   */
  runOwner(runId: string): string {
    return `${this.prefix}:run-owner:${runId}`;
  }

  /** Pub/sub channel of cancel requests to one gateway node. */
  nodeCancels(nodeId: string): string {
    return `${this.prefix}:node:${nodeId}:cancel`;
  }
}

/**
 * Lease members are the JSON array `[userId, runId]`: no separator an id could contain, lossless
 * for any user id (JSON escapes lone surrogates), and the scripts build one from this prefix and
 * a run id (run ids need no JSON escaping).
 */
export function leasePrefix(userId: string): string {
  return `[${JSON.stringify(userId)},"`;
}

/** A run's member in its bucket's lease set. */
export function leaseMember(userId: string, runId: string): string {
  return `${leasePrefix(userId)}${runId}"]`;
}

/** The user and run of a lease member, or null for anything else. */
export function parseLeaseMember(member: string): { userId: string; runId: string } | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(member);
  } catch {
    return null;
  }
  if (!Array.isArray(parsed) || parsed.length !== 2) return null;
  const [userId, runId] = parsed as unknown[];
  if (typeof userId !== 'string' || typeof runId !== 'string' || !isRunId(runId)) return null;
  return leaseMember(userId, runId) === member ? { userId, runId } : null;
}
