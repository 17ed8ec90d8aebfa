import type { Progress } from './types.js';

/** Progress with nothing done yet: `planned` connections in `phase`. */
export function zeroProgress(planned: number, phase: string): Progress {
  return { planned, connected: 0, ready: 0, closed: 0, failed: 0, messagesSent: 0, runsAcked: 0, runsDone: 0, violations: 0, phase };
}

export function sumProgress(parts: readonly Progress[]): Progress {
  const total = zeroProgress(0, '');
  const phases = new Set<string>();
  for (const p of parts) {
    total.planned += p.planned;
    total.connected += p.connected;
    total.ready += p.ready;
    total.closed += p.closed;
    total.failed += p.failed;
    total.messagesSent += p.messagesSent;
    total.runsAcked += p.runsAcked;
    total.runsDone += p.runsDone;
    total.violations += p.violations;
    phases.add(p.phase);
  }
  total.phase = [...phases].join('/');
  return total;
}

export function progressLine(p: Progress, elapsedMs: number): string {
  return (
    `storm ${(elapsedMs / 1000).toFixed(1)}s [${p.phase}] connected ${p.connected}/${p.planned} ready ${p.ready} ` +
    `closed ${p.closed}${p.failed ? ` failed ${p.failed}` : ''} runs ${p.runsDone}/${p.runsAcked} violations ${p.violations}`
  );
}

/**
 * The live progress line on stderr: rewritten in place (\r) on a terminal, a plain line every
 * `plainEveryMs` otherwise (and on every phase change); done() writes the final line.
 */
export class ProgressPrinter {
  #lastPlain = 0;
  #lastPhase = '';
  #lastLength = 0;

  readonly #stream: NodeJS.WritableStream & { isTTY?: boolean };
  readonly #plainEveryMs: number;

  constructor(stream: NodeJS.WritableStream & { isTTY?: boolean }, plainEveryMs = 2000) {
    this.#stream = stream;
    this.#plainEveryMs = plainEveryMs;
  }

  update(p: Progress, elapsedMs: number): void {
    const line = progressLine(p, elapsedMs);
    if (this.#stream.isTTY) {
      this.#stream.write(`\r${line}${' '.repeat(Math.max(0, this.#lastLength - line.length))}`);
      this.#lastLength = line.length;
    } else if (p.phase !== 'done' && (elapsedMs - this.#lastPlain >= this.#plainEveryMs || p.phase !== this.#lastPhase)) {
      this.#lastPlain = elapsedMs;
      this.#stream.write(`${line}\n`);
    }
    this.#lastPhase = p.phase;
  }

  done(p: Progress, elapsedMs: number): void {
    const line = progressLine(p, elapsedMs);
    this.#stream.write(this.#stream.isTTY ? `\r${line}${' '.repeat(Math.max(0, this.#lastLength - line.length))}\n` : `${line}\n`);
  }
}
