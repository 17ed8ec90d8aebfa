import { InvalidCursorError } from './types.js';

// Opaque cursors of the log-folded store: a position within the requesting user's own fold,
// base64url-encoded. A position names nothing outside the user's data (every read is scoped to
// the token's user), so a cursor of another user, or a forged one, only pages the caller's own.

/** What a cursor pages: threads (by a thread's newest seq) or messages (by message position). */
export type CursorKind = 'threads' | 'messages';

const PREFIX: Record<CursorKind, string> = { threads: 't1.', messages: 'm1.' };
/** Longest cursor accepted: a prefix and a 16-digit number, base64url. */
const MAX_CURSOR_LENGTH = 32;

export function encodeCursor(kind: CursorKind, position: number): string {
  return Buffer.from(`${PREFIX[kind]}${position}`).toString('base64url');
}

/** The position a cursor of `kind` names; throws InvalidCursorError for anything else. */
export function decodeCursor(kind: CursorKind, cursor: string): number {
  if (cursor.length > MAX_CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw new InvalidCursorError();
  const text = Buffer.from(cursor, 'base64url').toString('latin1');
  const prefix = PREFIX[kind];
  const digits = text.slice(prefix.length);
  if (!text.startsWith(prefix) || !/^[1-9]\d{0,15}$/.test(digits)) throw new InvalidCursorError();
  const position = Number(digits);
  if (!Number.isSafeInteger(position)) throw new InvalidCursorError();
  return position;
}
