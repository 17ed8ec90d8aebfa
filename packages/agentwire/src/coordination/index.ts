export * from './userCoordinator.js';
export * from './coordinatorRegistry.js';
export type * from './presence.js';
