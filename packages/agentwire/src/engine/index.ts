export type * from './types.js';
export { RunEndedError } from './types.js';
export { RedisEngine, type RedisEngineOptions } from './redisEngine.js';
export { MemoryEngine, type MemoryEngineOptions } from './memoryEngine.js';
