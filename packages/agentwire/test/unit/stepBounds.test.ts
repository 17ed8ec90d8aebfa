import { describe, expect, it } from 'vitest';
import { MAX_RUN_TEXT_BYTES, RunTextBudget, checkStep } from '../../src/runs/stepBounds.js';
import { MAX_JSON_DEPTH } from '../../src/upstream/failure.js';

/** An array `levels` deep: `[[…[]…]]`. */
function nested(levels: number): unknown[] {
  let value: unknown[] = [];
  for (let i = 1; i < levels; i++) value = [value];
  return value;
}

const toolCall = (args: Record<string, unknown>) => ({ type: 'tool_executing' as const, call_id: 'c', tool: 't', args });

const faultOf = (event: Parameters<typeof checkStep>[0]) => checkStep(event).fault;

describe('checkStep', () => {
  it('allows the depth an upstream line may have (the event is level 1), not one more', () => {
    expect(faultOf(toolCall({ a: nested(MAX_JSON_DEPTH - 2) }))).toBeNull();
    expect(faultOf(toolCall({ a: nested(MAX_JSON_DEPTH - 1) }))).toBe('nested deeper than 128 levels');
  });

  it('judges what JSON would hold: toJSON results, left-out values', () => {
    const deepJson = { toJSON: () => nested(MAX_JSON_DEPTH) };
    expect(faultOf(toolCall({ when: new Date(0), skipped: undefined, f: () => 1 }))).toBeNull();
    expect(faultOf(toolCall({ value: deepJson }))).toBe('nested deeper than 128 levels');
    expect(
      faultOf(
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
    expect(faultOf(toolCall({ value }))).toBe('over 1 MiB as JSON');
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('counts UTF-8 bytes', () => {
    const text = 'é'.repeat(400 * 1024); // 800 KiB of UTF-8
    expect(faultOf({ type: 'agent_thinking', text })).toBeNull();
    expect(faultOf({ type: 'agent_thinking', text: text + text })).toBe('over 1 MiB as JSON');
  });

  it('gives a copy of the step as JSON has it, which the agent cannot change after the check', () => {
    const args: Record<string, unknown> = { when: new Date(0), list: [1, 2] };
    const checked = checkStep(toolCall(args));
    args.self = args; // a cycle added after the yield, before the append encodes the step
    (args.list as number[]).push(3);
    expect(checked.event).toEqual({ type: 'tool_executing', call_id: 'c', tool: 't', args: { when: '1970-01-01T00:00:00.000Z', list: [1, 2] } });
  });
});

describe('RunTextBudget', () => {
  const MiB = 1024 * 1024;

  it('takes a step of exactly 1 MiB of UTF-8, not one byte more (counted in bytes, not characters)', () => {
    const budget = new RunTextBudget();
    expect(budget.take('x'.repeat(MiB))).toBeNull();
    // 2 bytes per character: half a MiB of characters is a whole MiB of bytes, plus one.
    expect(budget.take('é'.repeat(MiB / 2) + 'x')).toBe('with over 1 MiB of text');
    expect(budget.take('é'.repeat(MiB / 2))).toBeNull();
  });

  it("takes the run's text up to MAX_RUN_TEXT_BYTES in all, then nothing more", () => {
    const budget = new RunTextBudget();
    for (let i = 0; i < MAX_RUN_TEXT_BYTES / MiB; i++) expect(budget.take('x'.repeat(MiB))).toBeNull();
    expect(budget.take('')).toBeNull();
    expect(budget.take('x')).toBe('past 16 MiB of text in the run');
  });

  it('refuses text that is not a string, whatever it is', () => {
    const budget = new RunTextBudget();
    for (const text of [42, null, undefined, { length: 1 }, ['a'], Symbol('s')]) expect(budget.take(text)).toBe('whose text is not a string');
  });
});
