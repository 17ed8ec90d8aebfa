/**
 * agentwire's library API (`import ... from 'agentwire'`): embed the gateway in a Node service
 * and bring your own agent, event engine, run store, presence and token verifier. Everything
 * here is public and documented; anything else under dist/ is internal and may change. See
 * README.md ("Embedding") for an example.
 */

// The gateway.
export { Gateway, createGateway, type GatewayOptions, type ListenResult } from './transport/gateway.js';
export type { FrameBatching } from './cork.js';
export type { TestTokenIssuer } from './http/routes.js';
export { createChatPageHandler, type ChatPageHandler, type ChatPageOptions } from './web/index.js';

// Agents: what answers a message.
export type { Agent, AgentRunInput, AgentStep } from './runs/agent.js';
export { createDemoAgent } from './runs/demoAgent.js';
export { createHttpAgent, type AgentProtocol, type HttpAgentOptions } from './upstream/httpAgent.js';

// The per-user event log, for an engine of your own.
export { RunEndedError } from './engine/types.js';
export type { AppendFence, EventEngine, GapListener, LiveListener, LogHead, Subscription } from './engine/types.js';
export { MemoryEngine, type MemoryEngineOptions } from './engine/memoryEngine.js';

// Thread history (PROTOCOL.md section 14), for a history store of your own.
export { InvalidCursorError } from './history/types.js';
export type {
  ArchiveProgress,
  AssistantMessageView,
  ConversationTurn,
  HistoryStore,
  MessagesPage,
  MessageView,
  Page,
  PageRequest,
  RunStatus,
  ThreadSummary,
  ToolCallView,
  UserMessageView,
} from './history/types.js';
export { LogHistoryStore, createLogHistoryStore, type LogHistoryStoreOptions } from './history/logHistoryStore.js';
export { MemoryThreadMarks, type MemoryThreadMarksOptions, type ThreadMark, type ThreadMarkStore } from './history/threadMarks.js';

// Thread queues and run ownership, for a run store of your own.
export type { RunOutcome } from './runs/runManager.js';
export type {
  CancelLookup,
  EnqueueOptions,
  EnqueueOutcome,
  LostRun,
  MessageClaim,
  RunAssignment,
  RunRecord,
  RunStore,
  UnfinishedRun,
  ThreadPolicy,
} from './runs/runStore.js';
export { LocalRunStore, type LocalRunStoreOptions } from './runs/runStore.js';

// The per-user connection cap across nodes.
export type { ConnectionPresence, ConnectionRef } from './coordination/presence.js';

// The Redis backend (one Redis or a Redis Cluster): engine, run store and presence on one connection.
export { createRedisBackend, type RedisBackend, type RedisBackendOptions } from './redis/index.js';
export {
  RedisConnection,
  RedisEngine,
  RedisPresence,
  RedisRunStore,
  type ClusterNode,
  type RedisConnectionOptions,
  type RedisEngineOptions,
  type RedisPresenceOptions,
  type RedisRunStoreOptions,
} from './redis/index.js';

// Tokens.
export { createTokenVerifier } from './auth/verifier.js';
export { signToken, type SignClaims } from './auth/sign.js';
export type { AuthFailureReason, TokenVerifier, VerifierOptions, VerifyResult } from './auth/types.js';
export type { JwksPolicy } from './auth/types.js';

// The wire: events and close codes.
export { CloseCode } from '@agentwire/protocol';
export type { AgentErrorCode, DurableEvent, EventBody, EventType, LogEntry } from '@agentwire/protocol';

// Logs, metrics and time.
export { createLogger, type Logger } from './observability/logger.js';
export { GatewayMetrics } from './observability/metrics.js';
export { systemClock, type Clock, type TimerHandle } from '@agentwire/protocol';

// Thread history in PostgreSQL (AGENTWIRE_DATABASE_URL).
export { PostgresHistoryStore, createPostgresHistoryStore, type ArchiveStats, type PostgresHistoryStoreOptions } from './postgres/index.js';
