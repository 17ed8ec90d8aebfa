// Kept apart from the archiver so that the public types do not reach pg's.

/** What the archive did since start (exported as `PostgresHistoryStore.stats`). */
export interface ArchiveStats {
  /** Events written by this node (not counting those already there). */
  archived: number;
  /** Events not queued because the queue was full (e.g. during an outage): caught up from the log. */
  dropped: number;
  /** Events that left the log's retention before any node archived them. */
  lost: number;
  /** Events archived by catch-up from the log (not counting those already archived). */
  caughtUp: number;
  /** Transactions that failed (their events are caught up from the log). */
  failedBatches: number;
}
