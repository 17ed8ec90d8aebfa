/** One connection of one user, as presence counts it. */
export interface ConnectionRef {
  readonly userId: string;
  readonly connectionId: string;
}

/**
 * Counts a user's connections across nodes, for the per-user cap. A node's coordinator always
 * enforces the cap over its own connections; a shared presence extends it to the cluster.
 */
export interface ConnectionPresence {
  /** Registers the connection unless the user already has `cap` live ones. */
  acquire(ref: ConnectionRef, cap: number): Promise<boolean>;
  release(ref: ConnectionRef): Promise<void>;
  /** Keeps this node's connections counted; entries not renewed expire (their node died). */
  renew(refs: readonly ConnectionRef[]): Promise<void>;
}
