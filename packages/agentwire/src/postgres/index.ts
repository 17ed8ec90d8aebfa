// The PostgreSQL history store (PROTOCOL.md sections 10, 12, 14): AGENTWIRE_DATABASE_URL.
export { PostgresHistoryStore, createPostgresHistoryStore, type PostgresHistoryStoreOptions } from './store.js';
export type { ArchiveStats } from './stats.js';
