/**
 * Work deferred to the end of the current tick, on one `process.nextTick` for all of it.
 *
 * A tick's deferred jobs (the run manager's appends, then the socket uncorks of the frames those
 * appends fanned out) share one scheduled callback: a `process.nextTick` costs about 0.3 µs,
 * paid per delta event when every fragment of a streaming run comes in a tick of its own. A job
 * added while the queue runs (an uncork scheduled by an append) runs in the same pass, after the
 * jobs before it.
 */
let queue: Array<() => void> = [];

/** Runs `job` once at the end of this tick, after the jobs queued before it. */
export function atEndOfTick(job: () => void): void {
  if (queue.push(job) === 1) process.nextTick(runQueue);
}

/**
 * Runs every job queued, those added meanwhile included. A job that throws does not cost the
 * others theirs: all run, then the first error is thrown, as it would have been from a
 * `process.nextTick` of its own.
 */
function runQueue(): void {
  let failed = false;
  let failure: unknown;
  // The queue stays in place while it runs, so that a job queued meanwhile lands in it.
  for (let i = 0; i < queue.length; i++) {
    try {
      queue[i]!();
    } catch (error) {
      if (!failed) failure = error;
      failed = true;
    }
  }
  queue = [];
  if (failed) throw failure;
}
