import { describe, expect, it } from 'vitest';
import type { EventBody } from '@agentwire/protocol';
import { MemoryEngine } from '../../src/engine/index.js';
import { DEFAULTS } from '../../src/config/settings.js';

const delta = (text: string): EventBody => ({ type: 'agent_text_delta', text, run_id: 'r1', thread_id: 't1', ts: new Date(0).toISOString() });

describe('MemoryEngine retention by size (AGENTWIRE_RETENTION_BYTES)', () => {
  it('keeps the newest events whose JSON fits the byte bound, and always the newest one', async () => {
    const engine = new MemoryEngine({ retentionEvents: 1000, retentionBytes: 4096 });
    try {
      for (let i = 0; i < 40; i++) await engine.append('u1', [delta('x'.repeat(400))]);
      const kept = await engine.read('u1', 1, 40);
      const bytes = kept.reduce((sum, e) => sum + e.json.length, 0);
      expect(bytes).toBeLessThanOrEqual(4096);
      expect(bytes + kept[0]!.json.length).toBeGreaterThan(4096); // one more would not fit
      expect(kept.at(-1)!.seq).toBe(40);
      expect(kept.map((e) => e.seq)).toEqual(kept.map((_, i) => 41 - kept.length + i));

      // One event larger than the bound on its own: it is kept (alone), so a resume from just
      // before it still works.
      await engine.append('u1', [delta('y'.repeat(10_000))]);
      expect((await engine.read('u1', 1, 41)).map((e) => e.seq)).toEqual([41]);
      // Count and size bounds work together: the next small event evicts the big one.
      await engine.append('u1', [delta('z')]);
      expect((await engine.read('u1', 1, 42)).map((e) => e.seq)).toEqual([42]);
    } finally {
      await engine.close();
    }
  });

  it('defaults to the settings table: 10000 events (section 12) and 8 MiB per user', async () => {
    expect(DEFAULTS.retentionEvents).toBe(10_000);
    expect(DEFAULTS.retentionBytes).toBe(8 * 1024 * 1024);
    const engine = new MemoryEngine();
    try {
      const batch = Array.from({ length: 10_001 }, (_, i) => delta(`d${i}`));
      await engine.append('u1', batch);
      const kept = await engine.read('u1', 1, 10_001);
      expect(kept).toHaveLength(10_000);
      expect(kept[0]!.seq).toBe(2);
    } finally {
      await engine.close();
    }
  });
});
