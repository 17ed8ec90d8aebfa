/**
 * @agentwire/storm: the load and race probe for any server speaking agentwire.v1 (run as
 * `agentwire storm`; docs/STORM.md). It checks the protocol's guarantees from the outside and
 * writes a report with charts.
 */
export { GUARANTEES } from './guarantees.js';
export { runStorm, type RunHooks, type StormOutcome } from './runner.js';
export { writeReport, type StormReport, type GuaranteeResult } from './report.js';
export { parseSourceAddresses, defaultWorkers, defaultSourceAddresses } from './plan.js';
export { ProgressPrinter } from './progress.js';
export type { StormOptions } from './types.js';
