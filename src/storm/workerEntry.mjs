// Entry of a forked storm worker process: runs the TypeScript sources via tsx (no build step),
// like bin/agentwire.mjs does for the CLI.
import { register } from 'tsx/esm/api';

register();
const { serveWorkerProcess } = await import('./workerProcess.ts');
serveWorkerProcess();
