export * from '@agentwire/protocol';
export * from './clientFrames.js';
