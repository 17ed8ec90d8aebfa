import type { LogEntry } from '@agentwire/protocol';

/**
 * Where one channel's live delivery on this node stands: the epoch and seq of the last entry
 * handed to its listeners. A node learns of its own appends twice, from the append's reply and
 * from the notification every append publishes (its echo), and of other nodes' appends from
 * their notifications only. Handing over a reply's entries at once saves waiting for the echo;
 * this keeps the listeners' view what pub/sub alone would give: each entry once, in seq order.
 *
 * A reply's entries are handed over only when they follow the position directly. Otherwise
 * another node's notification is still on its way (it was published before this append ran, so
 * it comes before the echo on the pub/sub connection), or the position is not known yet
 * (nothing was notified since the subscription): then the echo hands them over, in order.
 * Notifications are handed over as before, minus the entries already handed over; one that
 * skips seqs (pub/sub lost some) or names another epoch still goes through, so the listeners
 * see the gap or the log's loss as they did.
 */
export class LiveOrder {
  #epoch: string | undefined;
  #seq = 0;

  /** The entries of this node's append (consecutive seqs) to hand over now. */
  fromReply(entries: readonly LogEntry[]): readonly LogEntry[] {
    const first = entries[0];
    if (first === undefined || this.#epoch === undefined || first.epoch !== this.#epoch) return [];
    const start = this.#seq + 1 - first.seq;
    if (start < 0 || start >= entries.length) return [];
    this.#seq = entries[entries.length - 1]!.seq;
    return start === 0 ? entries : entries.slice(start);
  }

  /**
   * True if a notification of `epoch` whose last seq is `lastSeq` holds nothing not handed over
   * yet (fromNotification would return none): the echo of this node's own append, mostly, which
   * then need not be parsed.
   */
  handedOver(epoch: string, lastSeq: number): boolean {
    return epoch === this.#epoch && lastSeq <= this.#seq;
  }

  /** The entries of a notification (consecutive seqs, one epoch) not handed over yet. */
  fromNotification(entries: readonly LogEntry[]): readonly LogEntry[] {
    const first = entries[0];
    if (first === undefined) return entries;
    const last = entries[entries.length - 1]!.seq;
    if (first.epoch !== this.#epoch) {
      this.#epoch = first.epoch;
      this.#seq = last;
      return entries;
    }
    const start = Math.max(0, this.#seq + 1 - first.seq);
    if (start >= entries.length) return [];
    this.#seq = last;
    return start === 0 ? entries : entries.slice(start);
  }
}
