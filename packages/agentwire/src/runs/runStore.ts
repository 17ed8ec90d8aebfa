/** A message to a thread with a run in progress: queue it (`enqueue`) or refuse it (`reject`). */
export type ThreadPolicy = 'enqueue' | 'reject';

/** What a message id (an idempotency key) was first used for. */
export interface MessageClaim {
  readonly runId: string;
  readonly threadId: string;
}

/** A run as the store keeps it: whose, on which thread, for which message. */
export interface RunRecord {
  readonly runId: string;
  readonly userId: string;
  readonly threadId: string;
  readonly messageId: string;
  readonly text: string;
}

/** A run whose node stopped renewing its lease, now claimed by this node to be ended. */
export interface LostRun extends RunRecord {
  /** Its `agent_started` is in the log; if not, the lost run must emit it before `run_lost`. */
  readonly started: boolean;
}

/** A run handed to this node to execute now. */
export interface RunAssignment {
  readonly record: RunRecord;
  /** Cancel was requested while the run was queued: it ends as cancelled at once. */
  readonly cancelRequested: boolean;
}

/**
 * What `enqueue` did. `start`: first on its thread, this node executes it now; `queued`: behind
 * another run of the thread; `busy`: refused by the thread policy or the queue bound; `absent`:
 * see `EnqueueOptions.replayOnly`.
 * `duplicate`: the message id was already claimed, for the run it names; nothing was created.
 * `too_many_runs`: the user already has `maxActive` runs running or queued; nothing was created.
 */
export type EnqueueOutcome = 'start' | 'queued' | 'busy' | 'too_many_runs' | 'absent' | { readonly duplicate: MessageClaim };

/** Options of `RunStore.enqueue`. */
export interface EnqueueOptions {
  /**
   * Settle an enqueue whose earlier attempt may or may not have been applied, creating nothing:
   * the outcome of that attempt if it was applied (so 'start' means this node owns the run),
   * 'absent' if it was not.
   */
  readonly replayOnly?: boolean;
  /** Runs of the user, running or queued over all threads (and nodes), beyond which none is created. Default: no limit. */
  readonly maxActive?: number;
}

/** A run of a user that is running or queued, as `RunStore.activeRuns` lists it. */
export interface UnfinishedRun {
  readonly runId: string;
  readonly threadId: string;
  readonly state: 'running' | 'queued';
}

/** What `requestCancel` found for the run. */
export type CancelLookup =
  | { readonly kind: 'not_found' }
  | { readonly kind: 'forbidden' }
  /** Marked: it ends as cancelled when its turn comes. */
  | { readonly kind: 'queued'; readonly threadId: string }
  /** Running on node `owner`, which has been asked to end it. */
  | { readonly kind: 'running'; readonly threadId: string; readonly owner: string };

/**
 * Where runs wait for their thread and who executes them. The run manager executes agents; the
 * store decides order and ownership: message-id claims (idempotency: one run per message id,
 * claimed atomically with the run's creation, so a refused message leaves its id free),
 * per-thread FIFO queues, the node that owns each running run, cancel requests, and leases that
 * let another node end the runs of a node that died. `LocalRunStore` keeps this in memory for
 * one node; `RedisRunStore` shares it across nodes.
 */
export interface RunStore {
  readonly nodeId: string;
  /** Set by shared stores: leases must be renewed this often (a third of it) or runs are presumed lost. */
  readonly leaseMs?: number;
  /** Set by node-local stores: runs queued here and not started yet. */
  readonly queuedCount?: number;
  /**
   * Set by shared stores: this node's contact with the store. `breaks` counts every break so
   * far (a request unanswered within its deadline, a dropped link), `ok` is false during one.
   */
  readonly contact?: { readonly breaks: number; readonly ok: boolean };
  /**
   * Claims the run's message id and queues the run on its thread; 'start' means it is first and
   * this node now executes it. The claim, the decision on the thread and on the user's cap are
   * one atomic step with the run's creation: an id already claimed answers `duplicate` (unless
   * its claim names this very run: a replay), and an id whose run was refused stays unclaimed.
   */
  enqueue(record: RunRecord, policy: ThreadPolicy, maxQueued: number, options?: EnqueueOptions): Promise<EnqueueOutcome>;
  /**
   * The run's terminal event is in the log: takes it off its thread and hands this node the
   * next run of the thread, if any. Idempotent: a second call for the same run hands no other
   * run out (null; a store whose replies can be lost, Redis, hands the same run out again).
   */
  advance(record: RunRecord): Promise<RunAssignment | null>;
  /** Finds a live run for a cancel from `userId`, marks or forwards the request. */
  requestCancel(userId: string, runId: string): Promise<CancelLookup>;
  /**
   * The user's runs that are running or queued (any node), oldest first. For the history
   * routes: a thread's queued runs, and the runs a thread's deletion cancels. Optional: without
   * it, queued runs are not reported and a deletion cancels only the runs that have started.
   */
  activeRuns?(userId: string): Promise<UnfinishedRun[]>;
  /** Cancel requests addressed to runs this node executes (from other nodes). */
  onCancelRequest(listener: (runId: string) => void): void;
  /** Renews this node's leases on the runs it executes. */
  renewLeases(runs: readonly RunRecord[]): Promise<void>;
  /**
   * Takes over runs whose owner stopped renewing its lease (the node died). Runs for which
   * `runningHere` is true are left alone: their lease lapsed while this node could not renew
   * it (e.g. Redis was unreachable for longer than the lease), and its next renewal restores it.
   */
  claimLostRuns(limit: number, runningHere?: (runId: string) => boolean): Promise<LostRun[]>;
  close(): Promise<void>;
}

interface LocalRun {
  readonly record: RunRecord;
  running: boolean;
  cancelRequested: boolean;
}

/** Bounds of a `LocalRunStore`'s message-id claims. */
export interface LocalRunStoreOptions {
  /** A message id is remembered this long after its run was created. Default 24 h. */
  readonly retentionMs?: number;
  /** Message ids remembered per user (the oldest are forgotten first). Default 10000. */
  readonly maxClaimsPerUser?: number;
  readonly now?: () => number;
}

interface LocalClaim {
  readonly userId: string;
  readonly messageId: string;
  readonly claim: MessageClaim;
  readonly at: number;
}

/** One node's runs, in memory: no leases are needed because the store dies with its node. */
export class LocalRunStore implements RunStore {
  readonly nodeId = 'local';
  readonly #runs = new Map<string, LocalRun>();
  readonly #threads = new Map<string, LocalRun[]>();
  /** Runs of each user, running or queued, in enqueue order. */
  readonly #activeByUser = new Map<string, Map<string, LocalRun>>();
  /** Message-id claims of each user, oldest first. */
  readonly #claims = new Map<string, Map<string, LocalClaim>>();
  /** The same claims, oldest first: expired without a timer, as new ones are made. */
  readonly #claimsByAge = new Set<LocalClaim>();
  readonly #retentionMs: number;
  readonly #maxClaimsPerUser: number;
  readonly #now: () => number;

  constructor(options: LocalRunStoreOptions = {}) {
    this.#retentionMs = options.retentionMs ?? 86_400_000;
    this.#maxClaimsPerUser = options.maxClaimsPerUser ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  get queuedCount(): number {
    return this.#runs.size - this.#threads.size;
  }

  async enqueue(record: RunRecord, policy: ThreadPolicy, maxQueued: number, options: EnqueueOptions = {}): Promise<EnqueueOutcome> {
    this.#expireClaims();
    const claimed = this.#claims.get(record.userId)?.get(record.messageId)?.claim;
    if (claimed) return { duplicate: claimed };
    if (options.replayOnly) return 'absent';
    const key = threadKey(record);
    const queue = this.#threads.get(key);
    if (queue && (policy === 'reject' || queue.length > maxQueued)) return 'busy';
    const active = this.#activeByUser.get(record.userId) ?? new Map<string, LocalRun>();
    if (active.size >= (options.maxActive ?? Number.MAX_SAFE_INTEGER)) return 'too_many_runs';
    this.#claim(record);
    const run: LocalRun = { record, running: !queue, cancelRequested: false };
    active.set(record.runId, run);
    this.#activeByUser.set(record.userId, active);
    this.#runs.set(record.runId, run);
    if (queue) {
      queue.push(run);
      return 'queued';
    }
    this.#threads.set(key, [run]);
    return 'start';
  }

  #claim(record: RunRecord): void {
    let claims = this.#claims.get(record.userId);
    if (!claims) {
      claims = new Map();
      this.#claims.set(record.userId, claims);
    }
    const entry: LocalClaim = {
      userId: record.userId,
      messageId: record.messageId,
      claim: { runId: record.runId, threadId: record.threadId },
      at: this.#now(),
    };
    claims.set(record.messageId, entry);
    this.#claimsByAge.add(entry);
    if (claims.size > this.#maxClaimsPerUser) {
      const [oldest] = claims.values();
      claims.delete(oldest!.messageId);
      this.#claimsByAge.delete(oldest!);
    }
  }

  /** Forgets claims older than the retention; amortized O(1) per claim. */
  #expireClaims(): void {
    const cutoff = this.#now() - this.#retentionMs;
    for (const entry of this.#claimsByAge) {
      if (entry.at >= cutoff) break;
      this.#claimsByAge.delete(entry);
      const claims = this.#claims.get(entry.userId)!;
      claims.delete(entry.messageId);
      if (claims.size === 0) this.#claims.delete(entry.userId);
    }
  }

  async advance(record: RunRecord): Promise<RunAssignment | null> {
    const key = threadKey(record);
    const queue = this.#threads.get(key);
    if (!queue || queue[0]?.record.runId !== record.runId) return null;
    queue.shift();
    this.#runs.delete(record.runId);
    const active = this.#activeByUser.get(record.userId)!;
    active.delete(record.runId);
    if (active.size === 0) this.#activeByUser.delete(record.userId);
    const next = queue[0];
    if (!next) {
      this.#threads.delete(key);
      return null;
    }
    next.running = true;
    return { record: next.record, cancelRequested: next.cancelRequested };
  }

  async requestCancel(userId: string, runId: string): Promise<CancelLookup> {
    const run = this.#runs.get(runId);
    if (!run) return { kind: 'not_found' };
    if (run.record.userId !== userId) return { kind: 'forbidden' };
    if (run.running) return { kind: 'running', threadId: run.record.threadId, owner: this.nodeId };
    run.cancelRequested = true;
    return { kind: 'queued', threadId: run.record.threadId };
  }

  async activeRuns(userId: string): Promise<UnfinishedRun[]> {
    return [...(this.#activeByUser.get(userId)?.values() ?? [])].map(({ record, running }) => ({
      runId: record.runId,
      threadId: record.threadId,
      state: running ? 'running' : 'queued',
    }));
  }

  onCancelRequest(): void {}

  async renewLeases(): Promise<void> {}

  async claimLostRuns(): Promise<LostRun[]> {
    return [];
  }

  async close(): Promise<void> {}
}

function threadKey(record: RunRecord): string {
  return `${record.userId}\u0000${record.threadId}`;
}
