import { createParser } from 'eventsource-parser';
import { UpstreamFailure } from './failure.js';

// The two ways an upstream frames its messages: NDJSON lines and Server-Sent Events. Both read
// the body one chunk at a time as their consumer pulls (so a fast upstream waits on TCP instead
// of filling memory), hold at most one message plus one chunk, and fail on a message over the
// bound or on a body that ends in the middle of one.

/** The largest line or event an upstream may send (section 15: a line over 1 MiB fails the run). */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

function tooLong(maxBytes: number, what: string): UpstreamFailure {
  return new UpstreamFailure(`the upstream sent ${what} over ${maxBytes === MAX_MESSAGE_BYTES ? '1 MiB' : `${maxBytes} bytes`}`);
}

/**
 * The non-blank lines of an NDJSON body. A last line without its newline counts only when it
 * is a whole JSON value; otherwise the body was cut mid-line.
 */
export async function* ndjsonLines(body: AsyncIterable<Buffer>, maxBytes = MAX_MESSAGE_BYTES): AsyncGenerator<string> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of body) {
    let start = 0;
    // Splitting bytes at \n is safe for UTF-8: the byte never occurs inside a multi-byte character.
    for (let newline = chunk.indexOf(10, start); newline !== -1; newline = chunk.indexOf(10, start)) {
      const tail = chunk.subarray(start, newline);
      if (pendingBytes + tail.length > maxBytes) throw tooLong(maxBytes, 'a line');
      const line = (pending.length === 0 ? tail : Buffer.concat([...pending, tail])).toString('utf8').trim();
      pending = [];
      pendingBytes = 0;
      start = newline + 1;
      if (line !== '') yield line;
    }
    if (start < chunk.length) {
      pendingBytes += chunk.length - start;
      if (pendingBytes > maxBytes) throw tooLong(maxBytes, 'a line');
      pending.push(chunk.subarray(start));
    }
  }
  const last = Buffer.concat(pending).toString('utf8').trim();
  if (last === '') return;
  try {
    JSON.parse(last);
  } catch {
    throw new UpstreamFailure('the upstream stream ended in the middle of a line');
  }
  yield last;
}

/**
 * The `data` of each event of a Server-Sent Events body (parsed by eventsource-parser). An event
 * still open when the body ends (no blank line after it) fails: the body was cut mid-event.
 */
export async function* sseData(body: AsyncIterable<Buffer>, maxBytes = MAX_MESSAGE_BYTES): AsyncGenerator<string> {
  let events: string[] = [];
  // Bytes fed since the last event: bounds what the parser holds of an unfinished one. Comments
  // count too: one may sit between the data lines of an event the parser is still collecting.
  let sinceEvent = 0;
  const parser = createParser({
    onEvent: (event) => {
      events.push(event.data);
      sinceEvent = 0;
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of body) {
    sinceEvent += chunk.length;
    parser.feed(decoder.decode(chunk, { stream: true }));
    if (sinceEvent > maxBytes) throw tooLong(maxBytes, 'an event');
    if (events.length === 0) continue;
    const ready = events;
    events = [];
    yield* ready;
  }
  // A blank line ends any event still open: if that dispatches one, the body ended inside it.
  parser.feed(`${decoder.decode()}\n\n`);
  if (events.length > 0) throw new UpstreamFailure('the upstream stream ended in the middle of an event');
}
