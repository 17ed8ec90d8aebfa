import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LogEntry } from '@agentwire/protocol';
import { LiveOrder } from '../../src/redis/liveOrder.js';
import { fcParams } from '../helpers/fastCheck.js';

function entry(seq: number, epoch = 'e1'): LogEntry {
  return { seq, epoch, type: 'agent_thinking', json: `{"type":"agent_thinking","seq":${seq}}`, appendedAt: 0 };
}

function range(first: number, last: number, epoch = 'e1'): LogEntry[] {
  return Array.from({ length: last - first + 1 }, (_, i) => entry(first + i, epoch));
}

/** One append to the user's log as Redis ran it: by this node (it gets the reply) or another. */
interface Append {
  readonly local: boolean;
  readonly size: number;
  /** Its notification never reached this node (pub/sub lost it: a dropped subscriber link). */
  readonly notificationLost: boolean;
  /** This node's reply: lost (a deadline), or seen twice (a retry of the same append id answers it again). */
  readonly reply: 'once' | 'lost' | 'twice';
}

type Arrival = { readonly kind: 'reply' | 'notification'; readonly append: number };

/**
 * Everything this node receives, in one order it can receive it in: notifications in publish
 * (= seq) order on the pub/sub connection, replies in command order on the command connection,
 * the two merged any way (they are separate sockets); a retried append's second reply comes
 * after its first.
 */
const scenario = fc
  .record({
    appends: fc.array(
      fc.record<Append>({
        local: fc.boolean(),
        size: fc.integer({ min: 1, max: 3 }),
        notificationLost: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
        reply: fc.constantFrom<Append['reply']>('once', 'once', 'once', 'lost', 'twice'),
      }),
      { minLength: 1, maxLength: 30 },
    ),
    picks: fc.array(fc.boolean(), { maxLength: 120 }),
  })
  .map(({ appends, picks }) => {
    const notifications: Arrival[] = [];
    const replies: Arrival[] = [];
    appends.forEach((append, index) => {
      if (!append.notificationLost) notifications.push({ kind: 'notification', append: index });
      if (!append.local || append.reply === 'lost') return;
      replies.push({ kind: 'reply', append: index });
      if (append.reply === 'twice') replies.push({ kind: 'reply', append: index });
    });
    const arrivals: Arrival[] = [];
    let n = 0;
    let r = 0;
    for (let i = 0; n < notifications.length || r < replies.length; i++) {
      const takeReply = r < replies.length && (n >= notifications.length || (picks[i % Math.max(1, picks.length)] ?? false));
      arrivals.push(takeReply ? replies[r++]! : notifications[n++]!);
    }
    return { appends, arrivals };
  });

describe('LiveOrder (a node delivering its own appends from their replies)', () => {
  it('hands every entry over at most once, in seq order, all of those notified, and a reply at once when it follows on; a notification it calls handed over holds nothing new (property)', () => {
    fc.assert(
      fc.property(scenario, ({ appends, arrivals }) => {
        const batches: LogEntry[][] = [];
        let seq = 0;
        for (const append of appends) {
          batches.push(range(seq + 1, seq + append.size));
          seq += append.size;
        }
        const order = new LiveOrder();
        const delivered: LogEntry[] = [];
        let notified = false;
        const repliedOnce = new Set<number>();
        for (const arrival of arrivals) {
          const batch = batches[arrival.append]!;
          if (arrival.kind === 'notification') {
            // What the engine skips unparsed must be what fromNotification would drop.
            const skippable = order.handedOver(batch[0]!.epoch!, batch.at(-1)!.seq);
            const fresh = order.fromNotification(batch);
            if (skippable) expect(fresh).toEqual([]);
            delivered.push(...fresh);
            notified = true;
            continue;
          }
          const firstReply = !repliedOnce.has(arrival.append);
          repliedOnce.add(arrival.append);
          const followsOn = (delivered.at(-1)?.seq ?? 0) === batch[0]!.seq - 1;
          delivered.push(...order.fromReply(batch));
          // The fast path: a first reply right after what was handed over goes out at once.
          if (firstReply && notified && followsOn) expect(delivered.at(-1)).toBe(batch.at(-1));
        }
        const seqs = delivered.map((e) => e.seq);
        for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]!);
        for (const e of delivered) expect(e).toEqual(batches.flat()[e.seq - 1]);
        // Whatever was notified was handed over (the rest is a gap the subscriber repairs from the log).
        const handed = new Set(seqs);
        arrivals
          .filter((a) => a.kind === 'notification')
          .forEach((a) => {
            for (const e of batches[a.append]!) expect(handed.has(e.seq)).toBe(true);
          });
        if (appends.every((a) => !a.notificationLost)) expect(seqs).toEqual(Array.from({ length: seq }, (_, i) => i + 1));
      }),
      fcParams(500, 20_000),
    );
  });

  it('waits for the first notification before trusting a reply, and holds back one that skips a notified seq', () => {
    const order = new LiveOrder();
    expect(order.fromReply(range(1, 2))).toEqual([]);
    expect(order.fromNotification(range(1, 2))).toEqual(range(1, 2));
    // Another node's append 3 is still on its way: 4 waits for its own notification.
    expect(order.fromReply(range(4, 4))).toEqual([]);
    expect(order.fromNotification(range(3, 3))).toEqual(range(3, 3));
    expect(order.fromNotification(range(4, 4))).toEqual(range(4, 4));
    expect(order.fromReply(range(5, 6))).toEqual(range(5, 6));
    expect(order.fromNotification(range(5, 6))).toEqual([]);
  });

  it('passes a notification of another epoch through (the log was lost) and then follows that epoch', () => {
    const order = new LiveOrder();
    order.fromNotification(range(1, 5));
    // A reply in a new epoch (its notification not seen yet) is left to the notification.
    expect(order.fromReply(range(1, 1, 'e2'))).toEqual([]);
    expect(order.fromNotification(range(1, 1, 'e2'))).toEqual(range(1, 1, 'e2'));
    expect(order.fromReply(range(2, 2, 'e2'))).toEqual(range(2, 2, 'e2'));
    // A late notification of the old epoch still reaches the subscriber (which recognises it).
    expect(order.fromNotification(range(6, 6))).toEqual(range(6, 6));
  });
});
