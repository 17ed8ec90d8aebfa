/**
 * agentwire's library API: embed the gateway in a Node service, bring your own agent, engine
 * and auth. See README.md for an example.
 */
export { Gateway, createGateway, type GatewayOptions, type ListenResult } from './transport/index.js';
export type { Agent, AgentRunInput, AgentStep } from './runs/agent.js';
export { createDemoAgent } from './runs/demoAgent.js';
export type { ThreadPolicy, RunOutcome } from './runs/runManager.js';
export { MemoryEngine, type MemoryEngineOptions } from './engine/index.js';
export type { EventEngine, LogHead, Subscription, MessageClaim, LiveListener } from './engine/index.js';
export { createTokenVerifier, signToken } from './auth/index.js';
export type { TokenVerifier, VerifierOptions, VerifyResult } from './auth/index.js';
export { StateTransitionError, ConnectionState, ConnectionLifecycle } from './lifecycle/index.js';
export { CloseCode } from './protocol/index.js';
export type { DurableEvent, EventBody, EventType, LogEntry } from './protocol/index.js';
export { GatewayMetrics, createLogger } from './observability/index.js';
export { systemClock, type Clock } from './clock.js';
export { loadConfig, ConfigError, type GatewayConfig } from './config/index.js';
export { createChatPageHandler, bundleChatPage, type ChatPageOptions, type ChatPageHandler } from './web/index.js';
