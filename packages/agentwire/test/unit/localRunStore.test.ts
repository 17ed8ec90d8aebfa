import { describe, expect, it } from 'vitest';
import { LocalRunStore, type RunRecord } from '../../src/runs/runStore.js';

/** The in-memory run store owns message-id claims (the engine is only the log). */
function record(n: number, messageId = `m${n}`, threadId = `t${n}`, userId = 'u1'): RunRecord {
  return { runId: `run_${n}`, userId, threadId, messageId, text: 'x' };
}

describe('LocalRunStore message-id claims', () => {
  it('a claimed id answers duplicate with its run; a refused run leaves its id free; a replay-only probe creates nothing', async () => {
    const store = new LocalRunStore();
    expect(await store.enqueue(record(1), 'reject', 32)).toBe('start');
    expect(await store.enqueue(record(2, 'm1', 't2'), 'reject', 32)).toEqual({ duplicate: { runId: 'run_1', threadId: 't1' } });
    // Busy (reject policy) and over the cap: nothing created, the ids stay free.
    expect(await store.enqueue(record(3, 'm3', 't1'), 'reject', 32)).toBe('busy');
    expect(await store.enqueue(record(4, 'm4', 't4'), 'reject', 32, { maxActive: 1 })).toBe('too_many_runs');
    expect(await store.enqueue(record(5, 'm3', 't5'), 'reject', 32)).toBe('start');
    expect(await store.enqueue(record(6, 'm4', 't6'), 'reject', 32)).toBe('start');
    expect(await store.enqueue(record(7, 'm7'), 'enqueue', 32, { replayOnly: true })).toBe('absent');
    expect(await store.enqueue(record(7, 'm7'), 'enqueue', 32)).toBe('start');
    expect(await store.enqueue(record(8, 'm7'), 'enqueue', 32, { replayOnly: true })).toEqual({ duplicate: { runId: 'run_7', threadId: 't7' } });
    // Claims are per user.
    expect(await store.enqueue(record(9, 'm1', 't1', 'u2'), 'reject', 32)).toBe('start');
  });

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
