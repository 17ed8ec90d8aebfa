import { z } from 'zod';

/**
 * Client frames (PROTOCOL.md section 6) and the one parser every inbound text frame goes
 * through. Parsing never throws: a bad frame becomes a ParsedFrame of kind 'invalid' that
 * carries the exact error frame the contract prescribes.
 */
const clientId = z.string().min(1).max(128);
const threadId = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'must be 1..128 of [A-Za-z0-9._:-]');

const authFrame = z.object({
  type: z.literal('auth'),
  token: z.string().optional(),
  last_seq: z.number().int().min(0).optional(),
  epoch: z.string().max(128).optional(),
});
const userMessageFrame = z.object({
  type: z.literal('user_message'),
  id: clientId,
  thread_id: threadId,
  text: z.string().min(1).max(32768),
});
const cancelFrame = z.object({
  type: z.literal('cancel'),
  id: clientId,
  run_id: z.string().min(1).max(128),
});
const pingFrame = z.object({ type: z.literal('ping'), id: z.unknown().optional() });

export type AuthFrame = z.infer<typeof authFrame>;
export type UserMessageFrame = z.infer<typeof userMessageFrame>;
export type CancelFrame = z.infer<typeof cancelFrame>;
export type PingFrame = z.infer<typeof pingFrame>;
export type ClientFrame = AuthFrame | UserMessageFrame | CancelFrame | PingFrame;

const schemas: Record<string, z.ZodType<ClientFrame>> = {
  auth: authFrame,
  user_message: userMessageFrame,
  cancel: cancelFrame,
  ping: pingFrame,
};

export type FrameErrorCode = 'invalid_json' | 'invalid_message' | 'unknown_type' | 'unsupported_binary';

export type ParsedFrame =
  | { readonly kind: 'frame'; readonly frame: ClientFrame }
  | {
      readonly kind: 'invalid';
      readonly code: FrameErrorCode;
      readonly message: string;
      readonly path?: string;
      readonly ref: FrameRef;
    };

export type FrameRef = string | number | null;

export const BINARY_FRAME: ParsedFrame = {
  kind: 'invalid',
  code: 'unsupported_binary',
  message: 'binary frames are not supported; send JSON text frames',
  ref: null,
};

export function parseClientFrame(text: string): ParsedFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'invalid', code: 'invalid_json', message: 'frame is not valid JSON', ref: null };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return invalid('type', 'frame must be a JSON object with a string field "type"', null);
  }
  const record = value as Record<string, unknown>;
  const ref = frameRef(record.id);
  if (typeof record.type !== 'string') {
    return invalid('type', 'field "type" must be a string', ref);
  }
  const schema = schemas[record.type];
  if (!schema) {
    return {
      kind: 'invalid',
      code: 'unknown_type',
      message: `unknown frame type "${record.type.slice(0, 64)}"`,
      ref,
    };
  }
  const result = schema.safeParse(value);
  if (result.success) return { kind: 'frame', frame: result.data };
  const issue = result.error.issues[0]!;
  const path = issue.path.join('.') || 'type';
  return invalid(path, `${path}: ${issue.message}`, ref);
}

function invalid(path: string, message: string, ref: FrameRef): ParsedFrame {
  return { kind: 'invalid', code: 'invalid_message', message, path, ref };
}

const MAX_ECHOED_REF = 1024;

function frameRef(id: unknown): FrameRef {
  // Echoed as sent so a client can match the error to its frame; an id far beyond the 128
  // characters the protocol allows is not echoed, so errors cannot amplify a flood.
  if (typeof id === 'string') return id.length <= MAX_ECHOED_REF ? id : null;
  if (typeof id === 'number' && Number.isFinite(id)) return id;
  return null;
}
