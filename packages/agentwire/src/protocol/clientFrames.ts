import { z } from 'zod';
import type { FrameRef } from '@agentwire/protocol';

/**
 * Client frames (PROTOCOL.md section 6) and the one parser every inbound text frame goes
 * through. Parsing never throws: a bad frame becomes a ParsedFrame of kind 'invalid' that
 * carries the exact error frame the contract prescribes. Nothing here walks a client value
 * recursively, so no nesting depth can overflow the stack.
 */
const clientId = z.string().min(1).max(128);
/** A thread id (section 6); the history routes take the same. */
export const THREAD_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const threadId = z.string().regex(THREAD_ID, 'must be 1..128 of [A-Za-z0-9._:-]');
const MAX_EPOCH_LENGTH = 128;

// Malformed resume fields are ignored as if absent (section 3): the connection proceeds with
// `resumed: false`. A token that is not a string counts as no token (4401 token_missing).
const lastSeqField = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional().catch(undefined);
const epochField = z.string().min(1).max(MAX_EPOCH_LENGTH).optional().catch(undefined);
const authFrame = z.object({
  type: z.literal('auth'),
  token: z.string().optional().catch(undefined),
  last_seq: lastSeqField,
  epoch: epochField,
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
// Echoed in the pong, so only short scalars: an arbitrary value would be serialized back.
const pingFrame = z.object({
  type: z.literal('ping'),
  id: z.union([clientId, z.number()], { error: 'must be a string of 1..128 characters or a finite number' }).optional(),
});
const refreshTokenFrame = z.object({
  type: z.literal('refresh_token'),
  id: clientId,
  token: z.string().min(1),
});

export type AuthFrame = z.infer<typeof authFrame>;
export type UserMessageFrame = z.infer<typeof userMessageFrame>;
export type CancelFrame = z.infer<typeof cancelFrame>;
export type PingFrame = z.infer<typeof pingFrame>;
export type RefreshTokenFrame = z.infer<typeof refreshTokenFrame>;
export type ClientFrame = AuthFrame | UserMessageFrame | CancelFrame | PingFrame | RefreshTokenFrame;

/** A Map, not an object: a `type` such as "constructor" or "__proto__" must find nothing. */
const schemas: ReadonlyMap<string, z.ZodType<ClientFrame>> = new Map<string, z.ZodType<ClientFrame>>([
  ['auth', authFrame],
  ['user_message', userMessageFrame],
  ['cancel', cancelFrame],
  ['ping', pingFrame],
  ['refresh_token', refreshTokenFrame],
]);

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
  const ref = frameRef(ownField(value, 'id'));
  const type = ownField(value, 'type');
  if (typeof type !== 'string') {
    return invalid('type', 'field "type" must be a string', ref);
  }
  const schema = schemas.get(type);
  if (!schema) {
    return {
      kind: 'invalid',
      code: 'unknown_type',
      message: `unknown frame type ${JSON.stringify(type.slice(0, 64))}`,
      ref,
    };
  }
  const result = schema.safeParse(value);
  if (result.success) return { kind: 'frame', frame: result.data };
  const issue = result.error.issues[0]!;
  const path = issue.path.map(String).join('.') || 'type';
  return invalid(path, `${path}: ${issue.message}`, ref);
}

/**
 * Whether a raw text frame can be an `auth` frame, without parsing it when it cannot: only a
 * JSON object can be one, and frames held before authentication are mostly not inspected twice.
 */
export function mayBeObject(text: string): boolean {
  return /^[\t\n\r ]*\{/.test(text);
}

/** The resume position a client named, each malformed field dropped (PROTOCOL.md section 3). */
export function resumeFields(lastSeq: unknown, epoch: unknown): { lastSeq?: number; epoch?: string } {
  const seq = lastSeqField.parse(lastSeq);
  if (seq === undefined) return {};
  const validEpoch = epochField.parse(epoch);
  return validEpoch === undefined ? { lastSeq: seq } : { lastSeq: seq, epoch: validEpoch };
}

function ownField(record: object, name: string): unknown {
  return Object.hasOwn(record, name) ? (record as Record<string, unknown>)[name] : undefined;
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
