import fc, { type Parameters, type Plugin } from 'fast-check';

/**
 * fc.assert parameters; AGENTWIRE_FC_SEED / AGENTWIRE_FC_PATH replay a reported failure. The time
 * limit ends shrinking early enough for fast-check to print the seed and the counterexample
 * before the test times out; reaching it before `numRuns` passed is a failure too.
 */
export function fcParams<T>(numRuns: number, timeLimitMs: number): Parameters<T> {
  const seed = process.env.AGENTWIRE_FC_SEED;
  const path = process.env.AGENTWIRE_FC_PATH;
  return {
    numRuns,
    verbose: 1,
    plugins: [fc.interruptAfterTimeLimit(timeLimitMs, { failOnInterrupt: true }) as Plugin<T>],
    ...(seed ? { seed: Number(seed) } : {}),
    ...(path ? { path } : {}),
  };
}
