export * from './userCoordinator.js';
export * from './coordinatorRegistry.js';
