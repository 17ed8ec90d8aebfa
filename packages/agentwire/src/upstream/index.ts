export { createHttpAgent, DEFAULT_CONNECT_TIMEOUT_MS, type HttpAgentOptions } from './httpAgent.js';
export { AGENT_PROTOCOLS, type AgentProtocol } from './dialect.js';
export { headerProblems } from './headers.js';
