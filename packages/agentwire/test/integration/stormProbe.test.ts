import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { StormChecker, type ConnectionChecker } from '../../../storm/src/checker.js';
import { GUARANTEE_IDS, type GuaranteeId } from '../../../storm/src/guarantees.js';
import { parseSourceAddresses, planWorkers } from '../../../storm/src/plan.js';
import type { StormReport } from '../../../storm/src/report.js';
import { LogHistogram, percentile } from '../../../storm/src/stats.js';
import { barChartSvg, escapeXml, histogramSvg, lineChartSvg } from '../../../storm/src/svg.js';
import type { StormOptions } from '../../../storm/src/types.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { startGateway, TEST_SECRET, type TestGateway } from '../helpers/gateway.js';

// ---------------------------------------------------------------------------------------------
// Synthetic frame streams for the checker
// ---------------------------------------------------------------------------------------------

const TS = '2026-01-01T00:00:00.000Z';
type Frame = Record<string, unknown>;

function readyFrame(user: string, lastSeq = 0, extra: Frame = {}): string {
  return JSON.stringify({
    type: 'connection_ready',
    protocol: 'agentwire.v1',
    connection_id: 'srv-1',
    user_id: user,
    epoch: 'e-1',
    last_seq: lastSeq,
    resumed: false,
    replayed: 0,
    heartbeat_ms: 25000,
    server_time: TS,
    ...extra,
  });
}

/** The demo agent's six events of one run, without seq. */
function runBodies(runId: string, threadId: string, messageId: string): Frame[] {
  const base = { run_id: runId, thread_id: threadId, ts: TS };
  return [
    { type: 'agent_started', ...base, message_id: messageId, text: 'what is 7*6?' },
    { type: 'agent_thinking', ...base, text: 'Reading your message (3 words).' },
    { type: 'tool_executing', ...base, call_id: `${runId}-c1`, tool: 'calculator', args: { expression: '7*6' } },
    { type: 'tool_completed', ...base, call_id: `${runId}-c1`, tool: 'calculator', ok: true, result: 42 },
    { type: 'agent_thinking', ...base, text: 'Writing the answer.' },
    { type: 'agent_completed', ...base, status: 'completed', text: '7*6 = 42' },
  ];
}

/** Gives `bodies` consecutive seqs from `firstSeq`, as JSON text. */
function numbered(bodies: Frame[], firstSeq: number): string[] {
  return bodies.map((body, i) => {
    const { type, ...rest } = body;
    return JSON.stringify({ type, seq: firstSeq + i, ...rest });
  });
}

function ack(id: string, runId: string, threadId: string, status = 'started'): string {
  return JSON.stringify({ type: 'ack', id, run_id: runId, thread_id: threadId, status });
}

/** Counts of the guarantees that broke (only those above zero). */
function broken(checker: StormChecker): Partial<Record<GuaranteeId, number>> {
  return Object.fromEntries(GUARANTEE_IDS.filter((id) => checker.counts[id] > 0).map((id) => [id, checker.counts[id]]));
}

function details(checker: StormChecker, id: GuaranteeId): string[] {
  return checker.examples[id].map((v) => v.detail);
}

/** Opens `count` ready connections of `user` (labels `<user>-c<i>`). */
function connect(checker: StormChecker, user: string, count: number, lastSeq = 0): ConnectionChecker[] {
  return Array.from({ length: count }, (_, i) => {
    const conn = checker.connection(`${user}-c${i}`, user);
    conn.opened(0, 'agentwire.v1');
    conn.frame(readyFrame(user, lastSeq), 1);
    return conn;
  });
}

function feed(conns: ConnectionChecker[], frames: string[]): void {
  for (const conn of conns) for (const frame of frames) conn.frame(frame, 2);
}

/** One user, one message m1 sent and acked on conns[0] as run r1 on thread t1. */
function oneRun(connections = 2) {
  const checker = new StormChecker();
  const conns = connect(checker, 'alice', connections);
  conns[0]!.sent('m1', 't1', 1);
  conns[0]!.frame(ack('m1', 'r1', 't1'), 2);
  return { checker, conns, bodies: runBodies('r1', 't1', 'm1') };
}

/** `runBodies` with the answer streamed as the demo agent does: a delta per word before agent_completed. */
function streamedRunBodies(runId: string, threadId: string, messageId: string, words = ['7*6', ' =', ' 42']): Frame[] {
  const bodies = runBodies(runId, threadId, messageId);
  const base = { run_id: runId, thread_id: threadId, ts: TS };
  return [...bodies.slice(0, -1), ...words.map((text) => ({ type: 'agent_text_delta', ...base, text })), bodies.at(-1)!];
}

describe('storm checker: streamed answers (stream_whole)', () => {
  it('accepts a run whose deltas concatenate to agent_completed.text, also on a connection that joined mid-run', () => {
    const { checker, conns } = oneRun(2);
    const frames = numbered(streamedRunBodies('r1', 't1', 'm1'), 1);
    feed(conns, frames);
    const late = checker.connection('alice-late', 'alice');
    late.opened(0, 'agentwire.v1');
    late.frame(readyFrame('alice', 6), 1);
    for (const frame of frames.slice(6)) late.frame(frame, 2);
    checker.finish(10);
    expect(broken(checker)).toEqual({ run_order: 1 }); // the late connection's first event is not agent_started
  });

  it('reports a fragment missing from, or repeated in, the answer', () => {
    for (const words of [
      ['7*6', ' 42'],
      ['7*6', ' =', ' =', ' 42'],
    ]) {
      const { checker, conns } = oneRun(1);
      feed(conns, numbered(streamedRunBodies('r1', 't1', 'm1', words), 1));
      checker.finish(10);
      expect(broken(checker)).toEqual({ stream_whole: 1 });
      expect(details(checker, 'stream_whole')[0]).toMatch(/^agent_completed\.text "7\*6 = 42" is not its deltas "7\*6/);
    }
  });

  it('reports an empty delta as a format break', () => {
    const { checker, conns } = oneRun(1);
    feed(conns, numbered(streamedRunBodies('r1', 't1', 'm1', ['7*6 = 42', '']), 1));
    checker.finish(10);
    expect(broken(checker)).toEqual({ frame_format: 1 });
  });
});

describe('storm checker: a correct stream', () => {
  it('breaks nothing for two runs seen by two connections', () => {
    const { checker, conns, bodies } = oneRun(2);
    feed(conns, numbered(bodies, 1));
    conns[1]!.sent('m2', 't2', 3);
    conns[1]!.frame(ack('m2', 'r2', 't2', 'started'), 3);
    feed(conns, numbered(runBodies('r2', 't2', 'm2'), 7));
    expect(checker.settled()).toBe(true);
    checker.finish(10);
    expect(broken(checker)).toEqual({});
    expect(checker.runsAcked).toBe(2);
    expect(checker.runsDone).toBe(2);
    expect(checker.eventsReceived).toBe(24);
    expect(conns.map((c) => c.lastSeq)).toEqual([12, 12]);
  });

  it('compares a connection that joined later only on the seq range it was connected for', () => {
    const { checker, conns, bodies } = oneRun(1);
    feed(conns, numbered(bodies, 1));
    const [late] = connect(checker, 'alice', 1, 6).map((c) => c);
    conns[0]!.sent('m2', 't1', 3);
    conns[0]!.frame(ack('m2', 'r2', 't1'), 3);
    feed([conns[0]!, late!], numbered(runBodies('r2', 't1', 'm2'), 7));
    checker.finish(10);
    expect(broken(checker)).toEqual({});
    expect(late!.readyLastSeq).toBe(6);
    expect(late!.lastSeq).toBe(12);
  });

  it('accepts interleaved runs of different threads and queued runs of one thread (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.nat(), { maxLength: 80 }),
        (threadOfRun, connections, picks) => {
          const checker = new StormChecker();
          const conns = connect(checker, 'alice', connections);
          const queues = new Map<number, Frame[]>();
          threadOfRun.forEach((thread, n) => {
            const conn = conns[n % connections]!;
            conn.sent(`m${n}`, `t${thread}`, 1);
            conn.frame(ack(`m${n}`, `r${n}`, `t${thread}`, n === 0 ? 'started' : 'queued'), 1);
            queues.set(thread, [...(queues.get(thread) ?? []), ...runBodies(`r${n}`, `t${thread}`, `m${n}`)]);
          });
          const merged = mergeQueues([...queues.values()], picks);
          feed(conns, numbered(merged, 1));
          checker.finish(5);
          expect(broken(checker)).toEqual({});
          expect(checker.runsDone).toBe(threadOfRun.length);
        },
      ),
      { numRuns: 100 },
    );
  });
});

/** Interleaves queues, keeping each queue's order; `picks` choose which queue goes next. */
function mergeQueues(queues: Frame[][], picks: number[]): Frame[] {
  const rest = queues.map((q) => [...q]);
  const out: Frame[] = [];
  let i = 0;
  while (rest.some((q) => q.length > 0)) {
    const live = rest.filter((q) => q.length > 0);
    out.push(live[(picks[i++] ?? 0) % live.length]!.shift()!);
  }
  return out;
}

describe('storm checker: each violation kind', () => {
  it('ready_first: an event before connection_ready', () => {
    const checker = new StormChecker();
    const conn = checker.connection('c0', 'alice');
    conn.opened(0, 'agentwire.v1');
    conn.frame(numbered(runBodies('r1', 't1', 'm1'), 1)[0]!, 1);
    conn.frame(readyFrame('alice', 1), 2);
    expect(broken(checker)).toEqual({ ready_first: 1 });
    expect(details(checker, 'ready_first')[0]).toContain('frame 1 is agent_started (seq 1) but no connection_ready came before it');
  });

  it('ready_first: a second connection_ready', () => {
    const checker = new StormChecker();
    const [conn] = connect(checker, 'alice', 1);
    conn!.frame(readyFrame('alice'), 3);
    expect(broken(checker)).toEqual({ ready_first: 1 });
    expect(details(checker, 'ready_first')[0]).toContain('second connection_ready');
  });

  it('ready_first: a connection that failed, one that timed out and one never ready at the end', () => {
    const checker = new StormChecker();
    checker.connection('c0', 'alice').connectFailed(5, 'Unexpected server response: 503');
    const slow = checker.connection('c1', 'alice');
    slow.opened(1, 'agentwire.v1');
    slow.readyTimedOut(9, 5000);
    slow.readyTimedOut(10, 5000);
    const silent = checker.connection('c2', 'alice');
    silent.opened(1, 'agentwire.v1');
    checker.finish(20);
    expect(broken(checker)).toEqual({ ready_first: 3 });
    expect(details(checker, 'ready_first')).toEqual([
      'connection failed before it opened: Unexpected server response: 503',
      'no connection_ready within 5000 ms of opening (0 other frames received)',
      'no connection_ready by the end of the storm (0 frames received)',
    ]);
  });

  it('subprotocol: none or a jwt.* entry selected', () => {
    const checker = new StormChecker();
    checker.connection('c0', 'alice').opened(0, '');
    checker.connection('c1', 'alice').opened(0, 'jwt.abc');
    checker.connection('c2', 'alice').opened(0, 'agentwire.v1');
    expect(broken(checker)).toEqual({ subprotocol: 2 });
  });

  it('seq_contiguous: a gap', () => {
    const { checker, conns, bodies } = oneRun(1);
    const frames = numbered(bodies, 1);
    feed(conns, [...frames.slice(0, 2), ...numbered(bodies.slice(2), 4)]);
    checker.finish(5);
    expect(broken(checker)).toEqual({ seq_contiguous: 1 });
    expect(details(checker, 'seq_contiguous')[0]).toBe('gap: expected seq 3, got 4 (tool_executing); 1 event missing');
  });

  it('seq_contiguous: a duplicate and an event at or before connection_ready.last_seq', () => {
    const { checker, conns, bodies } = oneRun(1);
    const frames = numbered(bodies, 1);
    feed(conns, [frames[0]!, frames[1]!, frames[1]!, ...frames.slice(2)]);
    const [late] = connect(checker, 'alice', 1, 6);
    late!.frame(frames[4]!, 3);
    checker.finish(5);
    expect(broken(checker)).toEqual({ seq_contiguous: 2 });
    expect(details(checker, 'seq_contiguous')).toEqual([
      'duplicate or out of order: seq 2 (agent_thinking) after seq 2',
      'event at or before connection_ready.last_seq: seq 5 (agent_thinking) after seq 6',
    ]);
  });

  it('seq_contiguous: a missing tail (and the run it left unfinished)', () => {
    const { checker, conns, bodies } = oneRun(2);
    const frames = numbered(bodies, 1);
    feed(conns, frames.slice(0, 4));
    feed([conns[0]!], frames.slice(4));
    expect(checker.settled()).toBe(false);
    checker.finish(5);
    expect(broken(checker)).toEqual({ seq_contiguous: 1, runs_complete: 1 });
    expect(details(checker, 'seq_contiguous')[0]).toBe("missing tail: last seq received 4, but the user's newest seq is 6");
    expect(checker.examples.seq_contiguous[0]!.connection).toBe('alice-c1');
  });

  it("same_events: one connection's event differs at a seq", () => {
    const { checker, conns, bodies } = oneRun(2);
    const frames = numbered(bodies, 1);
    feed([conns[0]!], frames);
    const changed = [...frames];
    changed[1] = changed[1]!.replace('Reading your message', 'Something else');
    feed([conns[1]!], changed);
    checker.finish(5);
    expect(broken(checker)).toEqual({ same_events: 1 });
    expect(checker.examples.same_events[0]!.connection).toBe('alice-c1');
    expect(details(checker, 'same_events')[0]).toMatch(/^seq 2 differs from alice-c0: /);
  });

  it('same_events: key order alone is not a difference', () => {
    const { checker, conns, bodies } = oneRun(2);
    feed([conns[0]!], numbered(bodies, 1));
    feed(
      [conns[1]!],
      numbered(bodies, 1).map((text) => JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(text)).reverse()))),
    );
    checker.finish(5);
    expect(broken(checker)).toEqual({});
  });

  it('no_cross_user: connection_ready and another frame naming another user', () => {
    const checker = new StormChecker();
    const conn = checker.connection('c0', 'alice');
    conn.opened(0, 'agentwire.v1');
    conn.frame(readyFrame('bob'), 1);
    conn.frame(JSON.stringify({ type: 'pong', id: 1, server_time: TS, user_id: 'bob' }), 2);
    expect(broken(checker)).toEqual({ no_cross_user: 2 });
  });

  it("no_cross_user: an event of another user's acked run", () => {
    const { checker, conns, bodies } = oneRun(1);
    const [bobConn] = connect(checker, 'bob', 1);
    const frames = numbered(bodies, 1);
    feed(conns, frames);
    bobConn!.frame(frames[0]!, 3);
    bobConn!.frame(frames[1]!, 3);
    checker.finish(5);
    expect(broken(checker)).toEqual({ no_cross_user: 1 });
    expect(details(checker, 'no_cross_user')[0]).toBe('agent_started of run r1 of user alice (seq 1)');
    expect(checker.examples.no_cross_user[0]!.user).toBe('bob');
  });

  it("no_cross_user: agent_started for another user's message before any ack", () => {
    const checker = new StormChecker();
    const [aliceConn] = connect(checker, 'alice', 1);
    const [bobConn] = connect(checker, 'bob', 1);
    aliceConn!.sent('m1', 't1', 1);
    bobConn!.frame(numbered(runBodies('r1', 't1', 'm1'), 1)[0]!, 2);
    expect(broken(checker)).toEqual({ no_cross_user: 1 });
    expect(details(checker, 'no_cross_user')[0]).toBe('agent_started of run r1 for message m1 of user alice (seq 1)');
  });

  it("no_cross_user: settling waits until every connection of the user has another user's run at its tail", () => {
    // Alice's own run r1 ended everywhere; bob's run r2 then leaks into alice's log, and so far
    // only one of her connections got all of it. Judging now would call the rest a missing tail.
    const { checker, conns, bodies } = oneRun(2);
    const [bobConn] = connect(checker, 'bob', 1);
    feed(conns, numbered(bodies, 1));
    bobConn!.sent('m2', 't2', 3);
    bobConn!.frame(ack('m2', 'r2', 't2'), 3);
    const leaked = numbered(runBodies('r2', 't2', 'm2'), 7);
    feed([bobConn!], numbered(runBodies('r2', 't2', 'm2'), 1));
    feed([conns[0]!], leaked);
    feed([conns[1]!], leaked.slice(0, 2));
    expect(checker.settled()).toBe(false);
    feed([conns[1]!], leaked.slice(2));
    expect(checker.settled()).toBe(true);
    checker.finish(5);
    expect(broken(checker)).toEqual({ no_cross_user: 2 });
    expect(checker.examples.no_cross_user.map((v) => [v.connection, v.detail])).toEqual([
      ['alice-c0', 'agent_started of run r2 of user bob (seq 7)'],
      ['alice-c1', 'agent_started of run r2 of user bob (seq 7)'],
    ]);
  });

  it('no_cross_user: a run this user never started, attributed at the end', () => {
    for (const [foreign, expected] of [
      [() => undefined, 'run r9 was never started by this user (first seen as agent_started on alice-c0, seq 1)'],
      [() => 'storm-u7', 'run r9 belongs to storm-u7 (first seen as agent_started on alice-c0, seq 1)'],
    ] as const) {
      const checker = new StormChecker();
      const conns = connect(checker, 'alice', 1);
      feed(conns, numbered(runBodies('r9', 't1', 'mystery'), 1));
      expect(broken(checker)).toEqual({});
      checker.finish(5, foreign);
      expect(broken(checker)).toEqual({ no_cross_user: 1 });
      expect(details(checker, 'no_cross_user')).toEqual([expected]);
    }
  });

  it('run_order: a run that does not begin with agent_started', () => {
    const { checker, conns, bodies } = oneRun(1);
    feed(conns, numbered(bodies.slice(1), 1));
    checker.finish(5);
    expect(broken(checker)).toEqual({ run_order: 1 });
    expect(details(checker, 'run_order')[0]).toBe('first event of the run on this connection is agent_thinking, not agent_started (run r1, seq 1)');
  });

  it('run_order: tool_completed without its tool_executing', () => {
    const { checker, conns, bodies } = oneRun(1);
    feed(conns, numbered([...bodies.slice(0, 2), ...bodies.slice(3)], 1));
    checker.finish(5);
    expect(broken(checker)).toEqual({ run_order: 1 });
    expect(details(checker, 'run_order')[0]).toBe('tool_completed for call r1-c1 without its tool_executing before it (run r1, seq 3)');
  });

  it('run_order: an event after the terminal event, a second terminal, a second agent_started', () => {
    const { checker, conns, bodies } = oneRun(1);
    feed(conns, numbered([bodies[0]!, bodies[0]!, ...bodies.slice(1), bodies[1]!, bodies[5]!], 1));
    checker.finish(5);
    expect(broken(checker)).toEqual({ run_order: 3 });
    expect(details(checker, 'run_order')).toEqual([
      'second agent_started (run r1, seq 2)',
      "agent_thinking after the run's terminal event (run r1, seq 8)",
      "agent_completed after the run's terminal event (run r1, seq 9)",
    ]);
  });

  it('thread_serial: a run starting on a thread whose run has not ended', () => {
    const { checker, conns, bodies } = oneRun(1);
    conns[0]!.sent('m2', 't1', 2);
    conns[0]!.frame(ack('m2', 'r2', 't1', 'queued'), 2);
    const second = runBodies('r2', 't1', 'm2');
    feed(conns, numbered([...bodies.slice(0, 3), ...second, ...bodies.slice(3)], 1));
    checker.finish(5);
    expect(broken(checker)).toEqual({ thread_serial: 1 });
    expect(details(checker, 'thread_serial')[0]).toBe('run r2 started on thread t1 while run r1 had not ended (seq 4)');
  });

  it('runs_complete: an acked run with no event at all, and one that never ends', () => {
    const { checker, conns, bodies } = oneRun(1);
    conns[0]!.sent('m2', 't2', 2);
    conns[0]!.frame(ack('m2', 'r2', 't2'), 2);
    feed(conns, numbered(bodies.slice(0, 5), 1));
    expect(checker.settled()).toBe(false);
    checker.finish(5);
    expect(broken(checker)).toEqual({ runs_complete: 2 });
    expect(details(checker, 'runs_complete')).toEqual([
      'run r1 has no terminal event on this connection (started, never ended)',
      'run r2 (message m2) was acked but none of its events arrived on any connection',
    ]);
    expect(checker.runsDone).toBe(0);
  });

  it('messages_acked: no answer, a duplicate status, a wrong thread, an unknown id, a second ack', () => {
    const checker = new StormChecker();
    const [conn] = connect(checker, 'alice', 1);
    for (const id of ['m1', 'm2', 'm3', 'm4']) conn!.sent(id, 't1', 1);
    conn!.frame(ack('m2', 'r2', 't1', 'duplicate'), 2);
    conn!.frame(ack('m3', 'r3', 'other-thread'), 2);
    conn!.frame(ack('nobody-sent-this', 'r5', 't1'), 2);
    conn!.frame(ack('m4', 'r4', 't1'), 2);
    conn!.frame(ack('m4', 'r4', 't1'), 2);
    expect(checker.settled()).toBe(false);
    checker.finish(5);
    expect(checker.counts.messages_acked).toBe(5);
    expect(details(checker, 'messages_acked')).toEqual([
      'ack for fresh id m2 has status "duplicate", expected started or queued',
      'ack for m3 names thread "other-thread", the message was sent on t1',
      'ack for an id this user never sent: "nobody-sent-this"',
      'second answer (ack started) for m4',
      'user_message m1 got neither ack nor error',
    ]);
    // The acked runs r2, r3 and r4 never produced events either.
    expect(broken(checker)).toEqual({ messages_acked: 5, runs_complete: 3 });
  });

  it('frame_format: not JSON, not an object, missing ts, bad seq, a run that changes thread', () => {
    const { checker, conns, bodies } = oneRun(1);
    const conn = conns[0]!;
    conn.frame('not json', 2);
    conn.frame('[1,2]', 2);
    const frames = numbered(bodies, 1).map((text) => JSON.parse(text) as Frame);
    delete frames[1]!.ts;
    frames[2]!.thread_id = 't-other';
    for (const frame of frames) conn.frame(JSON.stringify(frame), 3);
    conn.frame(JSON.stringify({ type: 'agent_thinking', seq: '7', run_id: 'r1', thread_id: 't1', ts: TS, text: 'x' }), 3);
    expect(details(checker, 'frame_format')).toEqual([
      'frame is not JSON: not json',
      'frame is not an object with a string type: [1,2]',
      'agent_thinking event with bad or missing ts undefined',
      "tool_executing names thread t-other, the run's earlier events named t1 (run r1, seq 3)",
      'agent_thinking event with bad or missing seq "7"',
    ]);
    expect(broken(checker)).toEqual({ frame_format: 5, run_order: 1 });
  });

  it('no_error_frames: an error frame (which also answers its message)', () => {
    const checker = new StormChecker();
    const [conn] = connect(checker, 'alice', 1);
    conn!.sent('m1', 't1', 1);
    conn!.frame(JSON.stringify({ type: 'error', code: 'rate_limited', message: 'slow down', ref: 'm1' }), 2);
    checker.finish(5);
    expect(broken(checker)).toEqual({ no_error_frames: 1 });
    expect(details(checker, 'no_error_frames')[0]).toBe('error rate_limited: slow down (ref "m1")');
  });

  it('no_1011: a 1011 close counts whoever started the close', () => {
    const checker = new StormChecker();
    const [a, b] = connect(checker, 'alice', 2);
    a!.closed(1011, 'server_fault', 5, false);
    b!.closed(1011, '', 5, true);
    expect(broken(checker)).toEqual({ no_1011: 2 });
    expect(details(checker, 'no_1011')).toEqual(['closed with 1011 (server_fault)', 'closed with 1011']);
  });

  it('no_unexpected_close: a close the probe did not ask for; closed connections are not checked further', () => {
    const { checker, conns, bodies } = oneRun(3);
    const frames = numbered(bodies, 1);
    feed(conns, frames.slice(0, 2));
    conns[1]!.closed(1006, '', 3, false);
    conns[2]!.closed(4008, 'slow_consumer', 3, false);
    feed([conns[0]!], frames.slice(2));
    expect(checker.settled()).toBe(true);
    checker.finish(5);
    conns[0]!.closed(1000, '', 6, true);
    expect(broken(checker)).toEqual({ no_unexpected_close: 2 });
    expect(details(checker, 'no_unexpected_close')).toEqual([
      'closed by the server with 1006 before the probe closed it',
      'closed by the server with 4008 (slow_consumer) before the probe closed it',
    ]);
  });

  it('dropping or swapping any event of a correct stream breaks seq_contiguous (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 2, max: 3 }), fc.nat(), fc.boolean(), (runs, connections, where, swap) => {
        const checker = new StormChecker();
        const conns = connect(checker, 'alice', connections);
        const bodies: Frame[] = [];
        for (let n = 0; n < runs; n += 1) {
          conns[0]!.sent(`m${n}`, `t${n}`, 1);
          conns[0]!.frame(ack(`m${n}`, `r${n}`, `t${n}`), 1);
          bodies.push(...runBodies(`r${n}`, `t${n}`, `m${n}`));
        }
        const frames = numbered(bodies, 1);
        const victim = conns[where % connections]!;
        const mutated = [...frames];
        const at = where % (frames.length - 1);
        if (swap) [mutated[at], mutated[at + 1]] = [mutated[at + 1]!, mutated[at]!];
        else mutated.splice(where % frames.length, 1);
        for (const conn of conns) feed([conn], conn === victim ? mutated : frames);
        checker.finish(5);
        expect(checker.counts.seq_contiguous).toBeGreaterThanOrEqual(1);
        expect(checker.examples.seq_contiguous.every((v) => v.connection === victim.label)).toBe(true);
      }),
      { numRuns: 150 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Small modules: stats, plan, svg
// ---------------------------------------------------------------------------------------------

describe('storm stats, plan and svg', () => {
  it('percentiles: nearest rank exactly, log histogram within 2 % and mergeable', () => {
    const values = Array.from({ length: 1000 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(500);
    expect(percentile(values, 99)).toBe(990);
    expect(percentile([], 50)).toBeNull();
    const whole = new LogHistogram();
    const a = new LogHistogram();
    const b = new LogHistogram();
    values.forEach((v, i) => {
      whole.record(v);
      (i % 2 ? a : b).record(v);
    });
    const merged = new LogHistogram();
    merged.merge(a.toJSON());
    merged.merge(b.toJSON());
    for (const p of [50, 90, 99]) {
      const exact = percentile(values, p)!;
      expect(Math.abs(whole.percentile(p)! - exact) / exact).toBeLessThanOrEqual(0.02);
      expect(merged.percentile(p)).toBe(whole.percentile(p));
    }
    expect(merged.summary()).toEqual(whole.summary());
    expect(whole.summary().max).toBe(1000);
  });

  it('parses source address ranges and lists, and rejects bad ones', () => {
    expect(parseSourceAddresses('127.0.0.1-127.0.0.4')).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4']);
    expect(parseSourceAddresses('127.0.0.5-6,10.0.0.1')).toEqual(['127.0.0.5', '127.0.0.6', '10.0.0.1']);
    expect(() => parseSourceAddresses('127.0.0.4-127.0.0.1')).toThrow('bad address range');
    expect(() => parseSourceAddresses('127.0.0.1-127.0.1.2')).toThrow('within one /24');
    expect(() => parseSourceAddresses('localhost')).toThrow('not an IPv4 address');
    expect(() => parseSourceAddresses('127.0.0.256')).toThrow('not an IPv4 address');
  });

  it('keeps all connections of a user in one worker and spreads connections over addresses (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 4 }),
        (users, extra, workers, addresses) => {
          const connections = users + extra;
          const options = stormOptions({ connections, users, workers, sourceAddresses: Array.from({ length: addresses }, (_, i) => `127.0.0.${i + 1}`) });
          const plans = planWorkers(options, 0, 'tag');
          const all = plans.flatMap((p) => p.connections);
          expect(all).toHaveLength(connections);
          expect(new Set(all.map((c) => c.label)).size).toBe(connections);
          expect(plans.flatMap((p) => p.users).sort()).toEqual(Array.from({ length: users }, (_, i) => `storm-u${i}`).sort());
          for (const plan of plans) {
            for (const conn of plan.connections) expect(plan.users).toContain(conn.user);
          }
          const perUser = new Map<string, number>();
          for (const conn of all) perUser.set(conn.user, (perUser.get(conn.user) ?? 0) + 1);
          expect(Math.max(...perUser.values()) - Math.min(...perUser.values())).toBeLessThanOrEqual(1);
          if (addresses > 0) {
            const perAddress = new Map<string | null, number>();
            for (const conn of all) perAddress.set(conn.localAddress, (perAddress.get(conn.localAddress) ?? 0) + 1);
            expect(Math.max(...perAddress.values()) - Math.min(...perAddress.values())).toBeLessThanOrEqual(1);
          } else {
            expect(all.every((c) => c.localAddress === null)).toBe(true);
          }
          expect(plans.reduce((sum, p) => sum + p.rate, 0)).toBeCloseTo(options.rate, 6);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('writes well-formed SVG charts, escaping text', () => {
    const charts = [
      histogramSvg('Time <to> ready & more', [1, 2, 2, 3, 50, 120.5], 'ms'),
      histogramSvg('empty', [], 'ms'),
      histogramSvg('long tail', [...Array.from({ length: 200 }, (_, i) => i % 50), 5000, 9000], 'ms'),
      lineChartSvg(
        'latency',
        [
          {
            name: 'p50 "a"',
            color: '#4477aa',
            points: [
              [0, 1],
              [1, 3],
              [2, 2],
            ],
          },
          {
            name: 'p99',
            color: '#cc3311',
            points: [
              [0, 5],
              [1, 9],
            ],
          },
        ],
        's',
        'ms',
      ),
      lineChartSvg('none', [], 's', 'ms'),
      barChartSvg(
        'closes',
        [
          ['1000', 38],
          ['1011', 2],
        ],
        'code',
        'n',
        (code) => code === '1011',
      ),
    ];
    for (const svg of charts) expect(xmlProblem(svg)).toEqual({ root: 'svg', problem: null });
    expect(charts[0]).toContain('Time &lt;to&gt; ready &amp; more');
    // 1, 2, 2, 3 share the first of 30 bins over 0..150; 50 and 120.5 have bins of their own.
    expect((charts[0]!.match(/<rect [^>]*fill="#4477aa"/g) ?? []).length).toBe(3);
    expect(charts[0]).toContain('<title>0–5: 4</title>');
    expect(charts[1]).toContain('no data');
    // p99 of the long tail is 49: bins over 0..50, and the two values above in one orange bar.
    expect(charts[2]).toContain('<title>≥ 50 (max 9000): 2</title>');
    expect(charts[2]).toContain('<title>0–1.67: 8</title>'); // 0 and 1, four times each
    expect((charts[3]!.match(/<path /g) ?? []).length).toBe(2);
    expect(charts[5]).toMatch(/<rect [^>]*fill="#cc3311"><title>1011: 2<\/title>/);
    expect(escapeXml(`<a href="x">&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;');
  });

  it('the well-formedness check used here rejects broken XML', () => {
    expect(xmlProblem('<svg><g></svg>').problem).toContain('</svg> closes <g>');
    expect(xmlProblem('<svg>a & b</svg>').problem).toContain('bare &');
    expect(xmlProblem('<svg x=1></svg>').problem).toContain('bad attributes');
    expect(xmlProblem('<svg></svg><svg></svg>').problem).toContain('after the root');
    expect(xmlProblem('<svg>').problem).toContain('unclosed');
  });
});

function stormOptions(overrides: Partial<StormOptions>): StormOptions {
  return {
    url: 'ws://127.0.0.1:1/ws',
    connections: 10,
    users: 2,
    rate: 100,
    messages: 1,
    auth: { kind: 'secret', secret: 's' },
    durationSec: 0,
    keepSending: false,
    sendIntervalMs: 1000,
    workers: 1,
    sourceAddresses: [],
    threads: 3,
    userPrefix: 'storm-u',
    readyTimeoutMs: 1000,
    ackTimeoutMs: 1000,
    settleTimeoutMs: 1000,
    maxInflight: 100,
    ...overrides,
  };
}

/**
 * A small XML well-formedness check (no XML library in the project): one root element, tags
 * nested and closed, attributes quoted and unique, `&` only in entities, no `<` in text.
 */
function xmlProblem(xml: string): { root: string | null; problem: string | null } {
  let text = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  let root: string | null = null;
  let rootClosed = false;
  const entity = /&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/;
  while (text.length > 0) {
    const lt = text.indexOf('<');
    const chunk = lt === -1 ? text : text.slice(0, lt);
    if (entity.test(chunk)) return { root, problem: `bare & in text: ${chunk.slice(0, 40)}` };
    if (chunk.trim() && stack.length === 0) return { root, problem: `text outside the root: ${chunk.slice(0, 40)}` };
    if (lt === -1) break;
    const gt = text.indexOf('>', lt);
    if (gt === -1) return { root, problem: 'unterminated tag' };
    const tag = text.slice(lt + 1, gt);
    text = text.slice(gt + 1);
    const closing = /^\/([A-Za-z_][\w:.-]*)\s*$/.exec(tag);
    if (closing) {
      const open = stack.pop();
      if (open !== closing[1]) return { root, problem: `</${closing[1]}> closes <${open}>` };
      if (stack.length === 0) rootClosed = true;
      continue;
    }
    const opening = /^([A-Za-z_][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*="[^"<]*")*)\s*(\/?)$/.exec(tag);
    if (!opening) return { root, problem: `bad attributes or tag: <${tag.slice(0, 60)}>` };
    const [, name, attrs, selfClosing] = opening;
    const names = [...attrs!.matchAll(/([A-Za-z_][\w:.-]*)="([^"]*)"/g)];
    if (new Set(names.map((m) => m[1])).size !== names.length) return { root, problem: `duplicate attribute in <${name}>` };
    for (const m of names) if (entity.test(m[2]!)) return { root, problem: `bare & in attribute ${m[1]}` };
    if (stack.length === 0) {
      if (rootClosed || root !== null) return { root, problem: `element <${name}> after the root` };
      root = name!;
    }
    if (!selfClosing) stack.push(name!);
    else if (stack.length === 0) rootClosed = true;
  }
  if (stack.length > 0) return { root, problem: `unclosed <${stack.join('> <')}>` };
  return { root, problem: root === null ? 'no root element' : null };
}

// ---------------------------------------------------------------------------------------------
// The real CLI against a real gateway and against deliberately broken servers
// ---------------------------------------------------------------------------------------------

interface CliRun {
  pid: number | undefined;
  code: number | null;
  stdout: string;
  stderr: string;
}

const children = new ChildTracker();
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  await children.killAll();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Runs `node bin/agentwire.mjs storm ...args` and resolves when it exited (or fails after `timeoutMs`). */
async function runCli(args: string[], timeoutMs = 25_000): Promise<CliRun> {
  const child = children.spawn(['storm', ...args]);
  const { code } = await child.waitExit(timeoutMs);
  return { pid: child.pid, code, stdout: child.stdout, stderr: child.stderr };
}

async function reportDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'agentwire-storm-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function readReport(dir: string): Promise<StormReport> {
  return JSON.parse(await readFile(path.join(dir, 'report.json'), 'utf8')) as StormReport;
}

function failing(report: StormReport): string[] {
  return report.guarantees.filter((g) => g.status === 'FAIL').map((g) => g.id);
}

describe('agentwire storm against a real gateway', () => {
  let env: TestGateway | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  it('passes with 40 connections of 8 users over 2 worker processes and 2 source addresses', async () => {
    env = await startGateway();
    const dir = await reportDir();
    const run = await runCli([
      '--url',
      env.url,
      '--connections',
      '40',
      '--users',
      '8',
      '--rate',
      '400',
      '--messages',
      '2',
      '--token-secret',
      TEST_SECRET,
      '--workers',
      '2',
      '--source-addresses',
      '127.0.0.1-127.0.0.2',
      '--report',
      dir,
    ]);
    expect(run.stderr).toMatch(/^storm \d+\.\ds \[done\] connected 40\/40 ready 40 closed 40 runs 16\/16 violations 0$/m);
    expect(run.stdout).toContain('agentwire storm: PASS — 40/40 connections ready, 8 users, 16/16 runs done, 720 events, 0 violations');
    expect(run.code).toBe(0);

    const report = await readReport(dir);
    expect(report.passed).toBe(true);
    expect(report.fatal).toEqual([]);
    expect(report.guarantees.map((g) => [g.id, g.status, g.violations])).toEqual(GUARANTEE_IDS.map((id) => [id, 'PASS', 0]));
    // Each run of the demo agent here is 9 events (its answers, "(12-4)/2 = 4" and "100-58 = 42",
    // stream in three words), seen by each of its user's 5 connections.
    expect(report.totals).toEqual({
      connectionsPlanned: 40,
      connectionsOpened: 40,
      connectionsReady: 40,
      connectFailures: 0,
      connectionsClosed: 40,
      messagesSent: 16,
      runsAcked: 16,
      runsDone: 16,
      eventsReceived: 40 * 2 * 9,
      errorFrames: 0,
      violations: 0,
    });
    expect(report.closesByCode).toEqual({ '1000': 40 });
    expect(report.connectionsBySourceAddress).toEqual({ '127.0.0.1': 20, '127.0.0.2': 20 });
    expect(report.workers.map((w) => [w.index, w.connections, w.users, w.fatal])).toEqual([
      [0, 20, 4, null],
      [1, 20, 4, null],
    ]);
    const pids = report.workers.map((w) => w.pid);
    expect(new Set(pids).size).toBe(2);
    expect(run.pid).toBeDefined();
    expect(pids).not.toContain(run.pid);
    expect(report.timeToReady.count).toBe(40);
    expect(report.timeToReady.max!).toBeLessThan(report.elapsedMs);
    expect(report.eventLatency.count).toBe(720);
    expect(report.latencyOverTime.reduce((sum, p) => sum + p.count, 0)).toBe(720);

    // The server agrees: 2 runs x 9 events per user, no invalid transition.
    for (let u = 0; u < 8; u += 1) expect((await env.gateway.engine.head(`storm-u${u}`)).lastSeq).toBe(18);
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);

    const markdown = await readFile(path.join(dir, 'report.md'), 'utf8');
    expect(markdown).toMatch(/^# agentwire storm report: PASS$/m);
    expect(markdown).toContain('| `seq_contiguous` | PASS | 0 |');
    expect(markdown).toContain('| 1000 | 40 |');
    for (const name of ['time-to-ready.svg', 'event-latency.svg', 'closes-by-code.svg']) {
      expect(xmlProblem(await readFile(path.join(dir, name), 'utf8'))).toEqual({ root: 'svg', problem: null });
      expect(markdown).toContain(`](${name})`);
    }
  });

  it('gets its tokens from POST /v1/auth/test-token with --bypass-key', async () => {
    env = await startGateway({ testTokens: { bypassKey: 'storm-bypass-key', secret: TEST_SECRET } });
    const dir = await reportDir();
    const run = await runCli(['--url', env.url, '--connections', '6', '--users', '3', '--messages', '1', '--bypass-key', 'storm-bypass-key', '--report', dir]);
    expect(run.code).toBe(0);
    const report = await readReport(dir);
    expect(report.settings.auth).toBe('bypass-key');
    expect(report.passed).toBe(true);
    expect([report.totals.connectionsReady, report.totals.runsDone, report.totals.eventsReceived]).toEqual([6, 3, 6 * 9]);
  });

  it('exits 3 and says why when the bypass key is wrong', async () => {
    env = await startGateway({ testTokens: { bypassKey: 'storm-bypass-key', secret: TEST_SECRET } });
    const dir = await reportDir();
    const run = await runCli(['--url', env.url, '--connections', '2', '--users', '1', '--bypass-key', 'wrong', '--report', dir]);
    expect(run.code).toBe(3);
    const report = await readReport(dir);
    expect(report.passed).toBe(false);
    expect(report.fatal).toHaveLength(1);
    expect(report.fatal[0]).toContain('answered 401: {"detail":"Invalid E2E bypass key"}');
    expect(env.gateway.connectionCount).toBe(0);
  });

  it('exits 2 on bad usage', async () => {
    const run = await runCli(['--connections', '2', '--users', '5', '--token-secret', 'x']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('agentwire storm: --users (5) must not exceed --connections (2)');
  });
});

type Flaw = 'none' | 'skip_seq' | 'leak' | 'close_1011';

/**
 * A tiny agentwire.v1 server with one deliberate flaw: connection_ready, acks, and the demo
 * agent's six events per message with per-user seqs, fanned out to the user's connections.
 */
async function startFakeServer(flaw: Flaw): Promise<{ url: string; close(): Promise<void> }> {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    path: '/ws',
    handleProtocols: (protocols) => (protocols.has('agentwire.v1') ? 'agentwire.v1' : false),
  });
  await once(wss, 'listening');
  const sockets = new Map<string, Set<WebSocket>>();
  const seqs = new Map<string, number>();
  let runs = 0;
  let closedOne = false;
  // Appends to `user`'s log (next seq) and sends to the user's connections. With the flaw
  // 'leak', every user's log gets every run (each with its own seqs, so only ownership is wrong).
  const append = (user: string, body: Frame) => {
    let seq = (seqs.get(user) ?? 0) + 1;
    if (flaw === 'skip_seq' && seq === 3) seq = 4;
    seqs.set(user, seq);
    const { type, ...rest } = body;
    const text = JSON.stringify({ type, seq, ...rest, ts: new Date().toISOString() });
    for (const ws of sockets.get(user) ?? []) if (ws.readyState === WebSocket.OPEN) ws.send(text);
  };
  const emit = (user: string, bodies: Frame[]) => {
    for (const body of bodies) {
      for (const target of flaw === 'leak' ? [...sockets.keys()] : [user]) append(target, body);
    }
  };
  wss.on('connection', (ws, req) => {
    const jwt = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim())
      .find((p) => p.startsWith('jwt.'))!;
    const user = (JSON.parse(Buffer.from(jwt.slice(4).split('.')[1]!, 'base64url').toString('utf8')) as { sub: string }).sub;
    ws.send(readyFrame(user, seqs.get(user) ?? 0));
    if (flaw === 'close_1011' && !closedOne) {
      closedOne = true;
      ws.close(1011, 'server_fault');
      return;
    }
    const set = sockets.get(user) ?? new Set<WebSocket>();
    set.add(ws);
    sockets.set(user, set);
    ws.on('close', () => set.delete(ws));
    ws.on('message', (data) => {
      const frame = JSON.parse((data as Buffer).toString()) as { type: string; id: string; thread_id: string };
      if (frame.type !== 'user_message') return;
      const runId = `fake-run-${++runs}`;
      ws.send(ack(frame.id, runId, frame.thread_id));
      emit(user, runBodies(runId, frame.thread_id, frame.id));
    });
  });
  const { port } = wss.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  };
}

describe('agentwire storm against deliberately broken servers', () => {
  it.each([
    ['none', 0, [], {}],
    ['skip_seq', 1, ['seq_contiguous'], { seq_contiguous: 12 }],
    // Each of the 12 connections sees the 2 runs of each of the 2 other users of its worker.
    ['leak', 1, ['no_cross_user'], { no_cross_user: 12 * 4 }],
    ['close_1011', 1, ['no_1011'], { no_1011: 1 }],
  ] as const)('%s: exit %i, failing %j', async (flaw, exitCode, expectedFailing, exactCounts) => {
    const server = await startFakeServer(flaw);
    cleanups.push(() => server.close());
    const dir = await reportDir();
    const run = await runCli([
      '--url',
      server.url,
      '--connections',
      '12',
      '--users',
      '3',
      '--messages',
      '2',
      '--token-secret',
      'fake-secret',
      '--settle-timeout-ms',
      '5000',
      '--report',
      dir,
      '--json',
    ]);
    expect(run.code).toBe(exitCode);
    const report = await readReport(dir);
    expect(JSON.parse(run.stdout)).toEqual(report);
    expect(failing(report)).toEqual(expectedFailing);
    expect(report.passed).toBe(exitCode === 0);
    for (const [id, count] of Object.entries(exactCounts)) {
      expect(report.guarantees.find((g) => g.id === id)!.violations).toBe(count);
    }
    for (const id of expectedFailing) expect(report.guarantees.find((g) => g.id === id)!.examples.length).toBeGreaterThan(0);
    const markdown = await readFile(path.join(dir, 'report.md'), 'utf8');
    expect(markdown).toMatch(new RegExp(`^# agentwire storm report: ${exitCode === 0 ? 'PASS' : 'FAIL'}$`, 'm'));
    for (const id of expectedFailing) expect(markdown).toContain(`| \`${id}\` | FAIL |`);
    if (flaw === 'skip_seq') {
      expect(report.guarantees.find((g) => g.id === 'seq_contiguous')!.examples[0]!.detail).toMatch(/^gap: expected seq 3, got 4 /);
    }
    if (flaw === 'leak') {
      expect(report.guarantees.find((g) => g.id === 'no_cross_user')!.examples[0]!.detail).toMatch(
        /^agent_started of run fake-run-\d+ (of user storm-u\d|for message \w+-storm-u\d-m\d of user storm-u\d) \(seq \d+\)$/,
      );
    }
    if (flaw === 'close_1011') {
      expect(report.closesByCode['1011']).toBe(1);
      expect(report.closesByCode['1000']).toBe(11);
      expect(markdown).toContain('| 1011 (server fault) | 1 |');
    }
  });
});
