export type * from './agent.js';
export * from './runManager.js';
export { createDemoAgent } from './demoAgent.js';
