/**
 * Small statistics for the storm probe: exact percentiles of a sample list, and a mergeable
 * log-bucket histogram (about 2 % relative resolution) for values too many to ship between
 * processes one by one (event latencies).
 */

/** Nearest-rank percentile (p in 0..100) of `values`; null for an empty list. Sorts a copy. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return percentileOfSorted(sorted, p);
}

export function percentileOfSorted(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface Summary {
  count: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  min: number | null;
  mean: number | null;
}

export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) return { count: 0, p50: null, p90: null, p99: null, max: null, min: null, mean: null };
  const sorted = [...values].sort((a, b) => a - b);
  let sum = 0;
  for (const value of sorted) sum += value;
  return {
    count: sorted.length,
    p50: round(percentileOfSorted(sorted, 50)!),
    p90: round(percentileOfSorted(sorted, 90)!),
    p99: round(percentileOfSorted(sorted, 99)!),
    max: round(sorted.at(-1)!),
    min: round(sorted[0]!),
    mean: round(sum / sorted.length),
  };
}

export interface HistogramData {
  /** [bucket index, count] pairs. */
  buckets: [number, number][];
  count: number;
  min: number;
  max: number;
  sum: number;
}

const BASE = 0.01; // ms: values below go to bucket 0
const GROWTH = Math.log(1.02);

/** A histogram over log-spaced buckets that merges exactly and answers percentiles within ~2 %. */
export class LogHistogram {
  readonly #counts = new Map<number, number>();
  count = 0;
  min = Infinity;
  max = -Infinity;
  sum = 0;

  record(value: number): void {
    const index = value < BASE ? 0 : 1 + Math.floor(Math.log(value / BASE) / GROWTH);
    this.#counts.set(index, (this.#counts.get(index) ?? 0) + 1);
    this.count += 1;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }

  merge(data: HistogramData): void {
    for (const [index, count] of data.buckets) this.#counts.set(index, (this.#counts.get(index) ?? 0) + count);
    this.count += data.count;
    this.sum += data.sum;
    if (data.count > 0) {
      this.min = Math.min(this.min, data.min);
      this.max = Math.max(this.max, data.max);
    }
  }

  /** The upper edge of the bucket holding the nearest-rank percentile, clamped to [min, max]. */
  percentile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (const index of [...this.#counts.keys()].sort((a, b) => a - b)) {
      seen += this.#counts.get(index)!;
      if (seen >= rank) {
        const upper = index === 0 ? BASE : BASE * Math.exp(index * GROWTH);
        return round(Math.min(this.max, Math.max(this.min, upper)));
      }
    }
    return round(this.max);
  }

  summary(): Summary {
    if (this.count === 0) return { count: 0, p50: null, p90: null, p99: null, max: null, min: null, mean: null };
    return {
      count: this.count,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      max: round(this.max),
      min: round(this.min),
      mean: round(this.sum / this.count),
    };
  }

  toJSON(): HistogramData {
    return {
      buckets: [...this.#counts.entries()],
      count: this.count,
      min: this.count ? this.min : 0,
      max: this.count ? this.max : 0,
      sum: this.sum,
    };
  }
}

export function round(value: number): number {
  return Math.round(value * 100) / 100;
}
