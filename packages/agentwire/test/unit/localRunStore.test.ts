import { describe, expect, it } from 'vitest';
import { LocalRunStore, type RunRecord } from '../../src/runs/runStore.js';

/** The in-memory run store owns message-id claims (the engine is only the log). */
function record(n: number, messageId = `m${n}`, threadId = `t${n}`, userId = 'u1'): RunRecord {
  return { runId: `run_${n}`, userId, threadId, messageId, text: 'x' };
}

// Claims, duplicates and replay-only probes: the shared run-store suite (test/suites/runStoreSuite.test.ts).
describe('LocalRunStore message-id claims', () => {
  it('forgets a claim after the retention, and the oldest beyond the per-user bound', async () => {
    let now = 1_000;
    const store = new LocalRunStore({ retentionMs: 100, maxClaimsPerUser: 2, now: () => now });
    expect(await store.enqueue(record(1), 'enqueue', 32)).toBe('start');
    now += 50;
    expect(await store.enqueue(record(2), 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(record(3, 'm1'), 'enqueue', 32)).toMatchObject({ duplicate: { runId: 'run_1' } });
    now += 51;
    // m1 is past the retention, m2 is not.
    expect(await store.enqueue(record(4, 'm1'), 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(record(5, 'm2'), 'enqueue', 32)).toMatchObject({ duplicate: { runId: 'run_2' } });
    // A third claim of the user (m6, beside m2 and the new m1) forgets the oldest one, m2.
    expect(await store.enqueue(record(6, 'm6'), 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(record(7, 'm2'), 'enqueue', 32)).toBe('start');
  });
});
