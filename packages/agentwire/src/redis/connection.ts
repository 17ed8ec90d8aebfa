import { readFileSync } from 'node:fs';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { corkForTick } from '../cork.js';
import { RedisKeys, withFieldNames } from './keys.js';

/** A node of a Redis Cluster to discover the cluster from. */
export interface ClusterNode {
  readonly host: string;
  readonly port: number;
}

/** Where the Redis backend connects (one Redis or a Cluster), its key prefix and command deadline. */
export interface RedisConnectionOptions {
  /** One Redis; exactly one of `url` and `clusterNodes`. */
  readonly url?: string;
  /** Nodes of a Redis Cluster (any subset: the rest is discovered). */
  readonly clusterNodes?: readonly ClusterNode[];
  /** Prefix of every key and channel. Default `aw`. */
  readonly keyPrefix?: string;
  /** Sharded pub/sub (SPUBLISH/SSUBSCRIBE) when the server supports it. Default true; always on a Cluster. */
  readonly shardedPubSub?: boolean;
  /**
   * Deadline of every Redis command, in ms (AGENTWIRE_REDIS_COMMAND_TIMEOUT_MS). Default 2000. A
   * command past it is rejected but may still be applied (Redis was only slow): callers treat it
   * as in doubt, like a dropped link.
   */
  readonly commandTimeoutMs?: number;
  /** ioredis options of every connection, over the backend's own. */
  readonly redisOptions?: RedisOptions;
  /** Connection problems, for logs; the connection recovers by itself. */
  readonly onError?: (error: unknown) => void;
}

/** Delay before the `attempt`th reconnect: the one retry policy of every Redis connection. */
export function reconnectDelayMs(attempt: number): number {
  return Math.min(50 * 2 ** Math.min(attempt, 6), 2000);
}

/** The Lua scripts (scripts/<name>.lua), loaded once per connection. */
const SCRIPT_NAMES = [
  'head',
  'append',
  'enqueue',
  'advance',
  'cancel',
  'takeLease',
  'acquireConnection',
  'activeRuns',
  'putMark',
  'pruneMarks',
  'renewRun',
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

/**
 * A script takes `numberOfKeys` keys (header `-- KEYS: a, b`), or any number of items of
 * `keysPerItem` keys each (`-- KEYS per <item>: a, b`; the call passes the count first).
 */
interface Script {
  readonly command: string;
  readonly numberOfKeys?: number;
  readonly keysPerItem?: number;
  readonly lua: string;
}

type ScriptCall = (...keysAndArgs: (string | number)[]) => Promise<unknown>;

let scripts: ReadonlyMap<ScriptName, Script> | null = null;

/**
 * Every script as Redis runs it: the file with its `--#include <file>` lines replaced by that
 * file, and the schema's field names (keys.ts) written in. The number of keys is read from the
 * header's `-- KEYS:` line (one convention for every script: `-- KEYS: a, b` and `-- ARGV: ...`).
 */
function loadScripts(): ReadonlyMap<ScriptName, Script> {
  if (scripts) return scripts;
  const read = (file: string) => readFileSync(new URL(`./scripts/${file}`, import.meta.url), 'utf8');
  const loaded = new Map<ScriptName, Script>();
  for (const name of SCRIPT_NAMES) {
    const source = read(`${name}.lua`);
    const keysLine = /^-- KEYS( per \w+)?: (.+)$/m.exec(source);
    if (!keysLine || !/^-- ARGV: /m.test(source)) throw new Error(`scripts/${name}.lua: its header must list KEYS and ARGV`);
    const body = source.replace(/^--#include (\S+)$/gm, (_, file: string) => read(file));
    const keys = keysLine[2]!.split(',').length;
    loaded.set(name, {
      command: `aw${name[0]!.toUpperCase()}${name.slice(1)}`,
      ...(keysLine[1] ? { keysPerItem: keys } : { numberOfKeys: keys }),
      lua: withFieldNames(body, `scripts/${name}.lua`),
    });
  }
  scripts = loaded;
  return loaded;
}

/**
 * Options of a Cluster client: `node` applies to each node's connection. Commands are never
 * queued while the cluster is unreachable or being discovered (callers answer 1013/503).
 */
function clusterOptions(node: RedisOptions): ClusterOptions {
  const { retryStrategy, ...perNode } = node;
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    ...(retryStrategy ? { clusterRetryStrategy: (times: number) => retryStrategy(times) ?? null } : {}),
    redisOptions: perNode,
  };
}

/** Readiness (PROTOCOL.md section 10): a probe unanswered for this long means Redis is unreachable. */
const PROBE_DEADLINE_MS = 1000;
/** Half the deadline: a stall is noticed 1 to 1.5 s after it begins. */
const PROBE_INTERVAL_MS = 500;

/**
 * The one connection layer of the Redis backend, shared by its engine, run store and presence:
 * a client for commands (with the Lua scripts defined on it) and a client for pub/sub, on one
 * Redis or a Cluster, with one retry policy and one command deadline; the PING probe that
 * tells readiness and contact; write coalescing; and the key names (`keys`).
 *
 * Pub/sub is not ioredis' autoResubscribe: nobody awaits its subscribe commands, so when the
 * link drops again before Redis answers them they are rejected unhandled and the channels
 * forgotten. Channels stay registered here until unsubscribed and are subscribed again, awaited,
 * on every reconnect; then `onPubSubGap` listeners are told that messages may have been lost.
 */
export class RedisConnection {
  readonly keys: RedisKeys;
  readonly #options: RedisConnectionOptions;
  readonly #commands: Redis | Cluster;
  readonly #subscriber: Redis | Cluster;
  readonly #handlers = new Map<string, (message: string) => void>();
  readonly #gapListeners = new Set<() => void>();
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

  constructor(options: RedisConnectionOptions) {
    if ((options.url === undefined) === (options.clusterNodes === undefined)) {
      throw new TypeError('a Redis connection needs exactly one of url and clusterNodes');
    }
    this.#options = options;
    this.keys = new RedisKeys(options.keyPrefix ?? 'aw');
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
      retryStrategy: reconnectDelayMs,
      ...options.redisOptions,
    };
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
      const url = options.url!;
      this.#commands = new Redis(url, base);
      this.#subscriber = new Redis(url, { ...base, autoResubscribe: false });
      this.#subscriber.on('ready', () => this.#resubscribe());
    }
    const onError = (error: unknown) => options.onError?.(error);
    this.#commands.on('error', onError);
    this.#subscriber.on('error', onError);
    for (const script of loadScripts().values()) {
      // Without numberOfKeys ioredis takes the count as the call's first argument.
      this.#commands.defineCommand(script.command, { ...(script.numberOfKeys !== undefined ? { numberOfKeys: script.numberOfKeys } : {}), lua: script.lua });
    }
    this.#commands.on('ready', () => {
      this.#signalGaps();
      this.#probe();
    });
    this.#commands.on('close', () => this.#contactBroken());
    this.#subscriber.on('close', () => {
      this.#subscriptionsActive = false;
      this.#contactBroken();
    });
    const onMessage = (channel: string | Buffer, message: string | Buffer) => this.#handlers.get(String(channel))?.(String(message));
    this.#subscriber.on('message', onMessage);
    this.#subscriber.on('smessage', onMessage);
  }

  /** The client for commands (scripts are run with `script`). */
  get client(): Redis | Cluster {
    return this.#commands;
  }

  /** Pub/sub is sharded (SPUBLISH/SSUBSCRIBE); known once `ready` resolved. */
  get sharded(): boolean {
    return this.#sharded;
  }

  /** Resolves once both clients are up and Redis answers; until then ioredis keeps retrying (start-up outages). */
  ready(): Promise<void> {
    this.#ready ??= this.#connect();
    return this.#ready;
  }

  async #connect(): Promise<void> {
    for (;;) {
      await Promise.all([this.#commands, this.#subscriber].map((client) => connected(client, this.#options.onError)));
      if (this.#options.shardedPubSub === false && !this.#options.clusterNodes) break;
      try {
        const info = await this.#commands.info('server');
        const major = Number(/redis_version:(\d+)/.exec(info)?.[1] ?? 0);
        // On a Cluster, plain pub/sub would send every notification to every master.
        if (this.#options.clusterNodes && major < 7) throw new Error(`Redis Cluster needs Redis 7 or later (sharded pub/sub), not ${major}`);
        this.#sharded = major >= 7;
        break;
      } catch (error) {
        // Stalled or dropped at start-up: try again rather than never becoming ready.
        if (this.#closed) throw error;
        this.#options.onError?.(error);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    this.#connectedOnce = true;
    this.#startProbing();
  }

  /**
   * Both clients are up and Redis answers: false while a probe has been outstanding longer than
   * its deadline (a stall: the link stays up but nothing is answered) or the last one failed.
   */
  get available(): boolean {
    return this.#answeringWithin(PROBE_DEADLINE_MS);
  }

  /**
   * Contact with Redis as the run store's sweeper judges it: `breaks` counts every break so far
   * (a probe unanswered within the contact deadline, a failed one, a dropped connection); `ok`
   * is false during one. Every period with `ok` false is counted by the time it ends, so a
   * sweeper that samples `contact` now and then cannot miss one that fell between samples. A
   * run's lease is only judged lapsed by a node whose contact has been unbroken for a whole
   * lease (see RunManager).
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

  #answeringWithin(deadlineMs: number): boolean {
    if (this.#closed || this.#commands.status !== 'ready' || this.#subscriber.status !== 'ready' || this.#probeFailed) return false;
    return this.#probeSentAt === null || performance.now() - this.#probeSentAt <= deadlineMs;
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

  /**
   * The commands sent on this connection from now to the end of the tick go to Redis in one
   * write. Under load many runs append in one tick (their previous replies arrived in one read).
   * Unlike ioredis' auto-pipelining, nothing waits for an earlier batch's replies. A Cluster
   * client writes to several connections; its commands are sent as they come.
   */
  coalesceWrites(): void {
    const commands = this.#commands;
    if (commands instanceof Redis && commands.status === 'ready' && commands.stream) corkForTick(commands.stream);
  }

  /** Runs one of the scripts (scripts/<name>.lua) by its SHA, sending the source only when Redis lacks it. */
  script(name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    const script = loadScripts().get(name)!;
    const call = (this.#commands as unknown as Record<string, ScriptCall>)[script.command]!;
    if (script.keysPerItem === undefined) {
      if (keys.length !== script.numberOfKeys) throw new TypeError(`script ${name} takes ${script.numberOfKeys} keys, not ${keys.length}`);
      return call.call(this.#commands, ...keys, ...args);
    }
    if (keys.length === 0 || keys.length % script.keysPerItem !== 0)
      throw new TypeError(`script ${name} takes ${script.keysPerItem} keys per item, not ${keys.length} in all`);
    return call.call(this.#commands, keys.length, ...keys, ...args);
  }

  /** True on a Redis Cluster: a script's keys must then share a slot. */
  get cluster(): boolean {
    return this.#commands instanceof Cluster;
  }

  /** The publish command for `redis.call` in a script (`SPUBLISH` when pub/sub is sharded). */
  get publishCommand(): 'SPUBLISH' | 'PUBLISH' {
    return this.#sharded ? 'SPUBLISH' : 'PUBLISH';
  }

  async publish(channel: string, message: string): Promise<void> {
    await (this.#sharded ? this.#commands.spublish(channel, message) : this.#commands.publish(channel, message));
  }

  /**
   * Delivers the channel's messages to `onMessage` (one handler per channel) until
   * `unsubscribe`; resolves once Redis confirmed the subscription. A channel stays registered
   * when this rejects: it is subscribed again on the next reconnect, and at once if the link is
   * still up (Redis stalled).
   */
  async subscribe(channel: string, onMessage: (message: string) => void): Promise<void> {
    this.#handlers.set(channel, onMessage);
    await this.ready();
    try {
      await (this.#sharded ? this.#subscriber.ssubscribe(channel) : this.#subscriber.subscribe(channel));
    } catch (error) {
      if (this.#handlers.get(channel) === onMessage && this.#subscriber.status === 'ready') this.#retryResubscribe(++this.#resubscribeRound);
      throw error;
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    if (!this.#handlers.delete(channel) || this.#subscriber.status !== 'ready') return;
    await (this.#sharded ? this.#subscriber.sunsubscribe(channel) : this.#subscriber.unsubscribe(channel)).catch((error: unknown) =>
      this.#options.onError?.(error),
    );
  }

  /**
   * Called after a reconnect, when pub/sub messages sent meanwhile may be lost: subscribers
   * should compare their position with the log and read what they missed.
   */
  onPubSubGap(listener: () => void): void {
    this.#gapListeners.add(listener);
  }

  /**
   * Closes both clients. QUIT waits for Redis' answer: only worth it while Redis answers (it
   * flushes our writes), and bounded even then (Redis may stall right now, before a probe could tell).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    const graceful = this.available;
    this.#closed = true;
    if (this.#probeTimer) clearInterval(this.#probeTimer);
    this.#handlers.clear();
    this.#gapListeners.clear();
    if (graceful) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise((resolve) => (timer = setTimeout(resolve, PROBE_DEADLINE_MS)));
      await Promise.race([Promise.allSettled([this.#commands.quit(), this.#subscriber.quit()]), stalled]);
      clearTimeout(timer);
    }
    this.#commands.disconnect();
    this.#subscriber.disconnect();
  }

  /**
   * The subscriber connection is (back) up without subscriptions: subscribe to every channel
   * again, then, once Redis confirmed it, signal a possible gap. If the link drops before that,
   * the next 'ready' starts over.
   */
  #resubscribe(): void {
    // The first connection: `subscribe` sends the channels once the pub/sub mode is known.
    if (!this.#connectedOnce) {
      this.#subscriptionsActive = true;
      return;
    }
    const round = ++this.#resubscribeRound;
    const subscriber = this.#subscriber;
    const names = [...this.#handlers.keys()];
    Promise.all(names.map((name) => (this.#sharded ? subscriber.ssubscribe(name) : subscriber.subscribe(name)))).then(
      () => {
        if (round !== this.#resubscribeRound) return;
        this.#subscriptionsActive = true;
        this.#signalGaps();
      },
      (error: unknown) => {
        this.#options.onError?.(error);
        this.#retryResubscribe(round);
      },
    );
  }

  /** Timed out on a link that is still up (Redis stalled): nothing else would try again. */
  #retryResubscribe(round: number): void {
    if (round === this.#resubscribeRound && this.#subscriber.status === 'ready' && !this.#closed) {
      setTimeout(() => round === this.#resubscribeRound && this.#resubscribe(), 200).unref();
    }
  }

  /**
   * After a reconnect, notifications sent meanwhile are gone. Subscribers are told once the
   * subscriptions are active again (so nothing published after their check can be missed) and
   * the command connection is up (the check reads the log); whichever of the two connections
   * comes back last triggers it.
   */
  #signalGaps(): void {
    if (!this.#connectedOnce || this.#closed || !this.#subscriptionsActive || this.#commands.status !== 'ready') return;
    for (const listener of this.#gapListeners) listener();
  }
}

function connected(client: Redis | Cluster, onError?: (error: unknown) => void): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  const ready = new Promise<void>((resolve) => client.once('ready', () => resolve()));
  if (client.status === 'wait') client.connect().catch((error: unknown) => onError?.(error));
  return ready;
}
