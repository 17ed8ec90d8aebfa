import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RunStamp, encodeEvent, stampEvent, type EventBody, type EventPayload } from '@agentwire/protocol';
import { fcParams } from '../helpers/fastCheck.js';

/** The wire form by its definition: `type`, then `seq`, then the body's other fields in its order. */
function reference(body: EventBody, seq: number): string {
  const { type, ...rest } = body;
  return JSON.stringify({ type, seq, ...rest });
}

describe('encodeEvent', () => {
  it('is the reference encoding for bodies with type first, elsewhere, or alone', () => {
    const field = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.constant(undefined), fc.dictionary(fc.string(), fc.string()));
    const body = fc.tuple(fc.string(), fc.dictionary(fc.string(), field), fc.boolean()).map(([type, fields, typeFirst]) => {
      const rest = Object.fromEntries(Object.entries(fields).filter(([key]) => key !== 'type'));
      return (typeFirst ? { type, ...rest } : { ...rest, type }) as unknown as EventBody;
    });
    fc.assert(
      fc.property(body, fc.nat(), (b, seq) => {
        expect(encodeEvent(b, seq)).toBe(reference(b, seq));
      }),
      fcParams(500, 20_000),
    );
  });

  it('puts type and seq first', () => {
    const body: EventBody = { type: 'agent_text_delta', text: 'a "quoted" \\ text', run_id: 'r', thread_id: 't', ts: '2026-01-01T00:00:00.000Z' };
    expect(encodeEvent(body, 7)).toBe(
      '{"type":"agent_text_delta","seq":7,"text":"a \\"quoted\\" \\\\ text","run_id":"r","thread_id":"t","ts":"2026-01-01T00:00:00.000Z"}',
    );
  });

  it('writes a stamped body (seq slot behind type) as the reference encoding, again with each new seq', () => {
    const text = fc.string();
    const payload = fc.oneof(
      fc.record({ type: fc.constantFrom('agent_text_delta' as const, 'agent_thinking_delta' as const, 'agent_thinking' as const), text }),
      fc.record({ type: fc.constant('agent_started' as const), message_id: fc.string(), text }),
      fc.record({ type: fc.constant('tool_executing' as const), call_id: fc.string(), tool: fc.string(), args: fc.dictionary(fc.string(), fc.jsonValue()) }),
      fc.record({ type: fc.constant('agent_completed' as const), status: fc.constantFrom('completed' as const, 'cancelled' as const), text }),
    );
    const stamp = fc.record({ run_id: fc.string(), thread_id: fc.string(), ts: fc.string() });
    fc.assert(
      fc.property(payload, stamp, fc.nat(), fc.nat(), (p, st, seq, retrySeq) => {
        const unslotted = { ...p, ...st } as unknown as EventBody;
        const body = stampEvent(p as EventPayload, st);
        expect(encodeEvent(body, seq)).toBe(reference(unslotted, seq));
        expect(encodeEvent(body, retrySeq)).toBe(reference(unslotted, retrySeq));
      }),
      fcParams(300, 20_000),
    );
  });
});

describe('RunStamp.delta', () => {
  it("is encoded (from the run's template) as the reference encoding of the same delta, and serialises as one", () => {
    // Any text: quotes, controls, non-BMP and lone surrogates (JSON.stringify escapes those).
    const text = fc.string({ unit: 'binary' });
    fc.assert(
      fc.property(
        fc.constantFrom('agent_text_delta' as const, 'agent_thinking_delta' as const),
        text,
        text,
        text,
        text,
        fc.nat(),
        (type, t, runId, threadId, ts, seq) => {
          const body = new RunStamp(runId, threadId).delta(type, t, ts);
          const plain = { type, text: t, run_id: runId, thread_id: threadId, ts } as EventBody;
          expect(encodeEvent(body, seq)).toBe(reference(plain, seq));
          expect(JSON.stringify(body)).toBe(reference(plain, seq));
          expect(encodeEvent(stampEvent({ type, text: t }, { run_id: runId, thread_id: threadId, ts }), seq)).toBe(encodeEvent(body, seq));
        },
      ),
      fcParams(500, 20_000),
    );
  });

  it('refuses a type that is not a delta', () => {
    expect(() => new RunStamp('r', 't').delta('agent_thinking' as 'agent_text_delta', 'x', 'now')).toThrow(/not a delta type/);
  });
});
