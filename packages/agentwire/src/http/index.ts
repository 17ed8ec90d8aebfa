export * from './routes.js';
export * from './historyRoutes.js';
