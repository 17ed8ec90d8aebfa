/**
 * The connection lifecycle of PROTOCOL.md section 4 as a pure, synchronous state machine.
 * The transition table below is the whole definition; nothing else decides what may follow what.
 */
export const ConnectionState = {
  CONNECTING: 'CONNECTING',
  ACCEPTED: 'ACCEPTED',
  AUTHENTICATED: 'AUTHENTICATED',
  SERVICES_READY: 'SERVICES_READY',
  PROCESSING_READY: 'PROCESSING_READY',
  CLOSING: 'CLOSING',
  CLOSED: 'CLOSED',
} as const;

export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

export const ALL_STATES: readonly ConnectionState[] = Object.values(ConnectionState);

const { CONNECTING, ACCEPTED, AUTHENTICATED, SERVICES_READY, PROCESSING_READY, CLOSING, CLOSED } = ConnectionState;

/** Allowed successors. CLOSED is reachable from CONNECTING only for a refused upgrade. */
export const TRANSITIONS: Readonly<Record<ConnectionState, ReadonlySet<ConnectionState>>> = {
  CONNECTING: new Set([ACCEPTED, CLOSING, CLOSED]),
  ACCEPTED: new Set([AUTHENTICATED, CLOSING]),
  AUTHENTICATED: new Set([SERVICES_READY, CLOSING]),
  SERVICES_READY: new Set([PROCESSING_READY, CLOSING]),
  PROCESSING_READY: new Set([CLOSING]),
  CLOSING: new Set([CLOSED]),
  CLOSED: new Set(),
};

export function isValidTransition(from: ConnectionState, to: ConnectionState): boolean {
  return TRANSITIONS[from].has(to);
}

export class StateTransitionError extends Error {
  override readonly name = 'StateTransitionError';
  constructor(
    readonly connectionId: string,
    readonly from: ConnectionState,
    readonly to: ConnectionState,
  ) {
    super(`invalid transition ${from} -> ${to} (connection ${connectionId})`);
  }
}

export interface LifecycleObserver {
  /** `from` is null when the connection is created (in CONNECTING). */
  transitioned(from: ConnectionState | null, to: ConnectionState): void;
  rejected(from: ConnectionState, to: ConnectionState): void;
}

/** The only holder of one connection's state. */
export class ConnectionLifecycle {
  #state: ConnectionState = CONNECTING;

  readonly #observer: LifecycleObserver | undefined;

  constructor(
    readonly connectionId: string,
    observer?: LifecycleObserver,
  ) {
    this.#observer = observer;
    observer?.transitioned(null, CONNECTING);
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** True from CLOSING on: the connection will never process another frame. */
  get isEnding(): boolean {
    return this.#state === CLOSING || this.#state === CLOSED;
  }

  transition(to: ConnectionState): void {
    const from = this.#state;
    if (!isValidTransition(from, to)) {
      this.#observer?.rejected(from, to);
      throw new StateTransitionError(this.connectionId, from, to);
    }
    this.#state = to;
    this.#observer?.transitioned(from, to);
  }

  /** Moves to CLOSING unless already ending; returns whether it did. */
  beginClosing(): boolean {
    if (this.isEnding) return false;
    this.transition(CLOSING);
    return true;
  }
}
