export type * from './types.js';
export { RunEndedError } from './types.js';
export { MemoryEngine, type MemoryEngineOptions } from './memoryEngine.js';
