export * from './closeCodes.js';
export * from './clientFrames.js';
export * from './events.js';
export * from './serverFrames.js';
