import type { ConversationTurn } from '../history/types.js';
import type { AgentRunInput, AgentStep } from '../runs/agent.js';
import { UpstreamFailure, isRecord } from './failure.js';

/** The wire dialects an upstream agent may speak (PROTOCOL.md section 15). */
export const AGENT_PROTOCOLS = ['agentwire', 'ag-ui', 'ai-sdk', 'openai'] as const;
/** The dialect an upstream agent speaks: `agentwire`, `ag-ui`, `ai-sdk` or `openai` (PROTOCOL.md section 15). */
export type AgentProtocol = (typeof AGENT_PROTOCOLS)[number];

/** What a dialect needs of a run to build its request. */
export interface RunRequest {
  readonly input: AgentRunInput;
  /** The thread's earlier turns, oldest first. */
  readonly history: readonly ConversationTurn[];
  /** The model to ask for (the `openai` dialect). */
  readonly model: string | undefined;
}

/** How one decoded message of the stream moves the run on. */
export interface Decoded {
  readonly steps: readonly AgentStep[];
  /** The message ends the run (RUN_FINISHED, `finish`, `[DONE]`): the rest of the body is not read. */
  readonly done: boolean;
}

/** The per-run reader of a dialect's stream: one call per NDJSON line or SSE `data`. */
export interface StreamDecoder {
  /** Throws UpstreamFailure for an error message or one that cannot be read. */
  decode(message: string): Decoded;
  /** The body ended without a message that ends the run: throws when the dialect needs one. */
  ended(): void;
}

/** One upstream dialect: where and what to POST, and how to read the answer. */
export interface Dialect {
  readonly name: AgentProtocol;
  /** The request's `accept` header. */
  readonly accept: string;
  /** Where to POST, given the configured URL. */
  target(url: URL): URL;
  body(request: RunRequest): unknown;
  /** How the body is framed for this response content type (lower case, no parameters), or null when it is not one the dialect speaks. */
  framing(contentType: string | undefined): 'ndjson' | 'sse' | null;
  decoder(): StreamDecoder;
}

/** Decoded with nothing to do. */
export const NOTHING: Decoded = Object.freeze({ steps: [], done: false });
export const DONE: Decoded = Object.freeze({ steps: [], done: true });

/** Tool calls one run may announce: a bound on what a hostile upstream can make the gateway remember. */
export const MAX_TOOL_CALLS = 10_000;
/**
 * Characters of call ids and tool names one run's tool calls may hold in all: each may be up to
 * a line long, and ten thousand of those would be gigabytes.
 */
export const MAX_TOOL_CALL_CHARS = 4 * 1024 * 1024;

/**
 * The tool calls a run announced, so that every `tool_completed` follows the `tool_executing`
 * with its call id (section 7), and dialects whose results carry no tool name can name it.
 */
export class ToolCalls {
  readonly #tools = new Map<string, string>();
  #chars = 0;

  announce(callId: string, tool: string): void {
    const known = this.#tools.get(callId);
    if (known === undefined && this.#tools.size >= MAX_TOOL_CALLS) {
      throw new UpstreamFailure(`the upstream announced more than ${MAX_TOOL_CALLS} tool calls`);
    }
    this.#chars += known === undefined ? callId.length + tool.length : tool.length - known.length;
    if (this.#chars > MAX_TOOL_CALL_CHARS) throw new UpstreamFailure('the call ids and tool names of the upstream’s tool calls are over 4 MiB');
    this.#tools.set(callId, tool);
  }

  /** The tool of an announced call; a result for a call never announced is a fault. */
  toolOf(callId: string): string {
    const tool = this.#tools.get(callId);
    if (tool === undefined)
      throw new UpstreamFailure(`the upstream sent a tool result for call ${JSON.stringify(callId.slice(0, 100))}, which it never announced`);
    return tool;
  }
}

/** Tool arguments as an object: a dialect whose tool input may be any JSON value wraps the others as `{ input }`. */
export function argsObject(value: unknown): Record<string, unknown> {
  return isRecord(value) ? value : { input: value };
}

/** The framing of the dialects that answer in Server-Sent Events only. */
export function sseOnly(contentType: string | undefined): 'sse' | null {
  return contentType === 'text/event-stream' ? 'sse' : null;
}
