// Durable agent events (PROTOCOL.md section 7). The run manager builds EventBody values; the
// engine assigns `seq` and serializes each event once, so fan-out to N connections sends the
// same string N times without re-encoding.

interface EventBase {
  readonly run_id: string;
  readonly thread_id: string;
  readonly ts: string;
}

/** Why a run ended with `agent_error`. */
export type AgentErrorCode = 'agent_failed' | 'timeout' | 'run_lost' | 'shutdown';

/** A durable event before the engine gives it its `seq`. */
export type EventBody = EventBase &
  (
    | { readonly type: 'agent_started'; readonly message_id: string; readonly text: string }
    | { readonly type: 'agent_thinking'; readonly text: string }
    /** A non-empty fragment of streamed reasoning (section 7). */
    | { readonly type: 'agent_thinking_delta'; readonly text: string }
    /** A non-empty fragment of the streamed answer; `agent_completed.text` is their concatenation. */
    | { readonly type: 'agent_text_delta'; readonly text: string }
    | {
        readonly type: 'tool_executing';
        readonly call_id: string;
        readonly tool: string;
        readonly args: Record<string, unknown>;
      }
    | {
        readonly type: 'tool_completed';
        readonly call_id: string;
        readonly tool: string;
        readonly ok: boolean;
        readonly result: unknown;
      }
    | { readonly type: 'agent_completed'; readonly status: 'completed' | 'cancelled'; readonly text: string }
    | { readonly type: 'agent_error'; readonly code: AgentErrorCode; readonly message: string }
  );

/** The `type` of a durable event. */
export type EventType = EventBody['type'];

/** An event as an agent run produces it, before the run manager stamps run, thread and time. */
export type EventPayload = EventBody extends infer E ? (E extends EventBody ? Omit<E, 'run_id' | 'thread_id' | 'ts'> : never) : never;
/** A durable event as clients receive it: with its per-user `seq`. */
export type DurableEvent = EventBody & { readonly seq: number };

/** One entry of a user's log as the engine stores and delivers it. */
export interface LogEntry {
  readonly seq: number;
  readonly type: EventType;
  /** The complete event, `seq` included, as sent on the wire. */
  readonly json: string;
  /** Append time on the appending node (ms since epoch), for the append-to-send histogram. */
  readonly appendedAt: number;
  /** The log's epoch when the entry was appended (live entries); a change means the log was lost. */
  readonly epoch?: string;
}

/** What the run manager stamps on every event of a run. */
export type EventStamp = EventBase;

/**
 * A payload stamped with its run, thread and time, built with a `seq` slot right behind `type`
 * for `encodeEvent` to fill: such a body is written with one JSON.stringify, no text surgery
 * and no copy (the cost of an event's encoding was about half that of the rest of its append).
 */
export function stampEvent(payload: EventPayload, stamp: EventStamp): EventBody {
  return Object.assign({ type: payload.type, seq: 0 }, payload, stamp) as EventBody;
}

/** The type of a streamed fragment's event. */
export type DeltaType = 'agent_text_delta' | 'agent_thinking_delta';

/**
 * What a run stamps on its events, with the part of a delta's JSON it fixes encoded once per run:
 * a streaming run's most frequent event is then written from a template (`encodeEvent`), not by
 * a JSON.stringify of its object (about a third of the time).
 */
export class RunStamp {
  /** `,"run_id":<json>,"thread_id":<json>,"ts":` */
  readonly #encoded: string;

  constructor(
    readonly runId: string,
    readonly threadId: string,
  ) {
    this.#encoded = `,"run_id":${JSON.stringify(runId)},"thread_id":${JSON.stringify(threadId)},"ts":`;
  }

  /** A delta event of the run, as `stampEvent({ type, text }, ...)` builds it (same keys, same order). */
  delta(type: DeltaType, text: string, ts: string): EventBody {
    if (type !== 'agent_text_delta' && type !== 'agent_thinking_delta') throw new TypeError(`not a delta type: ${String(type)}`);
    return new StampedDelta(type, text, this.runId, this.threadId, ts, this.#encoded);
  }
}

/** A delta body made by `RunStamp.delta`: its own properties are exactly a stamped delta's. */
class StampedDelta {
  readonly type: DeltaType;
  seq = 0;
  readonly text: string;
  readonly run_id: string;
  readonly thread_id: string;
  readonly ts: string;
  /** The run's part of the JSON, from RunStamp; private fields are not serialised. */
  readonly #encodedRun: string;

  constructor(type: DeltaType, text: string, runId: string, threadId: string, ts: string, encodedRun: string) {
    this.type = type;
    this.text = text;
    this.run_id = runId;
    this.thread_id = threadId;
    this.ts = ts;
    this.#encodedRun = encodedRun;
  }

  /** JSON.stringify(this), from the template. */
  encode(): string {
    const head = this.type === 'agent_text_delta' ? '{"type":"agent_text_delta","seq":' : '{"type":"agent_thinking_delta","seq":';
    return `${head}${this.seq},"text":${JSON.stringify(this.text)}${this.#encodedRun}${JSON.stringify(this.ts)}}`;
  }
}

/**
 * The wire form of a durable event with its `seq`: `type` and `seq` first, then the body. A body
 * that has a `seq` property (the slot `stampEvent` makes right behind `type`) gets `seq` written
 * into it and is encoded in its own key order; any other body is left as it is.
 */
export function encodeEvent(body: EventBody, seq: number): string {
  if (body instanceof StampedDelta) {
    body.seq = seq;
    return body.encode();
  }
  const slotted = body as { seq?: number };
  if (slotted.seq !== undefined) {
    slotted.seq = seq;
    return JSON.stringify(body);
  }
  // `type` and `seq` lead so that readers of raw frames see them first. Bodies are built with
  // `type` first, so `seq` is put in behind it in the text rather than into a copy of the object.
  const json = JSON.stringify(body);
  const lead = `{"type":${JSON.stringify(body.type)},`;
  if (json.startsWith(lead)) return `${lead}"seq":${seq},${json.slice(lead.length)}`;
  const { type, ...rest } = body;
  return JSON.stringify({ type, seq, ...rest });
}
