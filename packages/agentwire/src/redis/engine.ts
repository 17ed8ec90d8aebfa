import { randomUUID } from 'node:crypto';
import type { EventBody, EventType, LogEntry } from '@agentwire/protocol';
import { encodeEvent } from '@agentwire/protocol';
import type { AppendFence, EventEngine, GapListener, LiveListener, LogHead, Subscription } from '../engine/types.js';
import { RunEndedError } from '../engine/types.js';
import type { RedisConnection } from './connection.js';
import { DEFAULTS } from '../config/settings.js';
import { LOG_FIELD, keyTtlMs } from './keys.js';
import { LiveOrder } from './liveOrder.js';
import { atEndOfTick } from '../endOfTick.js';

/** Retention of a `RedisEngine`'s logs. */
export interface RedisEngineOptions {
  /** Entries kept per user (exact XADD MAXLEN). Default AGENTWIRE_RETENTION_EVENTS's (10000). */
  readonly retentionEvents?: number;
  /** A user's log expires this long (plus a slack: keyTtlMs in keys.ts) after its last append. Default 24 h. */
  readonly retentionMs?: number;
  readonly now?: () => number;
}

/** An append waiting to be sent: its keys and arguments in the append script (append.lua). */
interface QueuedAppend {
  /** A key of the user's bucket, whose hash tag decides the slot of all the user's keys (keys.ts). */
  readonly bucket: string;
  readonly keys: readonly string[];
  readonly args: readonly (string | number)[];
  readonly events: number;
  /** Length of its events' JSON, in UTF-16 units (a bound, not an exact byte count). */
  readonly size: number;
  /** Takes the script's reply for this append (or the error of the whole call) and the time written. */
  readonly settle: (reply: unknown, now: number) => void;
}

/** What append.lua answers per append: epoch, first seq (-1: fenced off) and how many events it skipped. */
type AppendReply = [string, number, number];

/**
 * Bounds of one append script: the appends of a tick beyond them go in further calls (an append
 * is never split), so that a script never holds Redis for long (each event is an XADD), and one
 * user's large events do not hold up or time out the appends of the users that share its call.
 */
export const MAX_APPENDS_PER_SCRIPT = 64;
export const MAX_EVENTS_PER_SCRIPT = 512;
export const MAX_SIZE_PER_SCRIPT = 256 * 1024;

/**
 * How long the oldest queued append may wait for the end of the loop's turn, in ms: an append
 * queued later than that sends the queue at the end of its own tick (see #flush).
 */
export const MAX_QUEUE_WAIT_MS = 0.5;

interface Channel {
  readonly listeners: Set<LiveListener>;
  readonly gapListeners: Set<GapListener>;
  readonly order: LiveOrder;
  subscribed: Promise<void>;
}

/**
 * The Redis engine: a Stream per user as the durable log, seq assigned atomically with the
 * append by one Lua script that also publishes the wake-up, and live delivery over (sharded)
 * pub/sub. Pub/sub may lose messages; subscribers repair gaps from the stream, and are told to
 * check for gaps whenever the connection's pub/sub is re-established. A node's own appends reach
 * its subscribers from the append's reply, without waiting for the notification (LiveOrder
 * keeps them in order and once). Only the log: message-id claims, thread queues and run
 * ownership are the run store's (runStore.ts).
 */
export class RedisEngine implements EventEngine {
  readonly #connection: RedisConnection;
  readonly #maxLen: number;
  readonly #retentionMs: number;
  /** What the user's keys are written with (keys.ts). */
  readonly #keyTtlMs: number;
  readonly #now: () => number;
  readonly #channels = new Map<string, Channel>();
  /** Appends waiting to be sent (see #flush). */
  #queued: QueuedAppend[] = [];
  /** When the oldest of them was queued (performance.now()). */
  #queuedAt = 0;
  /** A flush at the end of this tick is due, as the queue waited MAX_QUEUE_WAIT_MS. */
  #flushDue = false;
  /** Append calls sent and not yet answered (or failed). */
  #unanswered = 0;

  constructor(connection: RedisConnection, options: RedisEngineOptions = {}) {
    this.#connection = connection;
    this.#maxLen = options.retentionEvents ?? DEFAULTS.retentionEvents;
    this.#retentionMs = options.retentionMs ?? DEFAULTS.retentionMs;
    this.#keyTtlMs = keyTtlMs(this.#retentionMs);
    this.#now = options.now ?? Date.now;
    connection.onPubSubGap(() => {
      for (const channel of this.#channels.values()) {
        for (const onGap of channel.gapListeners) onGap();
      }
    });
  }

  /** False while Redis does not answer (see RedisConnection.available): the gateway is then not ready. */
  get available(): boolean {
    return this.#connection.available;
  }

  ready(): Promise<void> {
    return this.#connection.ready();
  }

  get retentionMs(): number {
    return this.#retentionMs;
  }

  get retentionEvents(): number {
    return this.#maxLen;
  }

  append(userId: string, events: readonly EventBody[], fence?: AppendFence): Promise<LogEntry[]> {
    // Everything in the executor: what throws (a run id not of the gateway's format) rejects.
    return new Promise((resolve, reject) => {
      const keys = this.#connection.keys.user(userId);
      const parts = events.map((body) => splitAtSeq(body));
      const args: (string | number)[] = [randomUUID(), keys.live, fence ? '1' : '0', fence?.terminal ? '1' : '0', events.length, fence?.appendId ?? ''];
      let size = 0;
      for (const [index, part] of parts.entries()) {
        args.push(part.head, part.tail, events[index]!.type);
        size += part.head.length + part.tail.length;
      }
      const queued: QueuedAppend = {
        bucket: keys.leases,
        keys: [keys.meta, keys.log, fence ? keys.run(fence.runId) : keys.meta, keys.threadMarks],
        args,
        events: events.length,
        size,
        settle: (reply, now) => {
          if (reply instanceof Error) return reject(reply);
          if (!isAppendReply(reply))
            return reject(new Error(`Redis answered the append with ${JSON.stringify(reply)?.slice(0, 100)}, not [epoch, seq, skipped]`));
          try {
            resolve(this.#applied(keys.live, events, parts, reply, now, fence));
          } catch (error) {
            reject(error);
          }
        },
      };
      if (this.#queued.push(queued) === 1) {
        this.#queuedAt = performance.now();
        if (this.#unanswered === 0) atEndOfTick(this.#flush);
        else setImmediate(this.#flush);
      } else if (!this.#flushDue && performance.now() - this.#queuedAt >= MAX_QUEUE_WAIT_MS) {
        this.#flushDue = true;
        atEndOfTick(this.#flush);
      }
    });
  }

  /**
   * Sends the queued appends, as few scripts as their slots and the script's bounds allow: a
   * script call costs Redis and this node about as much as a few events, likely most of it in
   * waking the other process (docs/BENCHMARKS.md).
   *
   * When the queue was empty and no append call was unanswered, this runs at the end of the
   * tick: an idle gateway's append does not wait. While a call is unanswered it runs at the end
   * of the loop's turn (`setImmediate`) instead, so that the appends of every run whose fragment
   * came in this turn share one call: a streaming gateway's runs each flush in a tick of their
   * own (a timer or a socket read each), and one call per run would wake Redis, and then this
   * node twice, per delta. Sharing saved about a fifth of redis-server's CPU per fragment at half
   * load (docs/BENCHMARKS.md). The wait is the rest of the turn, never a timer's.
   *
   * But not more than MAX_QUEUE_WAIT_MS past the oldest append: an append queued later sends the
   * queue at the end of its own tick. On a loaded gateway one turn's timers alone run for
   * several ms; a part sent while they run is answered meanwhile, and its reply read in this
   * turn's poll phase rather than the next turn's (at one paced load the made→received p99 was
   * lower in each of three alternations with the previous code, docs/BENCHMARKS.md).
   */
  readonly #flush = (): void => {
    this.#flushDue = false;
    // Sent already by another flush of this turn (one that came due early, or an earlier immediate).
    if (this.#queued.length === 0) return;
    // Swapped, not cleared: a container that outlives a tick would be in the old generation,
    // and everything it ever pointed to would survive the young generation's collections.
    const queued = this.#queued;
    this.#queued = [];
    this.#connection.coalesceWrites();
    for (const appends of this.#connection.cluster ? byBucket(queued) : [queued]) {
      let from = 0;
      while (from < appends.length) {
        let to = from + 1;
        let { events, size } = appends[from]!;
        while (to < appends.length && to - from < MAX_APPENDS_PER_SCRIPT) {
          const next = appends[to]!;
          if (events + next.events > MAX_EVENTS_PER_SCRIPT || size + next.size > MAX_SIZE_PER_SCRIPT) break;
          events += next.events;
          size += next.size;
          to++;
        }
        this.#send(appends.slice(from, to));
        from = to;
      }
    }
  };

  /** One script call of `appends`; each settles once, from its element of the reply or with the call's error. */
  #send(appends: readonly QueuedAppend[]): void {
    // Only the settle functions wait for the reply: the arguments live on in the command alone.
    const settles = appends.map((append) => append.settle);
    let now = 0;
    let call: Promise<unknown>;
    try {
      now = this.#now();
      const keys: string[] = [];
      const args: (string | number)[] = [this.#keyTtlMs, this.#maxLen, this.#connection.publishCommand, now, this.#retentionMs];
      for (const append of appends) {
        keys.push(...append.keys);
        for (const arg of append.args) args.push(arg);
      }
      call = this.#connection.script('append', keys, args);
    } catch (error) {
      // Thrown, not rejected: it must still fail only these appends, not the tick's other calls.
      call = Promise.reject(error);
    }
    this.#unanswered++;
    call.then(
      (replies) => {
        this.#unanswered--;
        const answered = Array.isArray(replies) ? replies : [];
        for (const [index, settle] of settles.entries()) {
          settle(
            index < answered.length ? answered[index] : new Error(`Redis answered ${appends.length} appends with ${JSON.stringify(replies)?.slice(0, 100)}`),
            now,
          );
        }
      },
      (error: Error) => {
        this.#unanswered--;
        for (const settle of settles) settle(error, now);
      },
    );
  }

  /** The entries of an applied append (handed to this node's subscribers at once), or RunEndedError. */
  #applied(channelName: string, events: readonly EventBody[], parts: readonly SplitEvent[], reply: AppendReply, now: number, fence?: AppendFence): LogEntry[] {
    const [epoch, first, skip] = reply;
    if (first === -1) throw new RunEndedError(fence!.runId);
    const entries = parts.slice(skip).map((part, index): LogEntry => {
      const seq = first + index;
      return { seq, type: events[skip + index]!.type, json: part.head + seq + part.tail, appendedAt: now, epoch };
    });
    const channel = this.#channels.get(channelName);
    if (channel) deliver(channel, channel.order.fromReply(entries));
    return entries;
  }

  async subscribe(userId: string, listener: LiveListener, onPossibleGap?: GapListener): Promise<Subscription> {
    const name = this.#connection.keys.user(userId).live;
    let channel = this.#channels.get(name);
    if (!channel) {
      channel = { listeners: new Set(), gapListeners: new Set(), order: new LiveOrder(), subscribed: Promise.resolve() };
      this.#channels.set(name, channel);
      const created = channel;
      channel.subscribed = this.#connection.subscribe(name, (message) => this.#onMessage(created, message));
    }
    channel.listeners.add(listener);
    if (onPossibleGap) channel.gapListeners.add(onPossibleGap);
    const current = channel;
    const leave = async () => {
      current.listeners.delete(listener);
      if (onPossibleGap) current.gapListeners.delete(onPossibleGap);
      if (current.listeners.size > 0 || this.#channels.get(name) !== current) return;
      this.#channels.delete(name);
      await this.#connection.unsubscribe(name);
    };
    try {
      await current.subscribed;
    } catch (error) {
      await leave();
      throw error;
    }
    return { unsubscribe: leave };
  }

  async read(userId: string, fromSeq: number, toSeq: number): Promise<LogEntry[]> {
    if (toSeq < fromSeq) return [];
    const rows = await this.#connection.client.xrange(this.#connection.keys.user(userId).log, `${fromSeq}-0`, `${toSeq}-0`);
    return rows.map(([id, fields]) => {
      const entry: { seq: number; type: EventType; json: string; appendedAt: number } = {
        seq: Number.parseInt(id, 10),
        type: 'agent_started',
        json: '',
        appendedAt: 0,
      };
      for (let i = 0; i < fields.length; i += 2) {
        const value = fields[i + 1]!;
        if (fields[i] === LOG_FIELD.json) entry.json = value;
        else if (fields[i] === LOG_FIELD.type) entry.type = value as EventType;
        else if (fields[i] === LOG_FIELD.appendedAt) entry.appendedAt = Number(value);
      }
      return entry;
    });
  }

  async head(userId: string): Promise<LogHead> {
    const keys = this.#connection.keys.user(userId);
    const [epoch, seq] = (await this.#connection.script('head', [keys.meta, keys.log], [randomUUID(), this.#keyTtlMs])) as [string, string];
    return { epoch, lastSeq: Number(seq) };
  }

  /** Ends this engine's subscriptions; the connection is closed by its owner (see createRedisBackend). */
  async close(): Promise<void> {
    const names = [...this.#channels.keys()];
    this.#channels.clear();
    await Promise.all(names.map((name) => this.#connection.unsubscribe(name)));
  }

  #onMessage(channel: Channel, message: string): void {
    // The echo of this node's append, delivered from its reply: only its header and last seq are read.
    const span = notificationSpan(message);
    if (span !== null && channel.order.handedOver(span.epoch, span.lastSeq)) return;
    const entries = parseNotification(message);
    if (!entries) {
      // Not ours to read (e.g. another version's format): what it announced is in the log.
      for (const onGap of channel.gapListeners) onGap();
      return;
    }
    deliver(channel, channel.order.fromNotification(entries));
  }
}

/** The appends of each bucket of users, in order: on a Cluster a script's keys must share a slot. */
function byBucket(appends: readonly QueuedAppend[]): QueuedAppend[][] {
  const buckets = new Map<string, QueuedAppend[]>();
  for (const append of appends) {
    const same = buckets.get(append.bucket);
    if (same) same.push(append);
    else buckets.set(append.bucket, [append]);
  }
  return [...buckets.values()];
}

function isAppendReply(reply: unknown): reply is AppendReply {
  return Array.isArray(reply) && reply.length === 3 && typeof reply[0] === 'string' && Number.isInteger(reply[1]) && Number.isInteger(reply[2]);
}

function deliver(channel: Channel, entries: readonly LogEntry[]): void {
  for (const entry of entries) {
    for (const listener of channel.listeners) listener(entry);
  }
}

/** An event's JSON around its seq: head .. seq .. tail. */
interface SplitEvent {
  readonly head: string;
  readonly tail: string;
}

/** Encodes the event with a placeholder seq and splits around it, so Lua can write the real one. */
function splitAtSeq(body: EventBody): SplitEvent {
  const json = encodeEvent(body, 0);
  const marker = `"seq":0`;
  const at = json.indexOf(marker) + marker.length - 1;
  return { head: json.slice(0, at), tail: json.slice(at + 1) };
}

/**
 * The epoch and last seq of a notification (see parseNotification), read without parsing its
 * entries; null when they cannot be read so.
 */
export function notificationSpan(message: string): { epoch: string; lastSeq: number } | null {
  const space = message.indexOf(' ');
  const lastLine = message.lastIndexOf('\n') + 1;
  const seqEnd = message.indexOf(' ', lastLine);
  if (space <= 0 || lastLine === 0 || seqEnd <= lastLine || space > lastLine) return null;
  const lastSeq = Number(message.slice(lastLine, seqEnd));
  return Number.isInteger(lastSeq) ? { epoch: message.slice(0, space), lastSeq } : null;
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
