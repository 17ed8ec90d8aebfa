import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GUARANTEE_IDS } from './guarantees.js';
import { planWorkers } from './plan.js';
import { sumProgress, zeroProgress } from './progress.js';
import { buildReport, type StormReport } from './report.js';
import type { BarrierName, ParentMessage, Progress, StormOptions, WorkerMessage, WorkerPlan, WorkerResult } from './types.js';
import { StormWorker } from './worker.js';

// The compiled entry, from dist/runner.js and from src/runner.ts alike (src/ and dist/ sit side
// by side): a forked process runs plain JavaScript, nothing compiles at run time.
const WORKER_ENTRY = fileURLToPath(new URL('../dist/workerEntry.js', import.meta.url));

/** Callbacks while a storm runs. */
export interface RunHooks {
  /** Called about every 250 ms with the summed progress of all workers. */
  onProgress?: (progress: Progress, elapsedMs: number) => void;
}

/** What `runStorm` returns: the report and the raw timings the charts are drawn from. */
export interface StormOutcome {
  report: StormReport;
  /** Every connect -> connection_ready time, for the histogram. */
  readyTimes: number[];
}

/**
 * Runs a storm: one worker in this process, or several forked worker processes (one per
 * share of users), then merges their results into a report.
 */
export async function runStorm(options: StormOptions, hooks: RunHooks = {}): Promise<StormOutcome> {
  const startedAt = Date.now();
  const plans = planWorkers(options, startedAt);
  const progress = new Map<number, Progress>();
  const tick = setInterval(() => {
    const total = sumProgress([...progress.values()]);
    hooks.onProgress?.({ ...total, planned: options.connections, phase: total.phase || 'starting' }, Date.now() - startedAt);
  }, 250);
  let results: WorkerResult[];
  try {
    if (plans.length === 1) {
      const worker = new StormWorker(plans[0]!);
      const poll = setInterval(() => progress.set(0, worker.progress()), 100);
      try {
        results = [await worker.run()];
      } finally {
        clearInterval(poll);
      }
    } else {
      const barriers = new Barriers(plans.length);
      results = await Promise.all(plans.map((plan) => runForked(plan, barriers, (p) => progress.set(plan.index, p))));
    }
  } finally {
    clearInterval(tick);
  }
  const { report, readyTimes } = buildReport(options, plans, results, startedAt, Date.now());
  return { report, readyTimes };
}

/** Forks one worker process, hands it its plan, relays its progress and resolves with its result. */
function runForked(plan: WorkerPlan, barriers: Barriers, onProgress: (p: Progress) => void): Promise<WorkerResult> {
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = fork(WORKER_ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    } catch (error) {
      resolve(failedResult(plan, 0, `could not start worker: ${(error as Error).message}`));
      return;
    }
    let result: WorkerResult | null = null;
    const tell = (message: ParentMessage) => {
      if (child.connected) child.send(message);
    };
    child.on('message', (message: WorkerMessage) => {
      if (message.type === 'progress') onProgress(message.progress);
      else if (message.type === 'barrier') barriers.arrive(message.name, () => tell({ type: 'proceed', name: message.name }));
      else if (message.type === 'result') {
        result = message.result;
        onProgress(message.result.progress);
      }
    });
    child.on('error', () => {});
    // 'close' (not 'exit') comes after the IPC channel closed, so the result message is in.
    child.once('close', (code, signal) => {
      barriers.leave();
      resolve(result ?? failedResult(plan, child.pid ?? 0, `worker process exited (${signal ?? `code ${code}`}) without a result`));
    });
    tell({ type: 'start', plan });
  });
}

/**
 * Barriers over the worker processes: a barrier opens once every live worker arrived; a worker
 * that died leaves, so that the others are not held forever.
 */
class Barriers {
  readonly #waiting = new Map<BarrierName, (() => void)[]>();
  #live: number;

  constructor(live: number) {
    this.#live = live;
  }

  arrive(name: BarrierName, proceed: () => void): void {
    const list = this.#waiting.get(name) ?? [];
    list.push(proceed);
    this.#waiting.set(name, list);
    this.#check();
  }

  leave(): void {
    this.#live -= 1;
    this.#check();
  }

  #check(): void {
    for (const [name, list] of this.#waiting) {
      if (list.length >= this.#live) {
        this.#waiting.delete(name);
        for (const proceed of list) proceed();
      }
    }
  }
}

function failedResult(plan: WorkerPlan, pid: number, fatal: string): WorkerResult {
  return {
    index: plan.index,
    pid,
    progress: zeroProgress(plan.connections.length, 'failed'),
    counts: Object.fromEntries(GUARANTEE_IDS.map((id) => [id, 0])) as WorkerResult['counts'],
    examples: Object.fromEntries(GUARANTEE_IDS.map((id) => [id, []])) as unknown as WorkerResult['examples'],
    readyTimes: [],
    connectTimes: [],
    latency: { buckets: [], count: 0, min: 0, max: 0, sum: 0 },
    latencyBySecond: {},
    closesByCode: {},
    bySourceAddress: {},
    eventsReceived: 0,
    errorFrames: {},
    fatal,
  };
}
