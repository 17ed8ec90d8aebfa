/**
 * The guarantees of the wire contract (PROTOCOL.md) that the storm probe checks from the client
 * side. Each violation the checker finds names exactly one of these.
 */
export const GUARANTEES = {
  ready_first: 'Every connection is accepted and receives connection_ready as its first frame (within the ready timeout).',
  subprotocol: 'The server selects the agentwire.v1 subprotocol when the client offers it.',
  seq_contiguous: 'On every connection, seq starts right after connection_ready.last_seq and rises by exactly 1: no gap, no duplicate, no missing tail.',
  same_events: 'All connections of one user receive identical events for every seq they were all connected for.',
  no_cross_user: 'No connection ever receives a frame of another user (user_id, run_id or message_id of someone else).',
  run_order: 'Within a run: agent_started first, each tool_completed after the tool_executing with its call_id, exactly one terminal event, and it is last.',
  stream_whole:
    'A run that streamed its answer ends with agent_completed whose text is exactly its agent_text_delta texts, concatenated in seq order: no fragment missing, none twice.',
  thread_serial: 'Runs on one thread never overlap: a run starts only after the previous run on its thread ended.',
  runs_complete: 'Every acknowledged run reaches a terminal event on every connection of its user that stayed open.',
  messages_acked: 'Every user_message gets an ack with status started or queued, a run_id of its own and its thread_id.',
  frame_format:
    'Every frame is a JSON object with a string type; every durable event has an integer seq, run_id, thread_id, an ISO-8601 ts and its fields; a run keeps one thread_id.',
  no_error_frames: 'Well-formed, rate-respecting traffic never gets an error frame.',
  no_1011: 'No connection is ever closed with 1011 (unexpected server fault).',
  no_unexpected_close: 'The server closes no connection before the probe closes it.',
} as const;

export type GuaranteeId = keyof typeof GUARANTEES;

export const GUARANTEE_IDS = Object.keys(GUARANTEES) as GuaranteeId[];

export interface Violation {
  readonly guarantee: GuaranteeId;
  readonly user: string;
  /** The probe's own connection label (e.g. `c17`), or null for a user-level finding. */
  readonly connection: string | null;
  readonly detail: string;
  /** Milliseconds since the storm started, when known. */
  readonly atMs: number | null;
}
