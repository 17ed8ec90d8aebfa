import type { LogEntry } from '@agentwire/protocol';

/**
 * A complete unmasked WebSocket text frame (RFC 6455 section 5.2: FIN, opcode 1, no extension
 * bits) carrying `text`, header and payload in one Buffer. A server's frames are never masked,
 * so the same bytes are a valid frame on every connection that negotiated no extension.
 */
export function textFrame(text: string): Buffer {
  const length = Buffer.byteLength(text);
  const headerLength = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + length);
  frame[0] = 0x81;
  if (length < 126) {
    frame[1] = length;
  } else if (length < 65_536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  frame.write(text, headerLength);
  return frame;
}

let framedEntry: LogEntry | null = null;
let framed: Buffer = Buffer.alloc(0);

/**
 * The entry's frame, built once for all the connections it is fanned out to: the coordinator
 * hands one entry to each of its user's connections in turn, so remembering the last entry
 * framed serves all but the first without a per-entry field or a cache to bound. The Buffer is
 * shared by the sockets' write queues and never written to.
 */
export function entryFrame(entry: LogEntry): Buffer {
  if (entry !== framedEntry) {
    framed = textFrame(entry.json);
    framedEntry = entry;
  }
  return framed;
}
