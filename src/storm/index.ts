/** The storm probe (`agentwire storm`): see docs/STORM.md. */
export { GUARANTEES, GUARANTEE_IDS, type GuaranteeId, type Violation } from './guarantees.js';
export { StormChecker, ConnectionChecker, canonical, type CheckerOptions } from './checker.js';
export { runStorm, type RunHooks, type StormOutcome } from './runner.js';
export { buildReport, reportMarkdown, writeReport, REPORT_FILES, type StormReport, type GuaranteeResult } from './report.js';
export { histogramSvg, lineChartSvg, barChartSvg, escapeXml } from './svg.js';
export { planWorkers, parseSourceAddresses, defaultWorkers, defaultSourceAddresses } from './plan.js';
export { LogHistogram, percentile, summarize } from './stats.js';
export type { StormOptions, WorkerPlan, WorkerResult, Progress } from './types.js';
