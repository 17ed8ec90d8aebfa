import type { EventEngine, LogHead, Subscription } from '../engine/types.js';
import type { LogEntry } from '@agentwire/protocol';
import type { ConnectionPresence } from './presence.js';

/** A connection as its user's coordinator sees it. */
export interface CoordinatorMember {
  readonly connectionId: string;
  /** False once the connection began closing; a closing connection is never registered. */
  isOpen(): boolean;
  /** The user's next live entry. Entries arrive in seq order without gap; must not throw. */
  deliver(entry: LogEntry): void;
  /** The coordinator lost continuity of the user's log; the member must make its client resume. */
  resync(): void;
}

export interface ResumePosition {
  readonly lastSeq?: number;
  readonly epoch?: string;
}

export type Denial = 'not_admitted' | 'stale_generation' | 'connection_closed' | 'too_many_connections';

export type SetupResult =
  | {
      readonly ok: true;
      readonly head: LogHead;
      readonly resumed: boolean;
      /** Entries after the client's position, up to head.lastSeq, when resumed. */
      readonly replay: readonly LogEntry[];
    }
  | { readonly ok: false; readonly reason: Denial };

export type TeardownResult = { readonly ok: true } | { readonly ok: false; readonly reason: Denial };

export interface CoordinatorOptions {
  readonly maxConnections: number;
  /** Extends the per-user cap across nodes; without it the cap is per node. */
  readonly presence?: ConnectionPresence;
  /** Live entries buffered while the log's continuity is being restored. */
  readonly maxPendingEntries?: number;
  /** Called once per entry fanned out (metrics). */
  readonly onFanout?: (entry: LogEntry) => void;
  /** Called when something goes wrong that no connection should see as an exception. */
  readonly onFault?: (error: unknown, context: string) => void;
}

const noop = () => {};

/** Epochs given up that are remembered, so late notifications of them are recognised. */
const MAX_LEFT_EPOCHS = 8;

/**
 * One per user per node: every setup and teardown of the user's connections runs through
 * `#serial`, one at a time. It also owns the node's single subscription to the user's log and
 * fans each entry out to the registered connections in seq order, repairing gaps from the log.
 *
 * Connections hold a generation from `admit`; a request carrying a generation that is no longer
 * the admitted one is denied with a reason, so an old connection's teardown cannot remove what
 * a newer registration added.
 *
 * Log loss: each member holds a position in the epoch its setup's head named. When the log
 * turns out to have started over (a live entry, a catch-up head or a setup head of an epoch the
 * coordinator has not seen), the coordinator moves to the new epoch and only members holding
 * positions in the old one resync; a member set up in the new epoch keeps receiving its entries.
 */
export class UserCoordinator {
  readonly #admitted = new Map<string, number>();
  readonly #members = new Map<string, CoordinatorMember>();
  /** Epoch of the position each member holds; absent while its setup has not read the head yet. */
  readonly #memberEpochs = new Map<string, string>();
  /**
   * While a member is registered but its setup has not read its head (setups run one at a time):
   * the epochs entries were fanned out in meanwhile. Null otherwise.
   */
  #fannedOutDuringSetup: Set<string> | null = null;
  #nextGeneration = 1;
  #tail: Promise<unknown> = Promise.resolve();

  #subscription: Subscription | null = null;
  /** Last seq fanned out; null while the subscription is being established. */
  #lastSeq: number | null = null;
  /** Epoch of the log the fanned-out entries belong to. */
  #epoch: string | null = null;
  /** Epochs this coordinator moved away from, newest last: their live entries are late and dropped. */
  #leftEpochs: string[] = [];
  /** Changes whenever the fanned-out history changes; a repair or catch-up begun before is void. */
  #history = 0;
  #pending: LogEntry[] = [];
  #repairing = false;
  /** A possible gap was signalled during a repair: check the head again once it is done. */
  #catchUpAfterRepair = false;
  readonly #maxPending: number;

  readonly #engine: EventEngine;
  readonly #options: CoordinatorOptions;
  readonly #onIdle: (coordinator: UserCoordinator) => void;

  constructor(
    readonly userId: string,
    engine: EventEngine,
    options: CoordinatorOptions,
    onIdle: (coordinator: UserCoordinator) => void,
  ) {
    this.#engine = engine;
    this.#options = options;
    this.#onIdle = onIdle;
    this.#maxPending = options.maxPendingEntries ?? 10_000;
  }

  get connectionCount(): number {
    return this.#members.size;
  }

  get admittedCount(): number {
    return this.#admitted.size;
  }

  /** Ids of the connections registered here (for presence renewal). */
  connectionIds(): IterableIterator<string> {
    return this.#members.keys();
  }

  /** Synchronous, so a coordinator handed out by the registry cannot be released before this. */
  admit(member: CoordinatorMember): number {
    const generation = this.#nextGeneration++;
    this.#admitted.set(member.connectionId, generation);
    return generation;
  }

  setup(member: CoordinatorMember, generation: number, resume: ResumePosition): Promise<SetupResult> {
    return this.#serial(async (): Promise<SetupResult> => {
      const denial = this.#check(member.connectionId, generation);
      if (denial) return { ok: false, reason: denial };
      if (!member.isOpen()) return { ok: false, reason: 'connection_closed' };
      if (this.#members.size >= this.#options.maxConnections) {
        return { ok: false, reason: 'too_many_connections' };
      }
      const presence = this.#options.presence;
      const ref = { userId: this.userId, connectionId: member.connectionId };
      if (presence && !(await presence.acquire(ref, this.#options.maxConnections))) {
        return { ok: false, reason: 'too_many_connections' };
      }
      let head: LogHead;
      try {
        await this.#ensureSubscribed();
        // Registered before the head is read: every entry after that head reaches the member live.
        this.#members.set(member.connectionId, member);
        this.#fannedOutDuringSetup = new Set();
        head = await this.#headForSetup();
      } catch (error) {
        this.#fannedOutDuringSetup = null;
        if (presence) await presence.release(ref).catch((e: unknown) => this.#options.onFault?.(e, 'presence release'));
        throw error;
      }
      const fannedOut = this.#fannedOutDuringSetup!;
      this.#fannedOutDuringSetup = null;
      this.#memberEpochs.set(member.connectionId, head.epoch);
      // Entries of another history were handed to it before its position was known: start over.
      if ([...fannedOut].some((epoch) => epoch !== head.epoch)) member.resync();
      const replay = await this.#replayFor(resume, head);
      return { ok: true, head, resumed: replay !== null, replay: replay ?? [] };
    });
  }

  teardown(connectionId: string, generation: number): Promise<TeardownResult> {
    return this.#serial(async (): Promise<TeardownResult> => {
      const denial = this.#check(connectionId, generation);
      if (denial) return { ok: false, reason: denial };
      this.#admitted.delete(connectionId);
      this.#memberEpochs.delete(connectionId);
      if (this.#members.delete(connectionId) && this.#options.presence) {
        await this.#options.presence
          .release({ userId: this.userId, connectionId })
          .catch((error: unknown) => this.#options.onFault?.(error, 'presence release'));
      }
      if (this.#admitted.size === 0) await this.#release();
      return { ok: true };
    });
  }

  #check(connectionId: string, generation: number): Denial | null {
    const admitted = this.#admitted.get(connectionId);
    if (admitted === undefined) return 'not_admitted';
    return admitted === generation ? null : 'stale_generation';
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(op);
    this.#tail = result.then(noop, noop);
    return result;
  }

  /**
   * The head a new member's position is taken from, with the coordinator in its epoch. A head of
   * another epoch is read again first: a reply from before a log loss can arrive after the live
   * entries that revealed the loss. If the engine still names another epoch, the log started
   * over without an entry yet (or the coordinator followed a stale notification): the engine is
   * the authority and the coordinator moves to its epoch.
   */
  async #headForSetup(): Promise<LogHead> {
    let head = await this.#engine.head(this.userId);
    if (head.epoch === this.#epoch) return head;
    head = await this.#engine.head(this.userId);
    if (head.epoch !== this.#epoch) {
      this.#enterEpoch(head.epoch, head.lastSeq);
      this.#drainPending();
    }
    return head;
  }

  async #replayFor(resume: ResumePosition, head: LogHead): Promise<LogEntry[] | null> {
    const from = resume.lastSeq;
    if (from === undefined || resume.epoch !== head.epoch || from > head.lastSeq) return null;
    if (from === head.lastSeq) return [];
    const entries = await this.#engine.read(this.userId, from + 1, head.lastSeq);
    const complete = entries.length === head.lastSeq - from && entries[0]?.seq === from + 1;
    return complete ? entries : null;
  }

  async #ensureSubscribed(): Promise<void> {
    if (this.#subscription) return;
    this.#lastSeq = null;
    this.#subscription = await this.#engine.subscribe(
      this.userId,
      (entry) => this.#onLive(entry),
      () => void this.#catchUp(),
    );
    try {
      const head = await this.#engine.head(this.userId);
      this.#epoch = head.epoch;
      this.#lastSeq = head.lastSeq;
    } catch (error) {
      await this.#unsubscribe();
      throw error;
    }
    this.#drainPending();
  }

  async #release(): Promise<void> {
    this.#onIdle(this);
    await this.#unsubscribe();
  }

  async #unsubscribe(): Promise<void> {
    const subscription = this.#subscription;
    this.#subscription = null;
    this.#lastSeq = null;
    this.#pending = [];
    await subscription?.unsubscribe();
  }

  #onLive(entry: LogEntry): void {
    if (this.#lastSeq === null || this.#repairing) {
      this.#pending.push(entry);
      if (this.#pending.length > this.#maxPending) this.#loseContinuity();
      return;
    }
    this.#accept(entry);
  }

  #accept(entry: LogEntry): void {
    if (entry.epoch !== undefined && entry.epoch !== this.#epoch) {
      // A notification from a history already given up, delivered late.
      if (this.#leftEpochs.includes(entry.epoch)) return;
      // The log was lost and started over (e.g. Redis flushed). A member being set up may hold
      // any position in the new history, so then the new history is read from its start.
      this.#enterEpoch(entry.epoch, this.#fannedOutDuringSetup ? 0 : entry.seq - 1);
    }
    const last = this.#lastSeq!;
    if (entry.seq <= last) return;
    if (entry.seq === last + 1) {
      this.#fanOut(entry);
      return;
    }
    this.#repairing = true;
    this.#pending.push(entry);
    void this.#repair(last + 1, entry.seq - 1);
  }

  /** Notifications may have been lost with nothing after them to reveal it: compare with the head. */
  async #catchUp(): Promise<void> {
    if (this.#lastSeq === null || !this.#subscription) return;
    // The repair covers only up to the entry that revealed its gap; what the signal is about may lie beyond.
    if (this.#repairing) {
      this.#catchUpAfterRepair = true;
      return;
    }
    let head: LogHead;
    try {
      head = await this.#engine.head(this.userId);
    } catch (error) {
      this.#options.onFault?.(error, 'catch-up');
      return;
    }
    if (this.#lastSeq === null) return;
    if (this.#repairing) {
      this.#catchUpAfterRepair = true;
      return;
    }
    if (head.epoch !== this.#epoch) {
      if (this.#leftEpochs.includes(head.epoch)) return; // answered before the loss was seen
      this.#enterEpoch(head.epoch, this.#fannedOutDuringSetup ? 0 : head.lastSeq);
    }
    if (head.lastSeq > this.#lastSeq) {
      this.#repairing = true;
      await this.#repair(this.#lastSeq + 1, head.lastSeq);
    }
  }

  /** A notification was lost (possible on Redis pub/sub): read the missing range from the log. */
  async #repair(fromSeq: number, toSeq: number): Promise<void> {
    const history = this.#history;
    try {
      const missing = await this.#engine.read(this.userId, fromSeq, toSeq);
      if (history !== this.#history) return;
      if (missing.length !== toSeq - fromSeq + 1 || missing[0]?.seq !== fromSeq) {
        this.#loseContinuity();
        return;
      }
      for (const entry of missing) {
        if (entry.seq > this.#lastSeq!) this.#fanOut(entry);
      }
    } catch (error) {
      if (history !== this.#history) return;
      this.#options.onFault?.(error, 'gap repair');
      this.#loseContinuity();
      return;
    }
    this.#repairing = false;
    this.#drainPending();
    if (this.#catchUpAfterRepair && !this.#repairing) {
      this.#catchUpAfterRepair = false;
      void this.#catchUp();
    }
  }

  #drainPending(): void {
    const pending = this.#pending.sort((a, b) => a.seq - b.seq);
    this.#pending = [];
    for (let i = 0; i < pending.length; i++) {
      if (this.#repairing) {
        this.#pending.push(...pending.slice(i));
        return;
      }
      this.#accept(pending[i]!);
    }
  }

  /**
   * The entries between what was fanned out and what arrives next cannot be recovered here:
   * every member makes its client resume (which answers `resumed: false` if they are gone).
   */
  #loseContinuity(): void {
    const newest = this.#pending.reduce((max, e) => Math.max(max, e.seq), this.#lastSeq ?? 0);
    this.#pending = [];
    this.#repairing = false;
    this.#history++;
    if (this.#lastSeq !== null) this.#lastSeq = newest;
    for (const member of [...this.#members.values()]) member.resync();
  }

  /**
   * The log started over as `epoch`; fan-out continues after `lastSeq` in it. Members holding
   * positions in another epoch resync (their history is gone); the member being set up, whose
   * position is not known yet, is checked when its setup ends.
   */
  #enterEpoch(epoch: string, lastSeq: number): void {
    const left = this.#epoch;
    this.#leftEpochs = this.#leftEpochs.filter((e) => e !== epoch && e !== left);
    if (left !== null) this.#leftEpochs.push(left);
    if (this.#leftEpochs.length > MAX_LEFT_EPOCHS) this.#leftEpochs.shift();
    this.#epoch = epoch;
    this.#lastSeq = lastSeq;
    this.#repairing = false;
    this.#catchUpAfterRepair = false;
    this.#history++;
    for (const [connectionId, member] of [...this.#members]) {
      const held = this.#memberEpochs.get(connectionId);
      if (held !== undefined && held !== epoch) member.resync();
    }
  }

  #fanOut(entry: LogEntry): void {
    this.#lastSeq = entry.seq;
    this.#options.onFanout?.(entry);
    const epoch = this.#epoch!;
    this.#fannedOutDuringSetup?.add(epoch);
    for (const [connectionId, member] of this.#members) {
      const held = this.#memberEpochs.get(connectionId);
      // A member of a lost history is resyncing; none of the new history is its.
      if (held === undefined || held === epoch) member.deliver(entry);
    }
  }
}
