/**
 * The client's connection state as a pure, synchronous state machine (the client-side
 * counterpart of src/lifecycle). The transition table below is the whole definition.
 *
 * - idle: created, `connect()` not called yet.
 * - connecting: the first dial (token, socket, `connection_ready`) is under way.
 * - ready: `connection_ready` received on the current socket; frames flow.
 * - reconnecting: a socket was lost or a dial failed; waiting for the backoff or dialing again.
 * - closed: terminal; `close()` was called or the server said stop (see `closeInfo`).
 */
export const ClientState = {
  IDLE: 'idle',
  CONNECTING: 'connecting',
  READY: 'ready',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
} as const;

export type ClientState = (typeof ClientState)[keyof typeof ClientState];

export const ALL_CLIENT_STATES: readonly ClientState[] = Object.values(ClientState);

const { IDLE, CONNECTING, READY, RECONNECTING, CLOSED } = ClientState;

/** Allowed successors of each state. No state follows itself; closed is terminal. */
export const CLIENT_TRANSITIONS: Readonly<Record<ClientState, ReadonlySet<ClientState>>> = {
  idle: new Set([CONNECTING, CLOSED]),
  connecting: new Set([READY, RECONNECTING, CLOSED]),
  ready: new Set([RECONNECTING, CLOSED]),
  reconnecting: new Set([READY, CLOSED]),
  closed: new Set(),
};

export function isValidClientTransition(from: ClientState, to: ClientState): boolean {
  return CLIENT_TRANSITIONS[from].has(to);
}

export class ClientStateError extends Error {
  override readonly name = 'ClientStateError';
  constructor(
    readonly from: ClientState,
    readonly to: ClientState,
  ) {
    super(`invalid transition ${from} -> ${to}`);
  }
}

/** The only holder of a client's state; `onChange` sees every transition. */
export class ClientStateMachine {
  #state: ClientState = IDLE;

  readonly #onChange: ((from: ClientState, to: ClientState) => void) | undefined;

  constructor(onChange?: (from: ClientState, to: ClientState) => void) {
    this.#onChange = onChange;
  }

  get state(): ClientState {
    return this.#state;
  }

  transition(to: ClientState): void {
    const from = this.#state;
    if (!isValidClientTransition(from, to)) throw new ClientStateError(from, to);
    this.#state = to;
    this.#onChange?.(from, to);
  }
}
