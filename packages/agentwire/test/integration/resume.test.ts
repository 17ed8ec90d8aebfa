import { afterEach, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/index.js';
import { startGateway, stopAdvancing, type TestGateway } from '../helpers/gateway.js';
import { ManualClock } from '../helpers/manualClock.js';
import { demoRunTypes, runProblem, waitUntil } from '../helpers/runInvariants.js';
import { seqProblem, type ConnectOptions, type Frame, type TestClient } from '../helpers/wsClient.js';

/**
 * Resume (PROTOCOL.md sections 3, 5 and 7) over real sockets. Runs that must be caught
 * mid-way use `/slow 30` on a ManualClock, so "mid-run" is a position the test chooses,
 * not a race against real time.
 */

const STEP_MS = 30;
type Via = 'query' | 'frame';
const VIAS: readonly Via[] = ['query', 'frame'];

let env: TestGateway | undefined;
let clock: ManualClock | undefined;
let engine: MemoryEngine | undefined;

afterEach(async () => {
  // A run left live by a failed test would hold the drain on the manual clock.
  if (env) await stopAdvancing(env, clock, 10_000, 20);
  await engine?.close();
  env = undefined;
  clock = undefined;
  engine = undefined;
});

/** The resume position the URL query way (token in the subprotocol) or in the auth frame. */
function resumeOptions(via: Via, lastSeq: number | undefined, epoch: string | undefined): ConnectOptions {
  const options: ConnectOptions = via === 'frame' ? { via: 'frame' } : {};
  if (lastSeq !== undefined) options.lastSeq = lastSeq;
  if (epoch !== undefined) options.epoch = epoch;
  return options;
}

const isEvent = (frame: Frame) => typeof frame.seq === 'number';

/**
 * Frames the server sent between connection_ready and the answer to a ping sent now. The
 * server sends the replay right after connection_ready and only then dispatches frames, so
 * with no run producing events these are exactly the replayed events.
 */
async function framesBeforePong(client: TestClient, id: string): Promise<Frame[]> {
  client.send({ type: 'ping', id });
  await client.waitFor((f) => f.type === 'pong' && f.id === id, 5000, `pong ${id}`);
  const pongAt = client.frames.findIndex((f) => f.type === 'pong' && f.id === id);
  expect(client.frames[0]!.type).toBe('connection_ready');
  return client.frames.slice(1, pongAt);
}

/** Moves the manual clock one demo step and waits until `client` has the event with `seq`. */
async function step(client: TestClient, seq: number): Promise<void> {
  await clock!.advance(STEP_MS);
  await client.waitFor((f) => f.seq === seq, 5000, `event seq ${seq}`);
}

/** Starts a gateway on a manual clock, a user with an observer that stays connected throughout. */
async function manualSetup(user: string) {
  clock = new ManualClock(Date.UTC(2025, 0, 1));
  env = await startGateway({ clock });
  const observer = await env.ready(user);
  return { gateway: env, observer, epoch: observer.frames[0]!.epoch as string };
}

describe('resume mid-run', () => {
  for (const via of VIAS) {
    for (const cut of [1, 3]) {
      it(`via ${via}: disconnect after seq ${cut}, reconnect: exact replay, then live events to the terminal, no gap or duplicate`, async () => {
        const { gateway, observer, epoch } = await manualSetup('alice');
        const client = await gateway.ready('alice');
        const text = `/slow ${STEP_MS} what is 6*7?`;
        const runLength = demoRunTypes(text).length;
        const ack = await client.message('m1', 't1', text);
        expect(ack).toMatchObject({ type: 'ack', status: 'started', thread_id: 't1' });
        await client.waitFor((f) => f.seq === 1, 5000, 'agent_started');
        for (let seq = 2; seq <= cut; seq++) await step(client, seq);
        expect(client.events().map((e) => e.seq)).toEqual(Array.from({ length: cut }, (_, i) => i + 1));

        client.close();
        expect((await client.waitClosed()).code).toBe(1000);
        await waitUntil(() => gateway.gateway.connectionCount === 1, 5000, 'the closed connection to be torn down');
        // Two events happen while the client is away.
        await step(observer, cut + 1);
        await step(observer, cut + 2);

        const again = await gateway.connect('alice', resumeOptions(via, cut, epoch));
        const ready = await again.ready();
        expect(again.frames[0]).toBe(ready);
        expect(ready).toMatchObject({
          type: 'connection_ready',
          user_id: 'alice',
          epoch,
          last_seq: cut + 2,
          resumed: true,
          replayed: 2,
        });
        const replay = await again.waitForCount(isEvent, ready.replayed, 5000, 'replayed events');
        expect(again.frames.slice(1, 1 + ready.replayed)).toEqual(replay);
        expect(replay).toEqual(observer.events().filter((e) => e.seq > cut && e.seq <= ready.last_seq));

        // The rest of the run arrives live, continuing the replay.
        for (let seq = cut + 3; seq <= runLength; seq++) await step(again, seq);
        await again.runEvents(ack.run_id);
        const seen = again.events();
        expect(seqProblem(seen, cut)).toBeNull();
        expect(seen).toEqual(observer.events().filter((e) => e.seq > cut));
        expect(again.frames.length).toBe(1 + seen.length);
        expect(seen.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text: '6*7 = 42', seq: runLength });

        // Before and after the disconnect together: the whole run, once.
        const whole = [...client.events(), ...seen];
        expect(whole).toEqual(observer.events());
        expect(whole.map((e) => e.type)).toEqual(demoRunTypes(text));
        expect(runProblem(whole)).toBeNull();
        expect(await gateway.gateway.metrics.invalidTransitionCount()).toBe(0);
      });
    }
  }
});

describe('resume positions', () => {
  const RUN_TEXT = 'count these four words';
  /** The seq of the run's last event: its eleven events (five words) are the user's only ones. */
  const HEAD = demoRunTypes(RUN_TEXT).length;

  /** One completed demo run for `user`; returns its events and the epoch. */
  async function completedRun(gatewayEnv: TestGateway, user: string) {
    const first = await gatewayEnv.ready(user);
    const ack = await first.message('m1', 't1', RUN_TEXT);
    const events = await first.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(demoRunTypes(RUN_TEXT));
    return { events, epoch: first.frames[0]!.epoch as string };
  }

  const cases: Array<{ name: string; lastSeq: number; epoch: 'right' | 'wrong' | 'none'; resumed: boolean; replayed: number }> = [
    { name: 'wrong epoch', lastSeq: 2, epoch: 'wrong', resumed: false, replayed: 0 },
    { name: 'wrong epoch at head', lastSeq: HEAD, epoch: 'wrong', resumed: false, replayed: 0 },
    { name: 'no epoch', lastSeq: 2, epoch: 'none', resumed: false, replayed: 0 },
    { name: 'last_seq one beyond head', lastSeq: HEAD + 1, epoch: 'right', resumed: false, replayed: 0 },
    { name: 'last_seq far beyond head', lastSeq: 1000, epoch: 'right', resumed: false, replayed: 0 },
    { name: 'last_seq equal to head', lastSeq: HEAD, epoch: 'right', resumed: true, replayed: 0 },
    { name: 'last_seq 0', lastSeq: 0, epoch: 'right', resumed: true, replayed: HEAD },
    { name: 'last_seq in the middle', lastSeq: 4, epoch: 'right', resumed: true, replayed: HEAD - 4 },
  ];

  for (const c of cases) {
    it(`${c.name}: resumed ${c.resumed}, replayed ${c.replayed}, exactly those events (both ways)`, async () => {
      env = await startGateway();
      const gatewayEnv = env;
      const { events, epoch } = await completedRun(gatewayEnv, 'bob');
      const sentEpoch = c.epoch === 'right' ? epoch : c.epoch === 'wrong' ? `${epoch}-not` : undefined;
      for (const via of VIAS) {
        const client = await gatewayEnv.ready('bob', resumeOptions(via, c.lastSeq, sentEpoch));
        expect(client.frames[0]).toMatchObject({
          type: 'connection_ready',
          user_id: 'bob',
          epoch,
          last_seq: HEAD,
          resumed: c.resumed,
          replayed: c.replayed,
        });
        const replay = await framesBeforePong(client, `barrier-${via}`);
        expect(replay).toEqual(c.resumed ? events.filter((e) => e.seq > c.lastSeq) : []);
      }
      // Whatever the answer, live events go on from the head: the next run starts at seq HEAD + 1.
      const last = gatewayEnv.clients.at(-1)!;
      const ack = await last.message('m2', 't1', 'two words');
      const next = await last.runEvents(ack.run_id);
      expect(seqProblem(next, HEAD)).toBeNull();
      expect(last.events()).toEqual([...(c.resumed ? events.filter((e) => e.seq > c.lastSeq) : []), ...next]);
    });
  }

  it('evicted range (retentionEvents 5): resumed false; the first retained boundary still resumes', async () => {
    engine = new MemoryEngine({ retentionEvents: 5 });
    env = await startGateway({ engine });
    const gatewayEnv = env;
    const { events, epoch } = await completedRun(gatewayEnv, 'carol');
    const oldest = HEAD - 4;
    expect(await engine.read('carol', 1, HEAD)).toHaveLength(5);
    for (const via of VIAS) {
      // seq `oldest - 1` is gone: a client before it cannot get every event after its position.
      const evicted = await gatewayEnv.ready('carol', resumeOptions(via, oldest - 2, epoch));
      expect(evicted.frames[0]).toMatchObject({ epoch, last_seq: HEAD, resumed: false, replayed: 0 });
      expect(await framesBeforePong(evicted, `evicted-${via}`)).toEqual([]);
      // A client right before the oldest retained event needs oldest..HEAD, all retained.
      const retained = await gatewayEnv.ready('carol', resumeOptions(via, oldest - 1, epoch));
      expect(retained.frames[0]).toMatchObject({ epoch, last_seq: HEAD, resumed: true, replayed: 5 });
      expect(await framesBeforePong(retained, `retained-${via}`)).toEqual(events.slice(oldest - 1));
    }
  });
});

describe('a run outlives its clients', () => {
  it('every client disconnects mid-run; the run ends; a later client resumes and sees the terminal event', async () => {
    clock = new ManualClock(Date.UTC(2025, 0, 1));
    env = await startGateway({ clock });
    const gatewayEnv = env;
    const a = await gatewayEnv.ready('dave');
    const b = await gatewayEnv.ready('dave');
    const epoch = a.frames[0]!.epoch as string;
    const text = `/slow ${STEP_MS} count these three`;
    const head = demoRunTypes(text).length;
    const ack = await a.message('m1', 't1', text);
    await step(b, 2);
    await a.waitFor((f) => f.seq === 2, 5000, 'seq 2 on a');
    a.close();
    b.close();
    await Promise.all([a.waitClosed(), b.waitClosed()]);
    await waitUntil(() => gatewayEnv.gateway.connectionCount === 0 && gatewayEnv.gateway.coordinatorCount === 0, 5000, 'teardown');
    expect(gatewayEnv.gateway.runs.liveRuns).toBe(1);

    // Nobody is connected while the run goes on to its end.
    for (let seq = 3; seq < head; seq++) await clock.advance(STEP_MS);
    await waitUntil(() => gatewayEnv.gateway.runs.liveRuns === 0, 5000, 'the run to end');

    const later = await gatewayEnv.ready('dave', { lastSeq: 2, epoch });
    expect(later.frames[0]).toMatchObject({ epoch, last_seq: head, resumed: true, replayed: head - 2 });
    const replay = await framesBeforePong(later, 'barrier');
    expect(replay.map((e) => e.seq)).toEqual(Array.from({ length: head - 2 }, (_, i) => i + 3));
    expect(replay.every((e) => e.run_id === ack.run_id)).toBe(true);
    expect(replay.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text: 'Your message has 3 words.' });
    const whole = [...a.events(), ...replay];
    expect(whole).toEqual([...b.events(), ...replay]);
    expect(whole.map((e) => e.type)).toEqual(demoRunTypes(text));
    expect(runProblem(whole)).toBeNull();
  });

  it('every client disconnects mid-run; a client that comes back before the end gets the replay, then the terminal live', async () => {
    clock = new ManualClock(Date.UTC(2025, 0, 1));
    env = await startGateway({ clock });
    const gatewayEnv = env;
    const a = await gatewayEnv.ready('erin');
    const epoch = a.frames[0]!.epoch as string;
    const text = `/slow ${STEP_MS} what is 1+1?`;
    const head = demoRunTypes(text).length;
    const ack = await a.message('m1', 't1', text);
    await step(a, 2);
    a.close();
    await a.waitClosed();
    await waitUntil(() => gatewayEnv.gateway.coordinatorCount === 0, 5000, 'teardown');
    await clock.advance(STEP_MS); // seq 3, with nobody connected
    expect((await gatewayEnv.gateway.engine.head('erin')).lastSeq).toBe(3);
    expect(gatewayEnv.gateway.runs.liveRuns).toBe(1);

    const back = await gatewayEnv.ready('erin', resumeOptions('frame', 2, epoch));
    expect(back.frames[0]).toMatchObject({ epoch, last_seq: 3, resumed: true, replayed: 1 });
    for (let seq = 4; seq < head; seq++) await step(back, seq); // the last word comes with the terminal event
    const events = await back.runEvents(ack.run_id);
    const seqs = Array.from({ length: head - 2 }, (_, i) => i + 3);
    expect(events.map((e) => e.seq)).toEqual(seqs);
    expect(back.frames.slice(1).map((f) => f.seq)).toEqual(seqs);
    expect(events.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text: '1+1 = 2' });
    expect(runProblem([...a.events(), ...events])).toBeNull();
    expect([...a.events(), ...events].map((e) => e.type)).toEqual(demoRunTypes(text));
  });
});
