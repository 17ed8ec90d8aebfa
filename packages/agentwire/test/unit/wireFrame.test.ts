import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { LogEntry } from '@agentwire/protocol';
import { entryFrame, textFrame } from '../../src/transport/wireFrame.js';

// ws's own frame writer and reader, as reference (exported by ws, not declared by @types/ws).
const { Sender, Receiver } = createRequire(import.meta.url)('ws') as {
  Sender: { frame(data: Buffer, options: Record<string, unknown>): Buffer[] };
  Receiver: new (options: { isServer: boolean }) => EventEmitter & { write(chunk: Buffer): void };
};

/** The frame ws itself would send for `text` from a server (unmasked, FIN, text opcode). */
function wsFrame(text: string): Buffer {
  const data = Buffer.from(text);
  const parts = Sender.frame(data, { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false });
  return Buffer.concat(parts);
}

/** Decodes frames with ws's own receiver (the client side: unmasked frames are what it expects). */
function decode(bytes: Buffer): string[] {
  const messages: string[] = [];
  const receiver = new Receiver({ isServer: false });
  receiver.on('message', (data: Buffer) => messages.push(data.toString()));
  receiver.write(bytes);
  return messages;
}

describe('textFrame', () => {
  // Around each length encoding's limits (7-bit, 16-bit, 64-bit), in bytes, with multibyte text.
  const texts = ['', 'a', 'x'.repeat(125), 'x'.repeat(126), 'é'.repeat(63), 'é'.repeat(64), 'x'.repeat(65_535), 'x'.repeat(65_536), '{"text":"🦀 ünïcödé"}'];

  it.each(texts.map((text) => [Buffer.byteLength(text), text]))('is byte for byte the frame ws sends (%i bytes)', (_bytes, text) => {
    expect(textFrame(text).equals(wsFrame(text))).toBe(true);
  });

  it('decodes, several in one buffer, to the texts in order', () => {
    expect(decode(Buffer.concat(texts.map(textFrame)))).toEqual(texts);
  });
});

describe('entryFrame', () => {
  const entry = (seq: number): LogEntry => ({ seq, type: 'agent_text_delta', json: `{"type":"agent_text_delta","seq":${seq}}`, appendedAt: 0 });

  it('builds an entry frame once for consecutive requests, and anew for another entry', () => {
    const first = entry(1);
    const second = entry(2);
    const frame = entryFrame(first);
    expect(entryFrame(first)).toBe(frame);
    expect(decode(entryFrame(second))).toEqual([second.json]);
    expect(decode(entryFrame(first))).toEqual([first.json]);
  });
});
