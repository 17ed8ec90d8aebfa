import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ndjsonLines, sseData } from '../../src/upstream/framing.js';
import { fcParams } from '../helpers/fastCheck.js';

/**
 * The framing of upstream streams (PROTOCOL.md section 15): NDJSON lines and SSE data, whatever
 * the chunking of the body (TCP may cut anywhere, also inside a UTF-8 character), with the line
 * bound and the cut-mid-message failures.
 */

async function* chunks(body: Buffer, cuts: readonly number[]): AsyncGenerator<Buffer> {
  let start = 0;
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b)) {
    if (cut <= start || cut >= body.length) continue;
    yield body.subarray(start, cut);
    start = cut;
  }
  yield body.subarray(start);
}

async function all(messages: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const message of messages) out.push(message);
  return out;
}

const objects = fc.array(fc.record({ type: fc.constantFrom('text_delta', 'thinking_delta'), text: fc.string({ unit: 'grapheme', maxLength: 20 }) }), {
  maxLength: 8,
});
const cutsOf = (length: number) => fc.array(fc.integer({ min: 1, max: Math.max(1, length - 1) }), { maxLength: 10 });

describe('ndjsonLines', () => {
  it('yields each line whole, however the body is cut into chunks', async () => {
    await fc.assert(
      fc.asyncProperty(
        objects.chain((list) => {
          const body = Buffer.from(list.map((o) => `${JSON.stringify(o)}\r\n\n`).join(''));
          return fc.tuple(fc.constant(list), fc.constant(body), cutsOf(body.length));
        }),
        async ([list, body, cuts]) => {
          expect(await all(ndjsonLines(chunks(body, cuts)))).toEqual(list.map((o) => JSON.stringify(o)));
        },
      ),
      fcParams(300, 10_000),
    );
  });

  it('a last line without its newline counts when it is whole JSON; a cut one fails', async () => {
    expect(await all(ndjsonLines(chunks(Buffer.from('{"a":1}\n{"b":2}'), [3])))).toEqual(['{"a":1}', '{"b":2}']);
    await expect(all(ndjsonLines(chunks(Buffer.from('{"a":1}\n{"b":'), [9])))).rejects.toThrow('the upstream stream ended in the middle of a line');
  });

  it('fails on a line over the bound, also before its newline arrives, and takes one at the bound', async () => {
    const line = (n: number) => `"${'x'.repeat(n - 2)}"`;
    expect(await all(ndjsonLines(chunks(Buffer.from(`${line(100)}\n`), [30, 60]), 100))).toEqual([line(100)]);
    await expect(all(ndjsonLines(chunks(Buffer.from(`${line(101)}\n`), [30, 60]), 100))).rejects.toThrow('the upstream sent a line over 100 bytes');
    // Never ends: the bound, not the end of the body, stops it.
    async function* endless(): AsyncGenerator<Buffer> {
      for (;;) yield Buffer.alloc(64 * 1024, 'x');
    }
    await expect(all(ndjsonLines(endless()))).rejects.toThrow('the upstream sent a line over 1 MiB');
  });
});

describe('sseData', () => {
  it("yields each event's data, however the body is cut into chunks (comments and multi-line data included)", async () => {
    await fc.assert(
      fc.asyncProperty(
        objects.chain((list) => {
          const body = Buffer.from(`: hello\n\n${list.map((o) => `event: x\ndata: ${JSON.stringify(o)}\r\n\r\n`).join('')}data: a\ndata: b\n\n`);
          return fc.tuple(fc.constant(list), fc.constant(body), cutsOf(body.length));
        }),
        async ([list, body, cuts]) => {
          expect(await all(sseData(chunks(body, cuts)))).toEqual([...list.map((o) => JSON.stringify(o)), 'a\nb']);
        },
      ),
      fcParams(300, 10_000),
    );
  });

  it('an event still open at the end of the body fails; an event over the bound fails', async () => {
    await expect(all(sseData(chunks(Buffer.from('data: 1\n\ndata: {"b"'), [4])))).rejects.toThrow('the upstream stream ended in the middle of an event');
    await expect(all(sseData(chunks(Buffer.from('data: 1\n\ndata: 2\n'), [4])))).rejects.toThrow('the upstream stream ended in the middle of an event');
    await expect(all(sseData(chunks(Buffer.from(`data: ${'y'.repeat(300)}\n\n`), [100, 200]), 100))).rejects.toThrow(
      'the upstream sent an event over 100 bytes',
    );
  });
});
