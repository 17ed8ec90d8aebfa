import { randomUUID } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { type ClusterNode, type RedisEngine, clusterOptions } from '../engine/redisEngine.js';
import type { MessageClaim } from '../engine/types.js';
import { allLeaseKeys, decodeId, encodeId, isRunId } from '../engine/redisKeys.js';
import { coalesceWrites } from '../engine/redisWrites.js';
import type { ThreadPolicy } from './runManager.js';
import type { UnfinishedRun, CancelLookup, EnqueueOptions, EnqueueOutcome, LostRun, RunAssignment, RunRecord, RunStore } from './runStore.js';

/** Lease length and node id of a `RedisRunStore`. */
export interface RedisRunStoreOptions {
  /** Runs of a node that has not renewed its lease for this long are presumed lost. Default 15000. */
  readonly leaseMs?: number;
  readonly nodeId?: string;
  readonly now?: () => number;
  readonly onError?: (error: unknown) => void;
}

/**
 * KEYS: thread queue, run record, leases (of the user's bucket), message claim, active runs:
 * one slot (see redisKeys.ts).
 * ARGV: policy, maxQueued, nodeId, retentionMs, runId, user (encoded), thread (encoded), message
 * (encoded), text (encoded), lease expiry, claim JSON, replay only ('1': answer 'absent' instead
 * of creating the run), lease prefix (a lease member is prefix .. runId .. '"]'), max active runs
 * of the user, now, run record prefix. The message id's claim decides first: another run's claim
 * answers {'duplicate', claim}, our own means this is a replay. The claim is written last,
 * together with its run, so neither a 'busy' or 'too_many_runs' answer nor a script that fails
 * part-way (Redis does not roll scripts back) leaves a claim without a run: no message is ever
 * acked as a duplicate of a run that never starts.
 */
const ENQUEUE = `
local claimed = redis.call('GET', KEYS[4])
if claimed and claimed ~= ARGV[11] then return {'duplicate', claimed} end
-- Only a wholly applied enqueue wrote the claim (last): anything less was never acked.
if ARGV[12] == '1' and not claimed then return 'absent' end
local member = ARGV[13] .. ARGV[5] .. '"]'
local current = redis.call('HMGET', KEYS[2], 'state', 'owner', 'advanced')
if current[1] then
  -- A replay (the reply to the first application was lost), so this node has not started the
  -- run: it does now if this script made it the running one (its lease renewed, as it may
  -- have lapsed meanwhile); one handed out since by ADVANCE (here or on another node) is
  -- started by that node, and an ended one stays ended.
  if current[1] == 'running' and current[2] == ARGV[3] and not current[3] then
    redis.call('ZADD', KEYS[3], 'XX', ARGV[10], member)
    return 'start'
  end
  return 'queued'
end
if ARGV[12] == '1' then return 'absent' end
local len = redis.call('LLEN', KEYS[1])
if len > 0 and (ARGV[1] == 'reject' or len > tonumber(ARGV[2])) then return 'busy' end
local cap = tonumber(ARGV[14])
if redis.call('ZCARD', KEYS[5]) >= cap then
  -- Only runs still running or queued count: an entry whose record ended, vanished (expiry,
  -- eviction) or runs without a lease (nobody would ever end it) is dropped, so no crash or
  -- data loss holds the cap for good.
  for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    local state = redis.call('HGET', ARGV[16] .. id, 'state')
    if not state or state == 'ended'
      or (state == 'running' and not redis.call('ZSCORE', KEYS[3], ARGV[13] .. id .. '"]')) then
      redis.call('ZREM', KEYS[5], id)
    end
  end
  if redis.call('ZCARD', KEYS[5]) >= cap then return 'too_many_runs' end
end
redis.call('RPUSH', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local state = 'queued'
local owner = ''
if len == 0 then state = 'running'; owner = ARGV[3] end
redis.call('HSET', KEYS[2], 'user', ARGV[6], 'thread', ARGV[7], 'message', ARGV[8], 'text', ARGV[9],
  'state', state, 'owner', owner, 'cancel', '0')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if len == 0 then redis.call('ZADD', KEYS[3], ARGV[10], member) end
redis.call('ZADD', KEYS[5], ARGV[15], ARGV[5])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
redis.call('SET', KEYS[4], ARGV[11], 'PX', ARGV[4])
if len == 0 then return 'start' end
return 'queued'`;

/**
 * KEYS: queue, leases (of the user's bucket), active runs. ARGV: runId, lease prefix, nodeId, leaseExpiry,
 * runKeyPrefix. The next run handed out is noted on the finished run's record, so a replay (its
 * reply was lost) hands the same run out again instead of nothing. Ended records are never set
 * running again. Returned fields are as stored (encoded).
 */
const ADVANCE = `
local finished = ARGV[5] .. ARGV[1]
redis.call('ZREM', KEYS[2], ARGV[2] .. ARGV[1] .. '"]')
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then
  local handed = redis.call('HGET', finished, 'next')
  if not handed then return false end
  local r = redis.call('HMGET', ARGV[5] .. handed, 'state', 'owner', 'thread', 'message', 'text', 'cancel')
  if r[1] ~= 'running' or r[2] ~= ARGV[3] then return false end
  return {handed, r[3], r[4], r[5], r[6]}
end
redis.call('LPOP', KEYS[1])
while true do
  local nextId = redis.call('LINDEX', KEYS[1], 0)
  if not nextId then return false end
  local key = ARGV[5] .. nextId
  local state = redis.call('HGET', key, 'state')
  if state and state ~= 'ended' then
    redis.call('HSET', key, 'state', 'running', 'owner', ARGV[3], 'advanced', '1')
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2] .. nextId .. '"]')
    if redis.call('EXISTS', finished) == 1 then redis.call('HSET', finished, 'next', nextId) end
    local r = redis.call('HMGET', key, 'thread', 'message', 'text', 'cancel')
    return {nextId, r[1], r[2], r[3], r[4]}
  end
  redis.call('LPOP', KEYS[1])
  redis.call('ZREM', KEYS[3], nextId)
end`;

/**
 * KEYS: active runs. ARGV: run record prefix. The user's runs still running or queued, oldest
 * first, as flat triples run id, thread (encoded), state; ended or vanished records are skipped.
 */
const ACTIVE = `
local found = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'thread', 'state')
  if r[1] and (r[2] == 'running' or r[2] == 'queued') then
    table.insert(found, id); table.insert(found, r[1]); table.insert(found, r[2])
  end
end
return found`;

/** KEYS: run record. ARGV: user (encoded). */
const CANCEL = `
local r = redis.call('HMGET', KEYS[1], 'user', 'state', 'owner', 'thread')
if not r[1] then return {'not_found'} end
if r[1] ~= ARGV[1] then return {'forbidden'} end
if r[2] == 'ended' then return {'not_found'} end
if r[2] == 'queued' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  return {'queued', r[4]}
end
-- Also noted on the record: the owner's lease renewal sees it if the request over pub/sub is lost.
redis.call('HSET', KEYS[1], 'cancel', '1')
return {'running', r[4], r[3]}`;

/**
 * KEYS: a bucket's leases. ARGV: member, now, new expiry. Takes over an expired lease by moving its expiry
 * forward: exactly one node succeeds, and if that node fails before the run is ended and its
 * thread advanced, the lease expires again and another sweep retries.
 */
const CLAIM = `
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1`;

/**
 * Lease members are the JSON array `[userId, runId]`: no separator an id could contain, lossless
 * for any user id (JSON escapes lone surrogates), and the scripts build one from this prefix and
 * a run id (run ids need no JSON escaping).
 */
function leasePrefix(userId: string): string {
  return `[${JSON.stringify(userId)},"`;
}

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

type ScriptedRedis = (Redis | Cluster) & {
  awClaim(...args: (string | number)[]): Promise<number>;
  awEnqueue(...args: (string | number)[]): Promise<'start' | 'queued' | 'busy' | 'too_many_runs' | 'absent' | ['duplicate', string]>;
  awAdvance(...args: (string | number)[]): Promise<[string, string, string, string, string] | null>;
  awCancel(...args: (string | number)[]): Promise<string[]>;
  awActive(...args: (string | number)[]): Promise<string[]>;
};

/**
 * Run queues and ownership shared by every node through Redis. Each script runs atomically, so
 * two nodes receiving messages for one thread at the same moment still queue them in one order,
 * exactly one node starts each run, and a user's cap is never exceeded. Per user (its hash tag,
 * see redisKeys.ts): thread queues, run records, message claims and the set of its active runs.
 * Per bucket of users, in the same slot as their keys: the leases, a sorted set (member
 * `[user, run]` as JSON, score = expiry), which sweepers read bucket by bucket. Every script
 * touches one slot, so this store runs on one Redis or on a Redis Cluster. The run-owner index
 * (run id -> encoded user, a key of its own) only tells `forbidden` from `not_found` for a
 * cancel naming another user's run. Ids a client chose are stored encoded (`encodeId`), so none
 * can act as a separator or lose characters.
 */
export class RedisRunStore implements RunStore {
  readonly nodeId: string;
  readonly #redis: ScriptedRedis;
  readonly #subscriber: Redis | Cluster;
  /** Cancel requests to a node over sharded pub/sub (on a Cluster), else plain pub/sub. */
  readonly #sharded: boolean;
  readonly #leaseMs: number;
  readonly #now: () => number;
  readonly #leaseKeys: readonly string[];
  readonly #cancelListeners: Array<(runId: string) => void> = [];

  constructor(
    private readonly engine: RedisEngine,
    /** The engine's Redis: a URL, or the nodes of a Redis Cluster. */
    connection: string | readonly ClusterNode[],
    options: RedisRunStoreOptions = {},
  ) {
    this.nodeId = options.nodeId ?? `node-${randomUUID().slice(0, 8)}`;
    this.#leaseMs = options.leaseMs ?? 15_000;
    this.#now = options.now ?? Date.now;
    this.#leaseKeys = allLeaseKeys(engine.keyPrefix);
    // Sweepers judge leases only after a lease of unbroken contact (RunManager). A stall longer
    // than half a lease breaks it, so a stall that goes unnoticed leaves every lease written
    // or renewed during it more than its owner's renewal interval (a third) to spare.
    engine.requireContactWithin(this.#leaseMs / 3);
    this.#redis = engine.redis as ScriptedRedis;
    this.#redis.defineCommand('awEnqueue', { numberOfKeys: 5, lua: ENQUEUE });
    this.#redis.defineCommand('awAdvance', { numberOfKeys: 3, lua: ADVANCE });
    this.#redis.defineCommand('awCancel', { numberOfKeys: 1, lua: CANCEL });
    this.#redis.defineCommand('awActive', { numberOfKeys: 1, lua: ACTIVE });
    this.#redis.defineCommand('awClaim', { numberOfKeys: 1, lua: CLAIM });
    const subscriberOptions = {
      autoResubscribe: true,
      disconnectTimeout: 200,
      retryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
    };
    this.#sharded = typeof connection !== 'string';
    this.#subscriber =
      typeof connection === 'string'
        ? new Redis(connection, { ...subscriberOptions, lazyConnect: false })
        : // Connected now, and its subscribe queued until then, as for one Redis.
          new Cluster([...connection], { ...clusterOptions(subscriberOptions), lazyConnect: false, enableOfflineQueue: true, shardedSubscribers: true });
    this.#subscriber.on('error', (error) => options.onError?.(error));
    const onCancel = (_channel: string, runId: string) => {
      for (const listener of this.#cancelListeners) listener(runId);
    };
    this.#subscriber.on(this.#sharded ? 'smessage' : 'message', onCancel);
    const channel = this.#controlChannel(this.nodeId);
    void (this.#sharded ? this.#subscriber.ssubscribe(channel) : this.#subscriber.subscribe(channel)).catch((error: unknown) =>
      options.onError?.(error),
    );
  }

  /** The message id is claimed in the ENQUEUE script, atomically with the thread decision. */
  readonly claimsMessageIds = true;

  async enqueue(record: RunRecord, policy: ThreadPolicy, maxQueued: number, options: EnqueueOptions = {}): Promise<EnqueueOutcome> {
    const keys = this.engine.keys(record.userId);
    const now = this.#now();
    coalesceWrites(this.#redis);
    const claim: MessageClaim = { runId: record.runId, threadId: record.threadId };
    // Sent with the script, not after it (in order on one connection; to another slot on a
    // Cluster), so it costs no round trip; dropped below when the script created no run.
    const owner = this.#redis.set(this.#runIndex(record.runId), encodeId(record.userId), 'PX', this.#retentionMs());
    const enqueued = this.#redis.awEnqueue(
      keys.thread(record.threadId),
      keys.run(record.runId),
      keys.leases,
      keys.claim(record.messageId),
      keys.activeRuns,
      policy,
      maxQueued,
      this.nodeId,
      this.#retentionMs(),
      record.runId,
      encodeId(record.userId),
      encodeId(record.threadId),
      encodeId(record.messageId),
      encodeId(record.text),
      now + this.#leaseMs,
      JSON.stringify(claim),
      options.replayOnly ? '1' : '0',
      leasePrefix(record.userId),
      options.maxActive ?? Number.MAX_SAFE_INTEGER,
      now,
      keys.runs,
    );
    const [, outcome] = await Promise.all([owner, enqueued]);
    // No run exists under this id (refused, a duplicate of another run, or a replay that found
    // its first attempt never applied): drop its index entry rather than keep it for the whole
    // retention (a client whose messages are rejected would fill Redis with them). Not for a
    // duplicate of this very run id (a retry whose first reply was lost): that run exists.
    const created = outcome === 'start' || outcome === 'queued' || (Array.isArray(outcome) && outcome[1] === JSON.stringify(claim));
    if (!created) this.#redis.del(this.#runIndex(record.runId)).catch(() => {});
    return Array.isArray(outcome) ? { duplicate: JSON.parse(outcome[1]) as MessageClaim } : outcome;
  }

  async advance(record: RunRecord): Promise<RunAssignment | null> {
    const keys = this.engine.keys(record.userId);
    coalesceWrites(this.#redis);
    const next = await this.#redis.awAdvance(
      keys.thread(record.threadId),
      keys.leases,
      keys.activeRuns,
      record.runId,
      leasePrefix(record.userId),
      this.nodeId,
      this.#now() + this.#leaseMs,
      keys.runs,
    );
    if (!next) return null;
    const [runId, threadId, messageId, text, cancel] = next;
    return {
      record: { runId, userId: record.userId, threadId: decodeId(threadId), messageId: decodeId(messageId), text: decodeId(text) },
      cancelRequested: cancel === '1',
    };
  }

  async requestCancel(userId: string, runId: string): Promise<CancelLookup> {
    // A client-sent run id: anything but the gateway's own format names no run (and no key).
    if (!isRunId(runId)) return { kind: 'not_found' };
    const owner = await this.#redis.get(this.#runIndex(runId));
    if (owner === null) return { kind: 'not_found' };
    const user = encodeId(userId);
    if (owner !== user) return { kind: 'forbidden' };
    const [kind, threadId, node] = await this.#redis.awCancel(this.engine.keys(userId).run(runId), user);
    if (kind === 'queued') return { kind, threadId: decodeId(threadId!) };
    if (kind === 'running') {
      if (node !== this.nodeId) {
        const channel = this.#controlChannel(node!);
        await (this.#sharded ? this.#redis.spublish(channel, runId) : this.#redis.publish(channel, runId));
      }
      return { kind, threadId: decodeId(threadId!), owner: node! };
    }
    return kind === 'forbidden' ? { kind } : { kind: 'not_found' };
  }

  async activeRuns(userId: string): Promise<UnfinishedRun[]> {
    const keys = this.engine.keys(userId);
    const flat = await this.#redis.awActive(keys.activeRuns, keys.runs);
    const runs: UnfinishedRun[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      runs.push({ runId: flat[i]!, threadId: decodeId(flat[i + 1]!), state: flat[i + 2] === 'running' ? 'running' : 'queued' });
    }
    return runs;
  }

  onCancelRequest(listener: (runId: string) => void): void {
    this.#cancelListeners.push(listener);
  }

  async renewLeases(runs: readonly RunRecord[]): Promise<void> {
    if (runs.length === 0) return;
    const expiry = this.#now() + this.#leaseMs;
    const byBucket = new Map<string, (string | number)[]>();
    for (const run of runs) {
      const key = this.engine.keys(run.userId).leases;
      const args = byBucket.get(key) ?? [];
      args.push(expiry, leaseMember(run.userId, run.runId));
      byBucket.set(key, args);
    }
    // Separate commands, not a pipeline: on a Cluster the keys live on several masters. On one
    // Redis they still leave in one write.
    coalesceWrites(this.#redis);
    const renewed = [...byBucket].map(([key, args]) => this.#redis.zadd(key, 'XX', ...args));
    // Cancel requests are also noted on the run record: one whose pub/sub message was lost
    // (the subscriber was reconnecting) still reaches the owner here, within a third of a lease.
    const cancels = runs.map((run) => this.#redis.hget(this.engine.keys(run.userId).run(run.runId), 'cancel'));
    const [, flags] = await Promise.all([Promise.all(renewed), Promise.all(cancels)]);
    runs.forEach((run, index) => {
      if (flags[index] !== '1') return;
      for (const listener of this.#cancelListeners) listener(run.runId);
    });
  }

  async claimLostRuns(limit: number, runningHere: (runId: string) => boolean = () => false): Promise<LostRun[]> {
    const now = this.#now();
    // One read per bucket (a Cluster spreads them over its masters); on one Redis they leave in one write.
    coalesceWrites(this.#redis);
    const pages = await Promise.all(this.#leaseKeys.map((key) => this.#redis.zrangebyscore(key, '-inf', now, 'LIMIT', 0, limit)));
    const expired = pages.flatMap((members, bucket) => members.map((member) => ({ key: this.#leaseKeys[bucket]!, member })));
    const claimed: LostRun[] = [];
    for (const { key, member } of expired.slice(0, limit)) {
      const lease = parseLeaseMember(member);
      // Not a member this store wrote: it names no run, and must not fill every sweep's page.
      if (!lease) {
        await this.#redis.zrem(key, member);
        continue;
      }
      const { userId, runId } = lease;
      // Its lease must stay: the run goes on here (renewals only update existing leases).
      if (runningHere(runId)) continue;
      if ((await this.#redis.awClaim(key, member, now, now + this.#leaseMs)) !== 1) continue;
      const [threadId, messageId, text, started] = await this.#redis.hmget(
        this.engine.keys(userId).run(runId),
        'thread',
        'message',
        'text',
        'started',
      );
      if (threadId === null) {
        await this.#redis.zrem(key, member);
        continue;
      }
      claimed.push({
        runId,
        userId,
        threadId: decodeId(threadId),
        messageId: decodeId(messageId ?? ''),
        text: decodeId(text ?? ''),
        started: started === '1',
      });
    }
    return claimed;
  }

  get contact(): { readonly breaks: number; readonly ok: boolean } {
    return this.engine.contact;
  }

  /** No QUIT: it waits for Redis (forever while it is unreachable); a subscriber has nothing to flush. */
  async close(): Promise<void> {
    this.#subscriber.disconnect();
  }

  get leaseMs(): number {
    return this.#leaseMs;
  }

  #controlChannel(nodeId: string): string {
    return `${this.engine.keyPrefix}:node:${nodeId}:cancel`;
  }

  #runIndex(runId: string): string {
    return `${this.engine.keyPrefix}:run-owner:${runId}`;
  }

  #retentionMs(): number {
    return this.engine.retentionMs;
  }
}
