import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { RedisConnection, type RedisConnectionOptions } from '../../src/redis/connection.js';
import {
  MAX_APPENDS_PER_SCRIPT,
  MAX_EVENTS_PER_SCRIPT,
  MAX_QUEUE_WAIT_MS,
  MAX_SIZE_PER_SCRIPT,
  RedisEngine,
  notificationSpan,
  parseNotification,
  type RedisEngineOptions,
} from '../../src/redis/engine.js';
import { RunEndedError } from '../../src/engine/types.js';
import { keyTtlMs, type UserKeys } from '../../src/redis/keys.js';
import type { Redis } from 'ioredis';
import type { EventBody } from '@agentwire/protocol';
import { RedisServer } from '../helpers/redisServer.js';
import { liveCollector } from '../helpers/liveCollector.js';
import { Waiters } from '../helpers/waitFor.js';
import { TcpProxy, pubSubLink } from '../helpers/tcpProxy.js';

let redis: RedisServer;
beforeAll(async () => {
  redis = await RedisServer.start();
});
const connections = new Map<RedisEngine, RedisConnection>();
afterAll(async () => {
  for (const connection of connections.values()) await connection.close();
  await redis?.stop();
});

let prefixCounter = 0;
/** An engine on a connection of its own, under a new key prefix (or `prefix`, to share another's logs). */
function engine(options: Partial<RedisConnectionOptions> & RedisEngineOptions = {}, prefix = `t${++prefixCounter}`): RedisEngine {
  const connection = new RedisConnection({ url: redis.url, keyPrefix: prefix, ...options });
  const created = new RedisEngine(connection, options);
  connections.set(created, connection);
  return created;
}

/** The engine's connection (closed with the engine: these tests are its only user). */
function connectionOf(e: RedisEngine): RedisConnection {
  return connections.get(e)!;
}

/** A ready engine and an admin client for one test, both closed after it. */
async function withEngine(test: (e: RedisEngine, admin: Redis) => Promise<void>): Promise<void> {
  const e = engine();
  await e.ready();
  const admin = redis.client();
  try {
    await test(e, admin);
  } finally {
    admin.disconnect();
    await e.close();
  }
}

function thinking(text: string, run = 'r1'): EventBody {
  return { type: 'agent_thinking', text, run_id: run, thread_id: 't1', ts: new Date(0).toISOString() };
}

// Seqs, reads, live delivery and fences: the shared engine suite (test/suites/engineSuite.test.ts).
describe('RedisEngine', () => {
  it('never assigns the same seq twice when two engines (two nodes) append concurrently', async () => {
    const a = engine();
    const b = engine({}, `t${prefixCounter}`);
    await Promise.all([a.ready(), b.ready()]);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).append('carol', [thinking(`m${i}`), thinking(`n${i}`)])));
    const seqs = results
      .flat()
      .map((x) => x.seq)
      .sort((x, y) => x - y);
    expect(seqs).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    await Promise.all([a.close(), b.close()]);
  });

  it('announces each append in one notification, and treats one it cannot read as a possible gap', async () => {
    const e = engine();
    await e.ready();
    const live = liveCollector();
    let gapSignals = 0;
    const gapWaiters = new Waiters(() => `gap signals ${gapSignals}`);
    await e.subscribe('hana', live.listener, () => {
      gapSignals++;
      gapWaiters.notify();
    });
    const channel = connectionOf(e).keys.user('hana').live;
    const spy = redis.client();
    const notifications: string[] = [];
    spy.on('smessage', (_channel: string, message: string) => notifications.push(message));
    await spy.ssubscribe(channel);

    await e.append('hana', [thinking('line one\nline two'), thinking('b'), thinking('c')]);
    await live.until(3);
    expect(live.entries.map((x) => [x.seq, x.type])).toEqual([
      [1, 'agent_thinking'],
      [2, 'agent_thinking'],
      [3, 'agent_thinking'],
    ]);
    expect(JSON.parse(live.entries[0]!.json).text).toBe('line one\nline two');
    expect(notifications).toHaveLength(1);
    expect(parseNotification(notifications[0]!)).toEqual(live.entries);

    const admin = redis.client();
    await admin.spublish(channel, 'not a notification');
    await gapWaiters.until(() => gapSignals === 1, 5000, 'a gap signal');
    expect(live.entries).toHaveLength(3);
    spy.disconnect();
    admin.disconnect();
    await e.close();
  });

  it('delivers any batch of texts exactly as appended and read back (property, one notification per append)', async () => {
    const e = engine();
    await e.ready();
    const live = liveCollector();
    const notifications: string[] = [];
    const notified = new Waiters(() => `notifications ${notifications.length}`);
    const spy = redis.client();
    spy.on('smessage', (_channel: string, message: string) => {
      notifications.push(message);
      notified.notify();
    });
    await spy.ssubscribe(connectionOf(e).keys.user('ivy').live);
    await e.subscribe('ivy', live.listener);
    let appends = 0;
    // Any code points: newlines, spaces, quotes, lone surrogates (JSON escapes what it must).
    const texts = fc.array(fc.string({ unit: 'binary', maxLength: 40 }), { minLength: 1, maxLength: 8 });
    await fc.assert(
      fc.asyncProperty(texts, async (batch) => {
        const appended = await e.append(
          'ivy',
          batch.map((text) => thinking(text)),
        );
        appends++;
        await live.until(appended.at(-1)!.seq);
        const delivered = live.entries.slice(-batch.length);
        expect(delivered).toEqual(appended);
        expect(delivered.map((x) => JSON.parse(x.json).text)).toEqual(batch);
        expect(await e.read('ivy', appended[0]!.seq, appended.at(-1)!.seq)).toEqual(appended.map(({ epoch: _epoch, ...rest }) => rest));
      }),
      { numRuns: 60 },
    );
    await notified.until(() => notifications.length >= appends, 5000, 'every notification');
    expect(notifications).toHaveLength(appends);
    spy.disconnect();
    await e.close();
  });

  it('reads only notifications in its own format', () => {
    expect(parseNotification('e1 1700000000000\n7 agent_started {"type":"agent_started","seq":7}')).toEqual([
      { epoch: 'e1', appendedAt: 1700000000000, seq: 7, type: 'agent_started', json: '{"type":"agent_started","seq":7}' },
    ]);
    for (const bad of [
      '',
      'e1 1700000000000',
      'e1 x\n1 agent_started {}',
      'e1 1\nseven agent_started {}',
      'e1 1\n7 agent_started',
      'e1 7 agent_started 1 {}',
    ]) {
      expect(parseNotification(bad), bad).toBeNull();
    }
  });

  it("reads a notification's epoch and last seq without its entries, or nothing from one not in its format", () => {
    const message = 'e1 1700000000000\n7 agent_thinking {"type":"agent_thinking","seq":7}\n8 agent_thinking {"type":"agent_thinking","seq":8,"text":"a b\\nc"}';
    expect(notificationSpan(message)).toEqual({ epoch: 'e1', lastSeq: 8 });
    expect(notificationSpan(message)!.lastSeq).toBe(parseNotification(message)!.at(-1)!.seq);
    for (const bad of ['', 'e1 1700000000000', 'e1\n7 agent_started {}', 'e1 1\nseven agent_started {}', 'e1 1\n7']) {
      expect(notificationSpan(bad), bad).toBeNull();
    }
  });

  it('writes agent_started once when a run re-sends it with its failure (first append applied, reply lost)', async () => {
    const e = engine();
    await e.ready();
    const started: EventBody = { type: 'agent_started', message_id: 'm1', text: 'go', run_id: 'r7', thread_id: 't1', ts: new Date(0).toISOString() };
    const failed: EventBody = { type: 'agent_error', code: 'agent_failed', message: 'x', run_id: 'r7', thread_id: 't1', ts: new Date(0).toISOString() };
    const live = liveCollector();
    await e.subscribe('ines', live.listener);
    await e.append('ines', [started, thinking('step', 'r7')], { runId: 'r7', terminal: false, appendId: 'a1' });
    // The run never saw that reply: it ends with agent_started and its failure, under a new id.
    const second = await e.append('ines', [started, failed], { runId: 'r7', terminal: true, appendId: 'a2' });
    expect(second.map((x) => [x.seq, x.type])).toEqual([[3, 'agent_error']]);
    // A retry of that append (its reply lost too) answers the same.
    expect((await e.append('ines', [started, failed], { runId: 'r7', terminal: true, appendId: 'a2' })).map((x) => x.seq)).toEqual([3]);
    expect((await e.read('ines', 1, 10)).map((x) => x.type)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    await live.until(3);
    expect(live.entries.map((x) => x.seq)).toEqual([1, 2, 3]);
    // Another run's first append keeps its agent_started.
    const other = await e.append('ines', [{ ...started, run_id: 'r8' }], { runId: 'r8', terminal: false, appendId: 'b1' });
    expect(other.map((x) => x.type)).toEqual(['agent_started']);
    await e.close();
  });

  const RETENTION_MS = 60_000;
  /** An engine with a retention of RETENTION_MS, the user's keys and a client of the test's own, closed after `body`. */
  async function withRetention(userId: string, body: (t: { e: RedisEngine; keys: UserKeys; admin: Redis }) => Promise<void>): Promise<void> {
    const e = engine({ retentionMs: RETENTION_MS });
    const admin = redis.client();
    try {
      await e.ready();
      await body({ e, keys: connectionOf(e).keys.user(userId), admin });
    } finally {
      admin.disconnect();
      await e.close();
    }
  }

  // The thread marks too: a deletion's mark that expired before the log would bring the deleted
  // thread back while the log still holds its events (a user who keeps chatting past the age).
  it('keeps the log, its meta, the run record and the thread marks for the retention after every append (the TTL slides)', () =>
    withRetention('jon', async ({ e, keys, admin }) => {
      await admin.hset(keys.threadMarks, 'gone', '{"epoch":"e","deletedThrough":1}');
      await admin.pexpire(keys.threadMarks, keyTtlMs(RETENTION_MS));
      await e.append('jon', [thinking('a')], { runId: 'r1', terminal: false, appendId: 'a1' });
      const kept = [keys.meta, keys.log, keys.run('r1'), keys.threadMarks];
      for (const key of kept) {
        expect(await admin.pttl(key)).toBeGreaterThan(RETENTION_MS);
        // As if most of the retention had passed since.
        await admin.pexpire(key, 1000);
      }
      await e.append('jon', [thinking('b')], { runId: 'r1', terminal: false, appendId: 'a2' });
      for (const key of kept) {
        expect(await admin.pttl(key)).toBeGreaterThan(RETENTION_MS);
        expect(await admin.pttl(key)).toBeLessThanOrEqual(keyTtlMs(RETENTION_MS));
      }
    }));

  // Four PEXPIREs on every append were a tenth of redis-server's CPU per append; the renewal now
  // costs it a PTTL of the log and one of the run record.
  it('renews the TTLs only once the log has less than the retention left, and then the log, its meta and marks at once', () =>
    withRetention('jo', async ({ e, keys, admin }) => {
      await e.append('jo', [thinking('a')], { runId: 'r1', terminal: false, appendId: 'a1' });
      await admin.hset(keys.threadMarks, 'gone', '{"epoch":"e","deletedThrough":1}');
      const kept = [keys.meta, keys.log, keys.run('r1'), keys.threadMarks];
      // More than the retention left on the log: this append keeps whatever the keys have.
      const left = [RETENTION_MS + 5000, RETENTION_MS + 4000, RETENTION_MS + 3000, RETENTION_MS + 2000];
      for (const [index, key] of kept.entries()) await admin.pexpire(key, left[index]!);
      await e.append('jo', [thinking('b')], { runId: 'r1', terminal: false, appendId: 'a2' });
      for (const [index, key] of kept.entries()) {
        const ttl = await admin.pttl(key);
        expect(ttl).toBeLessThanOrEqual(left[index]!);
        expect(ttl).toBeGreaterThan(left[index]! - 2000);
      }
      // Less than the retention left on the log: it, its meta and the marks are renewed to keyTtlMs;
      // the run record, with more than the retention left, keeps its own.
      await admin.pexpire(keys.log, RETENTION_MS - 1);
      await e.append('jo', [thinking('c')], { runId: 'r1', terminal: false, appendId: 'a3' });
      for (const key of [keys.meta, keys.log, keys.threadMarks]) expect(await admin.pttl(key)).toBeGreaterThan(keyTtlMs(RETENTION_MS) - 2000);
      expect(await admin.pttl(keys.run('r1'))).toBeLessThanOrEqual(left[2]!);
      expect(await admin.pttl(keys.run('r1'))).toBeGreaterThan(RETENTION_MS);
    }));

  it('leaves no key of an append without a TTL: a log or run record it creates, or a log that lost its TTL', () =>
    withRetention('jas', async ({ e, keys, admin }) => {
      // The first append creates the log, its meta and (no enqueue before it) the run record.
      await e.append('jas', [thinking('a')], { runId: 'r1', terminal: false, appendId: 'a1' });
      // A second run's first append, while the log is fresh: its record is created now.
      await e.append('jas', [thinking('b', 'r2')], { runId: 'r2', terminal: false, appendId: 'b1' });
      for (const key of [keys.meta, keys.log, keys.run('r1'), keys.run('r2')]) expect(await admin.pttl(key)).toBeGreaterThan(RETENTION_MS);
      await admin.persist(keys.log);
      await e.append('jas', [thinking('c')], { runId: 'r1', terminal: false, appendId: 'a2' });
      expect(await admin.pttl(keys.log)).toBeGreaterThan(RETENTION_MS);
    }));

  // Found in review: renewing a run record only with the log (or on its run's first append) let
  // it expire while another run's appends kept renewing the log; a retry of its terminal append
  // then went through the fence again.
  it("renews a run record by its own TTL, when another run's append renewed the log", () =>
    withRetention('jay', async ({ e, keys, admin }) => {
      await e.append('jay', [thinking('a', 'r1')], { runId: 'r1', terminal: false, appendId: 'a1' });
      // r2's append renewed the log since; r1's record has had its time run down meanwhile.
      await e.append('jay', [thinking('b', 'r2')], { runId: 'r2', terminal: false, appendId: 'b1' });
      await admin.pexpire(keys.run('r1'), RETENTION_MS - 5000);
      expect(await admin.pttl(keys.log)).toBeGreaterThan(RETENTION_MS);
      await e.append('jay', [thinking('c', 'r1')], { runId: 'r1', terminal: true, appendId: 'a2' });
      expect(await admin.pttl(keys.run('r1'))).toBeGreaterThan(RETENTION_MS);
    }));

  it('gives a run record that a fenced append without an append id creates (a run_lost append) a TTL', () =>
    withRetention('jem', async ({ e, keys, admin }) => {
      await e.append('jem', [thinking('a', 'r1')], { runId: 'r1', terminal: false, appendId: 'a1' });
      // r9's record expired between the sweeper's read and its run_lost append.
      await e.append('jem', [thinking('lost', 'r9')], { runId: 'r9', terminal: true });
      expect(await admin.hget(keys.run('r9'), 'state')).toBe('ended');
      expect(await admin.pttl(keys.run('r9'))).toBeGreaterThan(RETENTION_MS);
    }));

  it('marks no run started or ended by an append that failed part-way (Redis does not roll scripts back)', async () => {
    const e = engine();
    await e.ready();
    const keys = connectionOf(e).keys.user('kim');
    const admin = redis.client();
    await e.append('kim', [thinking('earlier', 'r0')]);
    // The log of the wrong type: the script fails at its first XADD, after its reads.
    await admin.del(keys.log);
    await admin.set(keys.log, 'not a stream');
    const started: EventBody = { type: 'agent_started', message_id: 'm1', text: 'go', run_id: 'r9', thread_id: 't1', ts: new Date(0).toISOString() };
    const failed: EventBody = { type: 'agent_error', code: 'agent_failed', message: 'x', run_id: 'r9', thread_id: 't1', ts: new Date(0).toISOString() };
    const fence = { runId: 'r9', terminal: true, appendId: 'a1' };
    await expect(e.append('kim', [started, failed], fence)).rejects.toThrow(/WRONGTYPE/);
    expect(await admin.hgetall(keys.run('r9'))).toEqual({});
    await admin.del(keys.log);
    // Tried again, the append is neither fenced off nor stripped of its agent_started.
    expect((await e.append('kim', [started, failed], fence)).map((x) => [x.seq, x.type])).toEqual([
      [2, 'agent_started'],
      [3, 'agent_error'],
    ]);
    admin.disconnect();
    await e.close();
  });

  describe('appends of one tick', () => {
    /** Script calls Redis has run so far (EVALSHA, and EVAL when it lacked the script). */
    async function scriptCalls(admin: Redis): Promise<number> {
      const stats = await admin.info('commandstats');
      let calls = 0;
      for (const match of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(match[1]);
      return calls;
    }

    it('go to Redis in one script call, each answered with its own seqs, in the order made', () =>
      withEngine(async (e, admin) => {
        await e.append('warm', [thinking('loads the script')]);
        const before = await scriptCalls(admin);
        const [a1, b, a2, c] = await Promise.all([
          e.append('ana', [thinking('a1'), thinking('a2')]),
          e.append('ben', [thinking('b1')], { runId: 'r1', terminal: false }),
          e.append('ana', [thinking('a3')]),
          e.append('cy', [thinking('c1'), thinking('c2'), thinking('c3')]),
        ]);
        expect(await scriptCalls(admin)).toBe(before + 1);
        expect([a1, b, a2, c].map((entries) => entries.map((x) => [x.seq, JSON.parse(x.json).text]))).toEqual([
          [
            [1, 'a1'],
            [2, 'a2'],
          ],
          [[1, 'b1']],
          [[3, 'a3']],
          [
            [1, 'c1'],
            [2, 'c2'],
            [3, 'c3'],
          ],
        ]);
        expect((await e.read('ana', 1, 3)).map((x) => JSON.parse(x.json).text)).toEqual(['a1', 'a2', 'a3']);
      }));

    it('are independent: one that fails or is fenced off does not fail the others in its call', () =>
      withEngine(async (e, admin) => {
        const keys = (user: string) => connectionOf(e).keys.user(user);
        await e.append('dee', [thinking('earlier')]);
        await e.append('eli', [thinking('ended', 'r2')], { runId: 'r2', terminal: true });
        await admin.del(keys('dee').log);
        await admin.set(keys('dee').log, 'not a stream');
        const before = await scriptCalls(admin);
        const [broken, fenced, fine] = await Promise.allSettled([
          e.append('dee', [thinking('x')]),
          e.append('eli', [thinking('late', 'r2')], { runId: 'r2', terminal: false }),
          e.append('fay', [thinking('f1')]),
        ]);
        expect(await scriptCalls(admin)).toBe(before + 1);
        expect(broken).toMatchObject({ status: 'rejected', reason: expect.objectContaining({ message: expect.stringMatching(/WRONGTYPE/) }) });
        expect(fenced).toMatchObject({ status: 'rejected', reason: new RunEndedError('r2') });
        expect(fine.status === 'fulfilled' && fine.value.map((x) => x.seq)).toEqual([1]);
        expect((await e.read('fay', 1, 1)).map((x) => JSON.parse(x.json).text)).toEqual(['f1']);
      }));

    it('fail together, and only them, when their call cannot be made or its reply is not one per append', () =>
      withEngine(async (e) => {
        const script = vi.spyOn(connectionOf(e), 'script');
        script.mockImplementationOnce(() => {
          throw new Error('thrown while sending');
        });
        const thrown = await Promise.allSettled([e.append('gus', [thinking('g1')]), e.append('hal', [thinking('h1')])]);
        expect(thrown.map((x) => x.status === 'rejected' && (x.reason as Error).message)).toEqual(['thrown while sending', 'thrown while sending']);
        script.mockResolvedValueOnce(null);
        const unanswered = await Promise.allSettled([e.append('gus', [thinking('g2')]), e.append('hal', [thinking('h2')])]);
        expect(unanswered.map((x) => x.status === 'rejected' && (x.reason as Error).message)).toEqual([
          'Redis answered 2 appends with null',
          'Redis answered 2 appends with null',
        ]);
        script.mockResolvedValueOnce([['epoch', 1, 0], 'not an append reply']);
        const [good, bad] = await Promise.allSettled([e.append('gus', [thinking('g3')]), e.append('hal', [thinking('h3')])]);
        expect(good.status).toBe('fulfilled');
        expect(bad.status === 'rejected' && (bad.reason as Error).message).toMatch(/^Redis answered the append with "not an append reply"/);
        script.mockRestore();
        // The engine goes on: nothing of the failed calls was written, the next append is the first.
        expect((await e.append('gus', [thinking('g4')])).map((x) => x.seq)).toEqual([1]);
      }));

    it("go in more calls past a call's bounds (appends, events and size), an append never split", () =>
      withEngine(async (e, admin) => {
        await e.append('warm', [thinking('loads the script')]);
        const appends = MAX_APPENDS_PER_SCRIPT + 1;
        let before = await scriptCalls(admin);
        await Promise.all(Array.from({ length: appends }, (_, i) => e.append(`u${i}`, [thinking('one')])));
        expect(await scriptCalls(admin)).toBe(before + 2);
        // Three appends of more than a third of the event bound each: two fit in a call, not three.
        const events = Math.floor(MAX_EVENTS_PER_SCRIPT / 3) + 1;
        before = await scriptCalls(admin);
        const written = await Promise.all(
          ['v1', 'v2', 'v3'].map((user) =>
            e.append(
              user,
              Array.from({ length: events }, (_, i) => thinking(`e${i}`)),
            ),
          ),
        );
        expect(await scriptCalls(admin)).toBe(before + 2);
        expect(written.map((entries) => entries.length)).toEqual([events, events, events]);
        // Two appends of more than half the size bound each: one call each.
        const large = thinking('x'.repeat(MAX_SIZE_PER_SCRIPT / 2));
        before = await scriptCalls(admin);
        await Promise.all([e.append('w1', [large]), e.append('w2', [large])]);
        expect(await scriptCalls(admin)).toBe(before + 2);
      }));
  });

  describe('appends of one turn of the event loop', () => {
    /** Spies on the engine's script calls; the first one is sent, and its reply held until `answer()`. */
    function holdFirstCall(e: RedisEngine) {
      const connection = connectionOf(e);
      const original = connection.script.bind(connection);
      let answer!: () => void;
      const answered = new Promise<void>((resolve) => (answer = resolve));
      const script = vi.spyOn(connection, 'script');
      script.mockImplementationOnce((...args) => {
        const reply = original(...args);
        return answered.then(() => reply);
      });
      return { script, answer };
    }

    /**
     * Runs each job in a callback of its own (a tick of its own), all in one turn of the event
     * loop: immediates queued together run in one check phase, whatever the clock does (timers
     * armed in a loop may straddle a millisecond and fire in two turns). Resolves with their results.
     */
    function inOneTurn<T>(jobs: readonly (() => T)[]): Promise<T[]> {
      return new Promise((resolve) => {
        const results: T[] = [];
        for (const job of jobs) {
          setImmediate(() => {
            results.push(job());
            if (results.length === jobs.length) resolve(results);
          });
        }
      });
    }

    it('go at the end of their tick while no append call is unanswered', () =>
      withEngine(async (e) => {
        const script = vi.spyOn(connectionOf(e), 'script');
        const written = e.append('ida', [thinking('i1')]);
        // A tick later the call is made: no wait for the turn's end on an idle gateway.
        await new Promise<void>((resolve) => process.nextTick(resolve));
        expect(script).toHaveBeenCalledTimes(1);
        expect((await written).map((x) => x.seq)).toEqual([1]);
      }));

    it('share one script call while one is unanswered, even when each came in a tick of its own', () =>
      withEngine(async (e) => {
        const { script, answer } = holdFirstCall(e);
        const first = e.append('jo', [thinking('j1')]);
        await new Promise<void>((resolve) => process.nextTick(resolve));
        expect(script).toHaveBeenCalledTimes(1);
        const later = await inOneTurn(['jo', 'kim', 'lee'].map((user) => () => e.append(user, [thinking(`${user}-late`)])));
        // The turn's flush was queued by the first of them, so it runs before this.
        await new Promise<void>((resolve) => setImmediate(resolve));
        expect(script).toHaveBeenCalledTimes(2);
        expect(script.mock.calls[1]![1]).toHaveLength(3 * 4);
        answer();
        expect((await first).map((x) => x.seq)).toEqual([1]);
        expect((await Promise.all(later)).map((entries) => entries.map((x) => x.seq))).toEqual([[2], [1], [1]]);
      }));

    it('go at the end of a tick, not of the turn, once the oldest queued one waited MAX_QUEUE_WAIT_MS', () =>
      withEngine(async (e) => {
        const { script, answer } = holdFirstCall(e);
        let clock = 1000;
        const now = vi.spyOn(performance, 'now').mockImplementation(() => clock);
        try {
          const first = e.append('mo', [thinking('m1')]);
          await new Promise<void>((resolve) => process.nextTick(resolve));
          expect(script).toHaveBeenCalledTimes(1);
          // Four appends in one turn; the clock says when each was made.
          const callsBefore: number[] = [];
          const runs: [string, number][] = [
            ['mo', 0],
            ['nia', MAX_QUEUE_WAIT_MS / 2],
            ['ola', MAX_QUEUE_WAIT_MS],
            ['pat', MAX_QUEUE_WAIT_MS + 0.1],
          ];
          const later = await inOneTurn(
            runs.map(([user, at]) => () => {
              clock = 1000 + at;
              callsBefore.push(script.mock.calls.length);
              return e.append(user, [thinking(`${user}-late`)]);
            }),
          );
          // The third append found the oldest queued one MAX_QUEUE_WAIT_MS old: the three queued went
          // at the end of its tick, before the fourth callback ran; the fourth waits for the turn's end.
          expect(callsBefore).toEqual([1, 1, 1, 2]);
          expect(script.mock.calls[1]![1]).toHaveLength(3 * 4);
          await new Promise<void>((resolve) => setImmediate(resolve));
          expect(script).toHaveBeenCalledTimes(3);
          expect(script.mock.calls[2]![1]).toHaveLength(4);
          answer();
          expect((await first).map((x) => x.seq)).toEqual([1]);
          expect((await Promise.all(later)).map((entries) => entries.map((x) => x.seq))).toEqual([[2], [1], [1], [1]]);
        } finally {
          now.mockRestore();
        }
      }));
  });

  it('trims to the retention count and changes the epoch only when the log was lost', async () => {
    const e = engine({ retentionEvents: 10 });
    await e.ready();
    const before = await e.head('frank');
    for (let i = 0; i < 30; i++) await e.append('frank', [thinking(`m${i}`)]);
    const retained = await e.read('frank', 1, 30);
    expect(retained.map((x) => x.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 21 + i));
    expect((await e.head('frank')).epoch).toBe(before.epoch);
    const admin = redis.client();
    await admin.del(connectionOf(e).keys.user('frank').meta, connectionOf(e).keys.user('frank').log);
    admin.disconnect();
    const after = await e.head('frank');
    expect(after.epoch).not.toBe(before.epoch);
    expect(after.lastSeq).toBe(0);
    await e.close();
  });

  it('tells subscribers to check for gaps after its pub/sub connection was killed', async () => {
    const e = engine();
    await e.ready();
    const live = liveCollector();
    let gapSignals = 0;
    let onGap = () => {};
    const gap = new Promise<void>((resolve) => (onGap = resolve));
    await e.subscribe('gina', live.listener, () => {
      gapSignals++;
      onGap();
    });
    const admin = redis.client();
    await admin.client('KILL', 'TYPE', 'pubsub');
    await gap;
    expect(gapSignals).toBeGreaterThanOrEqual(1);
    // Resubscribed: live delivery works again.
    await e.append('gina', [thinking('after')]);
    await live.until(1);
    admin.disconnect();
    await e.close();
  });

  describe("a node's own appends", () => {
    /**
     * Node `a` behind a proxy (so its pub/sub link can be held up) and node `b` on the same logs,
     * `a` subscribed to `user`, with one entry delivered: the notification told `a` where its
     * subscribers stand, so its next append can be handed over from the reply.
     */
    async function twoNodesOnProxy(user: string) {
      const proxy = await TcpProxy.start(redis.port);
      const a = engine({ url: `redis://127.0.0.1:${proxy.port}` });
      const b = engine({}, `t${prefixCounter}`);
      await Promise.all([a.ready(), b.ready()]);
      const live = liveCollector();
      await a.subscribe(user, live.listener);
      await b.append(user, [thinking('1')]);
      await live.until(1);
      const admin = redis.client();
      const link = await pubSubLink(proxy, admin);
      admin.disconnect();
      const close = async () => {
        proxy.unstall();
        await Promise.all([a.close(), b.close()]);
        await proxy.close();
      };
      return { a, b, live, proxy, link, close };
    }

    it('are handed to its subscribers from the append reply, without waiting for the notification, and once', async () => {
      const { a, b, live, proxy, link, close } = await twoNodesOnProxy('kai');
      link.stalledToClient = true;
      await a.append('kai', [thinking('2'), thinking('3')]);
      expect(live.entries.map((x) => x.seq)).toEqual([1, 2, 3]);
      await proxy.waitFor(() => link.heldBytesToClient > 0, 5000, 'the notification to be held');
      proxy.unstall();
      // Another node's append is notified after that one, on the same link: its echo came first.
      await b.append('kai', [thinking('4')]);
      await live.until(4);
      expect(live.entries.map((x) => [x.seq, JSON.parse(x.json).text])).toEqual([
        [1, '1'],
        [2, '2'],
        [3, '3'],
        [4, '4'],
      ]);
      await close();
    });

    it("wait behind another node's earlier append whose notification has not arrived yet", async () => {
      const { a, b, live, proxy, link, close } = await twoNodesOnProxy('lou');
      link.stalledToClient = true;
      await b.append('lou', [thinking('2')]);
      await proxy.waitFor(() => link.heldBytesToClient > 0, 5000, "the other node's notification to be held");
      await a.append('lou', [thinking('3')]);
      expect(live.entries.map((x) => x.seq)).toEqual([1]);
      proxy.unstall();
      await live.until(3);
      await b.append('lou', [thinking('4')]);
      await live.until(4);
      expect(live.entries.map((x) => x.seq)).toEqual([1, 2, 3, 4]);
      await close();
    });
  });

  it('is unavailable while Redis is down, fails fast, and recovers without a restart', async () => {
    const e = engine();
    await e.ready();
    await e.append('hank', [thinking('before')]);
    await redis.stopProcess();
    await expect(e.append('hank', [thinking('during')])).rejects.toThrow();
    // The append can be refused before the client has seen the socket close: wait for that.
    await vi.waitFor(() => expect(e.available).toBe(false), { timeout: 5000, interval: 10 });
    await redis.startProcess();
    // Reconnection is driven by ioredis' retry strategy; wait for the 'ready' events.
    const client = connectionOf(e).client;
    if (client.status !== 'ready') await new Promise((r) => client.once('ready', r));
    const head = await e.head('hank');
    expect(head.lastSeq).toBe(1);
    expect((await e.read('hank', 1, 1))[0]!.json).toContain('before');
    await e.close();
  });
});
