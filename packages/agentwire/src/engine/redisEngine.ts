import { randomUUID } from 'node:crypto';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { EventBody, EventType, LogEntry } from '@agentwire/protocol';
import { encodeEvent } from '@agentwire/protocol';
import { APPEND_SCRIPT, HEAD_SCRIPT } from './redisScripts.js';
import { userKeys, type UserKeys } from './redisKeys.js';
import { coalesceWrites } from './redisWrites.js';
import type { AppendFence, EventEngine, GapListener, LiveListener, LogHead, MessageClaim, Subscription } from './types.js';
import { RunEndedError } from './types.js';

/** A node of a Redis Cluster to discover the cluster from. */
export interface ClusterNode {
  readonly host: string;
  readonly port: number;
}

/**
 * Options of a Cluster client: `node` applies to each node's connection. Commands are never
 * queued while the cluster is unreachable or being discovered (callers answer 1013/503).
 */
export function clusterOptions(node: RedisOptions): ClusterOptions {
  const { retryStrategy, ...perNode } = node;
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    ...(retryStrategy ? { clusterRetryStrategy: (times: number) => retryStrategy(times) ?? null } : {}),
    redisOptions: perNode,
  };
}

/** Where a `RedisEngine` connects (one Redis or a Cluster), its key prefix, retention and command deadline. */
export interface RedisEngineOptions {
  /** One Redis; exactly one of `url` and `clusterNodes`. */
  readonly url?: string;
  /** Nodes of a Redis Cluster (any subset: the rest is discovered). */
  readonly clusterNodes?: readonly ClusterNode[];
  /** Prefix of every key and channel. Default `aw`. */
  readonly keyPrefix?: string;
  /** Entries kept per user (exact XADD MAXLEN). Default 1000. */
  readonly retentionEvents?: number;
  /** A user's log, claims and runs expire after this long without an append. Default 24 h. */
  readonly retentionMs?: number;
  /** Sharded pub/sub (SPUBLISH/SSUBSCRIBE) when the server supports it. Default true. */
  readonly shardedPubSub?: boolean;
  /**
   * Deadline of every Redis command, in ms. Default 2000. A command past it is rejected but may
   * still be applied (Redis was only slow): callers treat it as in doubt, like a dropped link.
   */
  readonly commandTimeoutMs?: number;
  readonly redisOptions?: RedisOptions;
  readonly now?: () => number;
  /** Connection problems, for logs; the engine recovers by itself. */
  readonly onError?: (error: unknown) => void;
}

interface Channel {
  readonly listeners: Set<LiveListener>;
  readonly gapListeners: Set<GapListener>;
  subscribed: Promise<void>;
}

/**
 * The Redis engine: a Stream per user as the durable log, seq assigned atomically with the
 * append by one Lua script that also publishes the wake-up, and live delivery over (sharded)
 * pub/sub. Pub/sub may lose messages; subscribers repair gaps from the stream, and are told to
 * check for gaps whenever the subscriber connection is re-established.
 */
export class RedisEngine implements EventEngine {
  readonly #commands: Redis | Cluster;
  readonly #subscriber: Redis | Cluster;
  readonly #prefix: string;
  readonly #maxLen: number;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #channels = new Map<string, Channel>();
  #sharded = false;
  #ready: Promise<void> | null = null;
  #connectedOnce = false;
  /** False from a drop of the subscriber connection until Redis confirmed its re-subscriptions. */
  #subscriptionsActive = true;
  #resubscribeRound = 0;
  #closed = false;
  #probeTimer: ReturnType<typeof setInterval> | null = null;
  /** performance.now() when the outstanding probe was sent; null when none is outstanding. */
  #probeSentAt: number | null = null;
  /** The last probe failed (its deadline, or the link); cleared by the next one answered. */
  #probeFailed = false;
  #contactBreaks = 0;
  /** A probe outstanding longer than this breaks contact (see `contact`); at most the readiness deadline. */
  #contactDeadlineMs = PROBE_DEADLINE_MS;

  constructor(private readonly options: RedisEngineOptions) {
    this.#prefix = options.keyPrefix ?? 'aw';
    this.#maxLen = options.retentionEvents ?? 1000;
    this.#ttlMs = options.retentionMs ?? 86_400_000;
    this.#now = options.now ?? Date.now;
    const base: RedisOptions = {
      lazyConnect: true,
      // Fail fast while Redis is unreachable: callers answer 1013/503 instead of hanging.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      // A stalled Redis (frozen, overloaded, a half-open link) answers nothing and drops nothing:
      // without a deadline every caller would wait for the whole stall.
      commandTimeout: options.commandTimeoutMs ?? 2000,
      // Closing a client whose link never came up otherwise holds the process for 2 s.
      disconnectTimeout: 200,
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
      ...options.redisOptions,
    };
    if ((options.url === undefined) === (options.clusterNodes === undefined)) {
      throw new TypeError('RedisEngine needs exactly one of url and clusterNodes');
    }
    if (options.clusterNodes) {
      const nodes = [...options.clusterNodes];
      this.#commands = new Cluster(nodes, clusterOptions(base));
      // One subscriber per master, each for the channels of its slots; it re-subscribes by itself.
      this.#subscriber = new Cluster(nodes, { ...clusterOptions(base), shardedSubscribers: true });
      // A subscriber (re)connected to some master: what was published meanwhile is lost.
      this.#subscriber.on('subscribersReady', () => {
        this.#subscriptionsActive = true;
        this.#signalGaps();
      });
    } else {
      this.#commands = new Redis(options.url!, base);
      // Not ioredis' autoResubscribe: nobody awaits its subscribe commands, so when the link drops
      // again before Redis answers them they are rejected unhandled and the channels forgotten.
      this.#subscriber = new Redis(options.url!, { ...base, autoResubscribe: false });
    }
    const onError = (error: unknown) => options.onError?.(error);
    this.#commands.on('error', onError);
    this.#subscriber.on('error', onError);
    this.#commands.defineCommand('awHead', { numberOfKeys: 2, lua: HEAD_SCRIPT });
    this.#commands.defineCommand('awAppend', { numberOfKeys: 3, lua: APPEND_SCRIPT });
    this.#commands.on('ready', () => {
      this.#signalGaps();
      this.#probe();
    });
    this.#commands.on('close', () => this.#contactBroken());
    // A Cluster's sharded subscribers re-subscribe by themselves ('subscribersReady' above).
    if (this.#subscriber instanceof Redis) this.#subscriber.on('ready', () => this.#resubscribe());
    this.#subscriber.on('close', () => {
      this.#subscriptionsActive = false;
      this.#contactBroken();
    });
    const onMessage = (channel: string | Buffer, message: string | Buffer) => this.#onMessage(String(channel), String(message));
    this.#subscriber.on('message', onMessage);
    this.#subscriber.on('smessage', onMessage);
  }

  /**
   * Both connections are up and Redis answers: false while a probe has been outstanding longer
   * than its deadline (a stall: the link stays up but nothing is answered) or the last one failed.
   */
  get available(): boolean {
    return this.#answeringWithin(PROBE_DEADLINE_MS);
  }

  #answeringWithin(deadlineMs: number): boolean {
    if (this.#closed || this.#commands.status !== 'ready' || this.#subscriber.status !== 'ready' || this.#probeFailed) return false;
    return this.#probeSentAt === null || performance.now() - this.#probeSentAt <= deadlineMs;
  }

  /**
   * Contact with Redis as the run store's sweeper judges it: `breaks` counts every break so far
   * (a probe unanswered within the contact deadline, a failed one, a dropped connection); `ok`
   * is false during one. Every period with `ok` false is counted by the time it ends, so a
   * sweeper that samples `contact` now and then cannot miss one that fell between samples. A run's lease is only judged lapsed by a node whose
   * contact has been unbroken for a whole lease (see RunManager).
   */
  get contact(): { readonly breaks: number; readonly ok: boolean } {
    return { breaks: this.#contactBreaks, ok: this.#answeringWithin(this.#contactDeadlineMs) };
  }

  /**
   * Makes a shorter stall break contact than readiness notices, probing twice as often as
   * `ms`: a stall is then seen as a break once it lasts longer than 1.5 × `ms`. The run store
   * asks for a third of its lease (see RedisRunStore).
   */
  requireContactWithin(ms: number): void {
    this.#contactDeadlineMs = Math.max(20, Math.min(this.#contactDeadlineMs, Math.floor(ms)));
    if (this.#probeTimer) {
      clearInterval(this.#probeTimer);
      this.#probeTimer = null;
      this.#startProbing();
    }
  }

  /** The connection for commands, shared with the cluster run store. */
  get redis(): Redis | Cluster {
    return this.#commands;
  }

  keys(userId: string): UserKeys {
    return userKeys(this.#prefix, userId);
  }

  get keyPrefix(): string {
    return this.#prefix;
  }

  get retentionMs(): number {
    return this.#ttlMs;
  }

  ready(): Promise<void> {
    this.#ready ??= this.#connect();
    return this.#ready;
  }

  /** Resolves once both connections are up; until then ioredis keeps retrying (start-up outages). */
  async #connect(): Promise<void> {
    for (;;) {
      await Promise.all([this.#commands, this.#subscriber].map((client) => connected(client, this.options.onError)));
      if (this.options.shardedPubSub === false && !this.options.clusterNodes) break;
      try {
        const info = await this.#commands.info('server');
        const major = Number(/redis_version:(\d+)/.exec(info)?.[1] ?? 0);
        // On a Cluster, plain pub/sub would send every notification to every master.
        if (this.options.clusterNodes && major < 7) throw new Error(`Redis Cluster needs Redis 7 or later (sharded pub/sub), not ${major}`);
        this.#sharded = major >= 7;
        break;
      } catch (error) {
        // Stalled or dropped at start-up: try again rather than never becoming ready.
        if (this.#closed) throw error;
        this.options.onError?.(error);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    this.#connectedOnce = true;
    this.#startProbing();
  }

  #startProbing(): void {
    if (this.#closed || this.#probeTimer) return;
    this.#probeTimer = setInterval(() => this.#probe(), Math.min(PROBE_INTERVAL_MS, this.#contactDeadlineMs / 2));
    this.#probeTimer.unref();
  }

  /**
   * One PING at a time on the command connection, the path every caller's commands take; on a
   * Cluster, one to every master (each holds some users' keys), answered when all answered.
   */
  #probe(): void {
    if (this.#closed || this.#probeSentAt !== null || this.#commands.status !== 'ready') return;
    const sentAt = performance.now();
    this.#probeSentAt = sentAt;
    const commands = this.#commands;
    const pinged = commands instanceof Cluster ? Promise.all(commands.nodes('master').map((node) => node.ping())) : commands.ping();
    pinged.then(
      () => {
        this.#probeSentAt = null;
        // Answered, but late: Redis stalled meanwhile, though no probe was found overdue.
        if (performance.now() - sentAt > this.#contactDeadlineMs) this.#contactBroken();
        this.#probeFailed = false;
      },
      () => {
        this.#probeSentAt = null;
        this.#contactBroken();
        this.#probeFailed = true;
        // At once (if the link is up): the stall's end is then seen as soon as Redis answers.
        this.#probe();
      },
    );
  }

  #contactBroken(): void {
    this.#contactBreaks++;
  }

  async append(userId: string, events: readonly EventBody[], fence?: AppendFence): Promise<LogEntry[]> {
    const keys = this.keys(userId);
    const now = this.#now();
    const args: (string | number)[] = [
      randomUUID(),
      this.#ttlMs,
      this.#maxLen,
      keys.live,
      this.#sharded ? 'SPUBLISH' : 'PUBLISH',
      now,
      fence ? '1' : '0',
      fence?.terminal ? '1' : '0',
      events.length,
      fence?.appendId ?? '',
    ];
    const parts = events.map((body) => splitAtSeq(body));
    for (const [index, part] of parts.entries()) args.push(part.head, part.tail, events[index]!.type);
    const runKey = fence ? keys.run(fence.runId) : keys.meta;
    coalesceWrites(this.#commands);
    const [epoch, first, skipped] = (await (this.#commands as RedisWithScripts).awAppend(keys.meta, keys.log, runKey, ...args)) as [string, number, number];
    if (Number(first) === -1) throw new RunEndedError(fence!.runId);
    const skip = Number(skipped);
    return parts.slice(skip).map((part, index) => {
      const seq = Number(first) + index;
      return { seq, type: events[skip + index]!.type, json: part.head + seq + part.tail, appendedAt: now, epoch };
    });
  }

  async subscribe(userId: string, listener: LiveListener, onPossibleGap?: GapListener): Promise<Subscription> {
    const name = this.keys(userId).live;
    let channel = this.#channels.get(name);
    if (!channel) {
      channel = { listeners: new Set(), gapListeners: new Set(), subscribed: Promise.resolve() };
      this.#channels.set(name, channel);
      const created = channel;
      channel.subscribed = (this.#sharded ? this.#subscriber.ssubscribe(name) : this.#subscriber.subscribe(name)).then(
        () => {},
        (error) => {
          if (this.#channels.get(name) === created && created.listeners.size === 0) this.#channels.delete(name);
          throw error;
        },
      );
    }
    channel.listeners.add(listener);
    if (onPossibleGap) channel.gapListeners.add(onPossibleGap);
    const current = channel;
    try {
      await current.subscribed;
    } catch (error) {
      current.listeners.delete(listener);
      if (onPossibleGap) current.gapListeners.delete(onPossibleGap);
      if (current.listeners.size === 0 && this.#channels.get(name) === current) this.#channels.delete(name);
      throw error;
    }
    return {
      unsubscribe: async () => {
        current.listeners.delete(listener);
        if (onPossibleGap) current.gapListeners.delete(onPossibleGap);
        if (current.listeners.size > 0 || this.#channels.get(name) !== current) return;
        this.#channels.delete(name);
        if (this.#subscriber.status !== 'ready') return;
        await (this.#sharded ? this.#subscriber.sunsubscribe(name) : this.#subscriber.unsubscribe(name)).catch(
          (error: unknown) => this.options.onError?.(error),
        );
      },
    };
  }

  async read(userId: string, fromSeq: number, toSeq: number): Promise<LogEntry[]> {
    if (toSeq < fromSeq) return [];
    const rows = await this.#commands.xrange(this.keys(userId).log, `${fromSeq}-0`, `${toSeq}-0`);
    return rows.map(([id, fields]) => {
      const entry: { seq: number; type: EventType; json: string; appendedAt: number } = {
        seq: Number.parseInt(id, 10),
        type: 'agent_started',
        json: '',
        appendedAt: 0,
      };
      for (let i = 0; i < fields.length; i += 2) {
        const value = fields[i + 1]!;
        if (fields[i] === 'j') entry.json = value;
        else if (fields[i] === 't') entry.type = value as EventType;
        else if (fields[i] === 'a') entry.appendedAt = Number(value);
      }
      return entry;
    });
  }

  async head(userId: string): Promise<LogHead> {
    const keys = this.keys(userId);
    const [epoch, seq] = (await (this.#commands as RedisWithScripts).awHead(keys.meta, keys.log, randomUUID(), this.#ttlMs)) as [string, string];
    return { epoch, lastSeq: Number(seq) };
  }

  async claimMessage(userId: string, messageId: string, claim: MessageClaim): Promise<MessageClaim | null> {
    const key = this.keys(userId).claim(messageId);
    // SET NX GET: one round trip that either claims the id or returns who holds it.
    coalesceWrites(this.#commands);
    const previous = await this.#commands.set(key, JSON.stringify(claim), 'PX', this.#ttlMs, 'NX', 'GET');
    return previous === null ? null : (JSON.parse(previous) as MessageClaim);
  }

  async releaseMessage(userId: string, messageId: string): Promise<void> {
    await this.#commands.del(this.keys(userId).claim(messageId));
  }

  async close(): Promise<void> {
    // QUIT waits for Redis' answer: only worth it while Redis answers (it flushes our writes).
    const graceful = this.available;
    this.#closed = true;
    if (this.#probeTimer) clearInterval(this.#probeTimer);
    this.#channels.clear();
    if (graceful) {
      // Bounded too: Redis may stall right now, before a probe could tell.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise((resolve) => (timer = setTimeout(resolve, PROBE_DEADLINE_MS)));
      await Promise.race([Promise.allSettled([this.#commands.quit(), this.#subscriber.quit()]), stalled]);
      clearTimeout(timer);
    }
    this.#commands.disconnect();
    this.#subscriber.disconnect();
  }

  #onMessage(channelName: string, message: string): void {
    const channel = this.#channels.get(channelName);
    if (!channel) return;
    const entries = parseNotification(message);
    if (!entries) {
      // Not ours to read (e.g. another version's format): what it announced is in the log.
      for (const onGap of channel.gapListeners) onGap();
      return;
    }
    for (const entry of entries) {
      for (const listener of channel.listeners) listener(entry);
    }
  }

  /**
   * The subscriber connection is (back) up without subscriptions: subscribe to every channel
   * again, then, once Redis confirmed it, tell subscribers to check for gaps. If the link drops
   * before that, the next 'ready' starts over.
   */
  #resubscribe(): void {
    const round = ++this.#resubscribeRound;
    const subscriber = this.#subscriber;
    const names = [...this.#channels.keys()];
    Promise.all(names.map((name) => (this.#sharded ? subscriber.ssubscribe(name) : subscriber.subscribe(name)))).then(
      () => {
        if (round !== this.#resubscribeRound) return;
        this.#subscriptionsActive = true;
        this.#signalGaps();
      },
      (error: unknown) => {
        this.options.onError?.(error);
        // Timed out on a link that is still up (Redis stalled): nothing else would try again.
        if (round === this.#resubscribeRound && subscriber.status === 'ready' && !this.#closed) {
          setTimeout(() => round === this.#resubscribeRound && this.#resubscribe(), 200).unref();
        }
      },
    );
  }

  /**
   * After a reconnect, notifications sent meanwhile are gone: subscribers must check for gaps.
   * They are told once the subscriptions are active again (so nothing published after their
   * check can be missed) and the command connection is up (the check reads the log); whichever
   * of the two connections comes back last triggers it.
   */
  #signalGaps(): void {
    if (!this.#connectedOnce || this.#closed || !this.#subscriptionsActive || this.#commands.status !== 'ready') return;
    for (const channel of this.#channels.values()) {
      for (const onGap of channel.gapListeners) onGap();
    }
  }
}

/** Readiness (PROTOCOL.md section 10): a probe unanswered for this long means Redis is unreachable. */
const PROBE_DEADLINE_MS = 1000;
/** Half the deadline: a stall is noticed 1 to 1.5 s after it begins. */
const PROBE_INTERVAL_MS = 500;

function connected(client: Redis | Cluster, onError?: (error: unknown) => void): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  const ready = new Promise<void>((resolve) => client.once('ready', () => resolve()));
  if (client.status === 'wait') client.connect().catch((error: unknown) => onError?.(error));
  return ready;
}

type RedisWithScripts = (Redis | Cluster) & {
  awHead(...args: (string | number)[]): Promise<unknown>;
  awAppend(...args: (string | number)[]): Promise<unknown>;
};

/** Encodes the event with a placeholder seq and splits around it, so Lua can write the real one. */
function splitAtSeq(body: EventBody): { head: string; tail: string } {
  const json = encodeEvent(body, 0);
  const marker = `"seq":0`;
  const at = json.indexOf(marker) + marker.length - 1;
  return { head: json.slice(0, at), tail: json.slice(at + 1) };
}

/**
 * One notification per append: `<epoch> <appendedAt>`, then per entry a line `<seq> <type> <json>`
 * (JSON never holds a raw newline). Null when the message is not in this format.
 */
export function parseNotification(message: string): LogEntry[] | null {
  const lines = message.split('\n');
  const header = lines[0]!;
  const space = header.indexOf(' ');
  const appendedAt = Number(header.slice(space + 1));
  if (space <= 0 || lines.length < 2 || !Number.isFinite(appendedAt)) return null;
  const epoch = header.slice(0, space);
  const entries: LogEntry[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const a = line.indexOf(' ');
    const b = line.indexOf(' ', a + 1);
    const seq = Number(line.slice(0, a));
    if (a <= 0 || b < 0 || !Number.isInteger(seq)) return null;
    entries.push({ epoch, seq, type: line.slice(a + 1, b) as EventType, appendedAt, json: line.slice(b + 1) });
  }
  return entries;
}
