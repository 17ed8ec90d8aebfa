export * from './connectionState.js';
