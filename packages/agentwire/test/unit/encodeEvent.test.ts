import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { encodeEvent, stampEvent, type EventBody, type EventPayload } from '@agentwire/protocol';
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
