import { StormWorker } from './worker.js';
import type { BarrierName, ParentMessage, WorkerMessage } from './types.js';

/**
 * Body of a forked storm worker process: waits for its plan from the parent over IPC, runs it,
 * reports progress every 250 ms and its result once, then disconnects so the process can exit.
 */
export function serveWorkerProcess(): void {
  if (!process.send) throw new Error('storm worker: must be started with an IPC channel (child_process.fork)');
  const send = (message: WorkerMessage) =>
    new Promise<void>((resolve) => {
      process.send!(message, undefined, undefined, () => resolve());
    });
  let finished = false;
  let started = false;
  const proceeds = new Map<BarrierName, () => void>();
  const passed = new Set<BarrierName>();
  const barrier = (name: BarrierName) =>
    new Promise<void>((resolve) => {
      if (passed.has(name)) return resolve();
      proceeds.set(name, resolve);
      void send({ type: 'barrier', name });
    });
  process.on('message', (message: ParentMessage) => {
    if (message?.type === 'proceed') {
      passed.add(message.name);
      proceeds.get(message.name)?.();
      return;
    }
    if (message?.type !== 'start' || started) return;
    started = true;
    const worker = new StormWorker(message.plan, barrier);
    const timer = setInterval(() => void send({ type: 'progress', progress: worker.progress() }), 250);
    worker.run().then(
      async (result) => {
        clearInterval(timer);
        await send({ type: 'result', result });
        finished = true;
        process.disconnect();
      },
      (error: unknown) => {
        clearInterval(timer);
        process.stderr.write(`storm worker ${message.plan.index}: ${(error as Error).stack ?? String(error)}\n`);
        finished = true;
        process.exitCode = 3;
        process.disconnect();
      },
    );
  });
  // The parent went away before the result: nothing left to report to, so stop (closes sockets).
  process.once('disconnect', () => {
    if (!finished) process.exit(1);
  });
}
