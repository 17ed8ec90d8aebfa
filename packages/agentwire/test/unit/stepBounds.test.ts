import { describe, expect, it } from 'vitest';
import { stepFault } from '../../src/runs/stepBounds.js';
import { MAX_JSON_DEPTH } from '../../src/upstream/failure.js';

/** An array `levels` deep: `[[…[]…]]`. */
function nested(levels: number): unknown[] {
  let value: unknown[] = [];
  for (let i = 1; i < levels; i++) value = [value];
  return value;
}

const toolCall = (args: Record<string, unknown>) => ({ type: 'tool_executing' as const, call_id: 'c', tool: 't', args });

describe('stepFault', () => {
  it('allows the depth an upstream line may have (the event is level 1), not one more', () => {
    expect(stepFault(toolCall({ a: nested(MAX_JSON_DEPTH - 2) }))).toBeNull();
    expect(stepFault(toolCall({ a: nested(MAX_JSON_DEPTH - 1) }))).toBe('nested deeper than 128 levels');
  });

  it('judges what JSON would hold: toJSON results, left-out values', () => {
    const deepJson = { toJSON: () => nested(MAX_JSON_DEPTH) };
    expect(stepFault(toolCall({ when: new Date(0), skipped: undefined, f: () => 1 }))).toBeNull();
    expect(stepFault(toolCall({ value: deepJson }))).toBe('nested deeper than 128 levels');
    expect(
      stepFault(
        toolCall({
          value: {
            toJSON: () => {
              throw new Error('no\nway');
            },
          },
        }),
      ),
    ).toBe('that is not serialisable as JSON (no way)');
  });

  it('stops a shared subtree repeated exponentially at the size bound, quickly', () => {
    let value: unknown = 'x';
    for (let i = 0; i < 60; i++) value = [value, value]; // 2^60 leaves as JSON
    const started = performance.now();
    expect(stepFault(toolCall({ value }))).toBe('over 1 MiB as JSON');
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('counts UTF-8 bytes', () => {
    const text = 'é'.repeat(400 * 1024); // 800 KiB of UTF-8
    expect(stepFault({ type: 'agent_thinking', text })).toBeNull();
    expect(stepFault({ type: 'agent_thinking', text: text + text })).toBe('over 1 MiB as JSON');
  });
});
