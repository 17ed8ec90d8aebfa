export { Gateway, createGateway, type GatewayOptions, type ListenResult } from './gateway.js';
export type { Connection } from './connection.js';
