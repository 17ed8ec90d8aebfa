/**
 * @agentwire/protocol: the wire contract of agentwire.v1 that the gateway and its clients share
 * (docs/PROTOCOL.md): durable events, server frames, close codes, and the injectable `Clock`
 * both ends schedule their timers on. Types and constants only; no I/O.
 */
export * from './closeCodes.js';
export * from './events.js';
export * from './serverFrames.js';
export * from './clock.js';
