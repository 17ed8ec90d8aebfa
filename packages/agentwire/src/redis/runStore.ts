import { randomUUID } from 'node:crypto';
import type {
  UnfinishedRun,
  CancelLookup,
  EnqueueOptions,
  EnqueueOutcome,
  LostRun,
  MessageClaim,
  RunAssignment,
  RunRecord,
  RunStore,
  ThreadPolicy,
} from '../runs/runStore.js';
import type { RedisConnection } from './connection.js';
import { decodeId, encodeId, isRunId, keyTtlMs, leaseMember, leasePrefix, parseLeaseMember, RUN_FIELD, RUN_STATE } from './keys.js';
import { DEFAULTS } from '../config/settings.js';

/** Lease length, node id and retention of a `RedisRunStore`. */
export interface RedisRunStoreOptions {
  /** Runs of a node that has not renewed its lease for this long are presumed lost. Default 15000. */
  readonly leaseMs?: number;
  readonly nodeId?: string;
  /** Run records, thread queues and message-id claims expire this long (plus keyTtlMs's slack) after ENQUEUE or their run's last lease renewal. Default 24 h (as the engine's logs). */
  readonly retentionMs?: number;
  readonly now?: () => number;
  readonly onError?: (error: unknown) => void;
}

type EnqueueReply = 'start' | 'queued' | 'busy' | 'too_many_runs' | 'absent' | ['duplicate', string];
type AdvanceReply = [string, string, string, string, string] | null;

/**
 * Run queues, ownership and message-id claims shared by every node through Redis. Each script
 * runs atomically, so two nodes receiving messages for one thread at the same moment still
 * queue them in one order, exactly one node starts each run, a message id makes at most one run
 * and a user's cap is never exceeded. Per user (its hash tag, see keys.ts): thread queues, run
 * records, message claims and the set of its active runs. Per bucket of users, in the same slot
 * as their keys: the leases, a sorted set (member `[user, run]` as JSON, score = expiry), which
 * sweepers read bucket by bucket. Every script touches one slot, so this store runs on one Redis
 * or on a Redis Cluster. The run-owner index (run id -> encoded user, a key of its own) only
 * tells `forbidden` from `not_found` for a cancel naming another user's run. Ids a client chose
 * are stored encoded (`encodeId`), so none can act as a separator or lose characters.
 */
export class RedisRunStore implements RunStore {
  readonly nodeId: string;
  readonly #connection: RedisConnection;
  readonly #leaseMs: number;
  /** What run records, thread queues and claims are written with: as the engine's keys (keys.ts). */
  readonly #keyTtlMs: number;
  readonly #now: () => number;
  readonly #cancelChannel: string;
  readonly #cancelListeners: Array<(runId: string) => void> = [];

  constructor(connection: RedisConnection, options: RedisRunStoreOptions = {}) {
    this.#connection = connection;
    this.nodeId = options.nodeId ?? `node-${randomUUID().slice(0, 8)}`;
    this.#leaseMs = options.leaseMs ?? 15_000;
    this.#keyTtlMs = keyTtlMs(options.retentionMs ?? DEFAULTS.retentionMs);
    this.#now = options.now ?? Date.now;
    // Sweepers judge leases only after a lease of unbroken contact (RunManager). A stall longer
    // than half a lease breaks it, so a stall that goes unnoticed leaves every lease written
    // or renewed during it more than its owner's renewal interval (a third) to spare.
    connection.requireContactWithin(this.#leaseMs / 3);
    this.#cancelChannel = connection.keys.nodeCancels(this.nodeId);
    // Connects now (as the subscription needs the connection), and stays subscribed across reconnects.
    connection
      .subscribe(this.#cancelChannel, (runId) => {
        for (const listener of this.#cancelListeners) listener(runId);
      })
      .catch((error: unknown) => options.onError?.(error));
  }

  /** The message id is claimed in the ENQUEUE script, atomically with the thread decision. */
  async enqueue(record: RunRecord, policy: ThreadPolicy, maxQueued: number, options: EnqueueOptions = {}): Promise<EnqueueOutcome> {
    const keys = this.#connection.keys.user(record.userId);
    const now = this.#now();
    const redis = this.#connection.client;
    this.#connection.coalesceWrites();
    const claim: MessageClaim = { runId: record.runId, threadId: record.threadId };
    // Sent with the script, not after it (in order on one connection; to another slot on a
    // Cluster), so it costs no round trip; dropped below when the script created no run.
    const ownerKey = this.#connection.keys.runOwner(record.runId);
    const owner = redis.set(ownerKey, encodeId(record.userId), 'PX', this.#keyTtlMs);
    const enqueued = this.#connection.script(
      'enqueue',
      [keys.thread(record.threadId), keys.run(record.runId), keys.leases, keys.claim(record.messageId), keys.activeRuns],
      [
        policy,
        maxQueued,
        this.nodeId,
        this.#keyTtlMs,
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
      ],
    ) as Promise<EnqueueReply>;
    const [, outcome] = await Promise.all([owner, enqueued]);
    // No run exists under this id (refused, a duplicate of another run, or a replay that found
    // its first attempt never applied): drop its index entry rather than keep it for the whole
    // retention (a client whose messages are rejected would fill Redis with them). Not for a
    // duplicate of this very run id (a retry whose first reply was lost): that run exists.
    const created = outcome === 'start' || outcome === 'queued' || (Array.isArray(outcome) && outcome[1] === JSON.stringify(claim));
    if (!created) redis.del(ownerKey).catch(() => {});
    return Array.isArray(outcome) ? { duplicate: JSON.parse(outcome[1]) as MessageClaim } : outcome;
  }

  async advance(record: RunRecord): Promise<RunAssignment | null> {
    const keys = this.#connection.keys.user(record.userId);
    this.#connection.coalesceWrites();
    const next = (await this.#connection.script(
      'advance',
      [keys.thread(record.threadId), keys.leases, keys.activeRuns],
      [record.runId, leasePrefix(record.userId), this.nodeId, this.#now() + this.#leaseMs, keys.runs],
    )) as AdvanceReply;
    if (!next) return null;
    const [runId, threadId, messageId, text, cancel] = next;
    return {
      record: { runId, userId: record.userId, threadId: decodeId(threadId), messageId: decodeId(messageId), text: decodeId(text) },
      cancelRequested: cancel === '1',
    };
  }

  async activeRuns(userId: string): Promise<UnfinishedRun[]> {
    const keys = this.#connection.keys.user(userId);
    const flat = (await this.#connection.script('activeRuns', [keys.activeRuns], [keys.runs])) as string[];
    const runs: UnfinishedRun[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      runs.push({ runId: flat[i]!, threadId: decodeId(flat[i + 1]!), state: flat[i + 2] === RUN_STATE.running ? 'running' : 'queued' });
    }
    return runs;
  }

  async requestCancel(userId: string, runId: string): Promise<CancelLookup> {
    // A client-sent run id: anything but the gateway's own format names no run (and no key).
    if (!isRunId(runId)) return { kind: 'not_found' };
    const owner = await this.#connection.client.get(this.#connection.keys.runOwner(runId));
    if (owner === null) return { kind: 'not_found' };
    const user = encodeId(userId);
    if (owner !== user) return { kind: 'forbidden' };
    const [kind, threadId, node] = (await this.#connection.script('cancel', [this.#connection.keys.user(userId).run(runId)], [user])) as string[];
    if (kind === 'queued') return { kind, threadId: decodeId(threadId!) };
    if (kind === 'running') {
      if (node !== this.nodeId) await this.#connection.publish(this.#connection.keys.nodeCancels(node!), runId);
      return { kind, threadId: decodeId(threadId!), owner: node! };
    }
    return kind === 'forbidden' ? { kind } : { kind: 'not_found' };
  }

  onCancelRequest(listener: (runId: string) => void): void {
    this.#cancelListeners.push(listener);
  }

  async renewLeases(runs: readonly RunRecord[]): Promise<void> {
    if (runs.length === 0) return;
    const redis = this.#connection.client;
    const expiry = this.#now() + this.#leaseMs;
    const byBucket = new Map<string, (string | number)[]>();
    for (const run of runs) {
      const key = this.#connection.keys.user(run.userId).leases;
      const args = byBucket.get(key) ?? [];
      args.push(expiry, leaseMember(run.userId, run.runId));
      byBucket.set(key, args);
    }
    // Separate commands, not a pipeline: on a Cluster the keys live on several masters. On one
    // Redis they still leave in one write.
    this.#connection.coalesceWrites();
    const renewed = [...byBucket].map(([key, args]) => redis.zadd(key, 'XX', ...args));
    // Cancel requests are also noted on the run record: one whose pub/sub message was lost
    // (the subscriber was reconnecting) still reaches the owner here, within a third of a lease.
    const cancels = runs.map((run) => redis.hget(this.#connection.keys.user(run.userId).run(run.runId), RUN_FIELD.cancel));
    // The run's other keys live for the retention from its latest renewal, not from its ENQUEUE:
    // two commands per run and lease third, the owner index being in a slot of its own.
    const kept = runs.flatMap((run) => {
      const keys = this.#connection.keys.user(run.userId);
      return [
        this.#connection.script('renewRun', [keys.thread(run.threadId), keys.run(run.runId), keys.claim(run.messageId), keys.activeRuns], [this.#keyTtlMs]),
        redis.pexpire(this.#connection.keys.runOwner(run.runId), this.#keyTtlMs),
      ];
    });
    const [, flags] = await Promise.all([Promise.all(renewed), Promise.all(cancels), Promise.all(kept)]);
    runs.forEach((run, index) => {
      if (flags[index] !== '1') return;
      for (const listener of this.#cancelListeners) listener(run.runId);
    });
  }

  async claimLostRuns(limit: number, runningHere: (runId: string) => boolean = () => false): Promise<LostRun[]> {
    const redis = this.#connection.client;
    const leaseKeys = this.#connection.keys.allLeaseKeys;
    const now = this.#now();
    // One read per bucket (a Cluster spreads them over its masters); on one Redis they leave in one write.
    this.#connection.coalesceWrites();
    const pages = await Promise.all(leaseKeys.map((key) => redis.zrangebyscore(key, '-inf', now, 'LIMIT', 0, limit)));
    const expired = pages.flatMap((members, bucket) => members.map((member) => ({ key: leaseKeys[bucket]!, member })));
    const claimed: LostRun[] = [];
    for (const { key, member } of expired.slice(0, limit)) {
      const lease = parseLeaseMember(member);
      // Not a member this store wrote: it names no run, and must not fill every sweep's page.
      if (!lease) {
        await redis.zrem(key, member);
        continue;
      }
      const { userId, runId } = lease;
      // Its lease must stay: the run goes on here (renewals only update existing leases).
      if (runningHere(runId)) continue;
      if ((await this.#connection.script('takeLease', [key], [member, now, now + this.#leaseMs])) !== 1) continue;
      const [threadId, messageId, text, started] = await redis.hmget(
        this.#connection.keys.user(userId).run(runId),
        RUN_FIELD.thread,
        RUN_FIELD.message,
        RUN_FIELD.text,
        RUN_FIELD.started,
      );
      if (typeof threadId !== 'string') {
        await redis.zrem(key, member);
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
    return this.#connection.contact;
  }

  get leaseMs(): number {
    return this.#leaseMs;
  }

  /** Ends this node's cancel subscription; the connection is closed by its owner (see createRedisBackend). */
  async close(): Promise<void> {
    await this.#connection.unsubscribe(this.#cancelChannel);
  }
}
