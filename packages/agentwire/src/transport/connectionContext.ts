import type { Clock } from '@agentwire/protocol';
import type { TokenVerifier } from '../auth/index.js';
import type { CoordinatorRegistry } from '../coordination/index.js';
import type { GatewayMetrics, Logger } from '../observability/index.js';
import type { RunManager } from '../runs/runManager.js';
import type { ByteBudget } from './byteBudget.js';
import type { Connection } from './connection.js';

export interface ConnectionLimits {
  readonly authTimeoutMs: number;
  readonly heartbeatMs: number;
  readonly inboxLimit: number;
  /** Raw bytes of the frames one connection may hold before PROCESSING_READY; more closes it with 1008. */
  readonly inboxMaxBytes: number;
  readonly rateLimitPerSec: number;
  readonly rateLimitBurst: number;
  /** Rate-limited frames in a row after which the connection is closed with 1008. */
  readonly abuseLimit: number;
  readonly slowConsumerBytes: number;
  /** Live events held for a connection during its setup; more closes it with 4008. */
  readonly maxBufferedEvents: number;
}

/** What every connection of one gateway shares. */
export interface ConnectionContext {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly verifier: TokenVerifier;
  readonly registry: CoordinatorRegistry;
  readonly runs: RunManager;
  readonly limits: ConnectionLimits;
  /** Accepted connections (ACCEPTED through CLOSING). */
  readonly connections: Set<Connection>;
  /** Connections waiting for an `auth` frame; swept for the auth deadline. */
  readonly awaitingAuth: Set<Connection>;
  /** Raw bytes held by all connections not yet PROCESSING_READY together. */
  readonly heldBytes: ByteBudget;
  connectionClosed(connection: Connection): void;
}
