// Entry of a forked storm worker process (runner.ts forks its build, dist/workerEntry.js).
import { serveWorkerProcess } from './workerProcess.js';

serveWorkerProcess();
