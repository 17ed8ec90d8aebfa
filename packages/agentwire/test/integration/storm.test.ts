import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { seededRandom } from '../helpers/random.js';
import { demoRunTypes, runProblem, waitUntil } from '../helpers/runInvariants.js';
import { TestClient, seqProblem, type Frame } from '../helpers/wsClient.js';

/**
 * Connection storms over real sockets: hundreds of connections opened at once, then messages
 * whose events must reach every connection of their user, in order, and no one else.
 */

const MESSAGES_PER_USER = 2;

let env: TestGateway | undefined;
afterEach(async () => {
  await env?.stop();
  env = undefined;
});

async function counterValues(counter: { get(): Promise<{ values: { labels: Record<string, unknown>; value: number }[] }> }) {
  const values: Record<string, number> = {};
  for (const { labels, value } of (await counter.get()).values) values[Object.values(labels).join(',')] = value;
  return values;
}

/**
 * Opens `perUser` connections for each user, all at once, and runs the storm checks:
 * connection_ready first everywhere, no close, no invalid transition, then MESSAGES_PER_USER
 * messages per user on different threads from random connections of that user, whose events
 * every connection of that user (and only of that user) receives identically and in seq order.
 */
async function storm(gatewayEnv: TestGateway, users: string[], perUser: number, seed: number): Promise<void> {
  const { gateway } = gatewayEnv;
  const tokens = new Map<string, string>();
  for (const user of users) tokens.set(user, await gatewayEnv.token(user));

  // Every socket is opened before any is awaited.
  const byUser = new Map<string, TestClient[]>();
  for (const user of users) {
    const clients: TestClient[] = [];
    for (let i = 0; i < perUser; i++) {
      const client = new TestClient(gatewayEnv.url, { token: tokens.get(user)! });
      gatewayEnv.clients.push(client);
      clients.push(client);
    }
    byUser.set(user, clients);
  }
  const all = [...byUser.values()].flat();
  const readies = await Promise.all(all.map((client) => client.ready(25_000)));

  const connectionIds = new Set<string>();
  for (const [user, clients] of byUser) {
    for (const client of clients) {
      expect(client.frames[0]).toMatchObject({
        type: 'connection_ready',
        protocol: 'agentwire.v1',
        user_id: user,
        last_seq: 0,
        resumed: false,
        replayed: 0,
      });
      connectionIds.add(client.frames[0]!.connection_id);
    }
  }
  expect(connectionIds.size).toBe(all.length);
  expect(readies.length).toBe(all.length);
  expect(gateway.connectionCount).toBe(all.length);
  expect(gateway.coordinatorCount).toBe(users.length);
  expect(all.filter((client) => client.closeCode !== null)).toEqual([]);
  expect(await gateway.metrics.invalidTransitionCount()).toBe(0);

  // Each user sends its messages on different threads, each from a random connection of its own.
  const next = seededRandom(seed);
  const sent: Array<{ user: string; sender: TestClient; id: string; thread: string; text: string; answer: string }> = [];
  users.forEach((user, u) => {
    const clients = byUser.get(user)!;
    for (let k = 0; k < MESSAGES_PER_USER; k++) {
      const sender = clients[Math.floor(next() * clients.length)]!;
      sent.push({ user, sender, id: `${user}-m${k}`, thread: `t${k}`, text: `what is ${u}+${k + 1}?`, answer: `${u}+${k + 1} = ${u + k + 1}` });
    }
  });
  const acks = await Promise.all(sent.map((m) => m.sender.message(m.id, m.thread, m.text, 15_000)));
  const runsOfUser = new Map<string, Set<string>>(users.map((user) => [user, new Set<string>()]));
  const runIds = new Set<string>();
  acks.forEach((ack, i) => {
    const m = sent[i]!;
    expect(ack).toMatchObject({ type: 'ack', id: m.id, thread_id: m.thread, status: 'started' });
    runsOfUser.get(m.user)!.add(ack.run_id);
    runIds.add(ack.run_id);
  });
  expect(runIds.size).toBe(sent.length);

  // Every run's answer ("u+k = n") streams in three words.
  const expectedEvents = MESSAGES_PER_USER * demoRunTypes('what is 1+1?').length;
  const isEvent = (f: Frame) => typeof f.seq === 'number';
  await Promise.all(all.map((client) => client.waitForCount(isEvent, expectedEvents, 25_000, 'events')));

  for (const user of users) {
    const clients = byUser.get(user)!;
    const runs = runsOfUser.get(user)!;
    const reference = clients[0]!.events();
    for (const [c, client] of clients.entries()) {
      const events = client.events();
      // Contiguous from connection_ready.last_seq onward, nothing missing, nothing extra.
      expect(seqProblem(events, client.frames[0]!.last_seq)).toBeNull();
      expect(events.length).toBe(expectedEvents);
      // Only this user's runs, and each run complete and in order.
      expect(events.filter((e) => !runs.has(e.run_id))).toEqual([]);
      for (const runId of runs) {
        const runEvents = events.filter((e) => e.run_id === runId);
        expect(runProblem(runEvents)).toBeNull();
        expect(runEvents.map((e) => e.type)).toEqual(demoRunTypes(runEvents[0]!.text));
      }
      // Identical lists on every connection of the user.
      if (c > 0) expect(events).toEqual(reference);
      // The connection got nothing besides connection_ready, its events and the acks it asked for.
      const ownAcks = sent.filter((m) => m.sender === client).length;
      expect(client.frames.length).toBe(1 + expectedEvents + ownAcks);
      expect(client.frames.filter((f) => f.type === 'ack').length).toBe(ownAcks);
    }
    // The runs carry this user's texts and answers.
    for (const m of sent.filter((s) => s.user === user)) {
      const started = reference.find((e) => e.type === 'agent_started' && e.message_id === m.id);
      expect(started).toMatchObject({ text: m.text, thread_id: m.thread });
      const completed = reference.find((e) => e.type === 'agent_completed' && e.run_id === started!.run_id);
      expect(completed!.text).toBe(m.answer);
    }
  }

  expect(all.filter((client) => client.closeCode !== null)).toEqual([]);
  expect(await gateway.metrics.invalidTransitionCount()).toBe(0);
  expect(await counterValues(gateway.metrics.faults)).toEqual({});
  expect(await counterValues(gateway.metrics.runs)).toEqual({ completed: sent.length });

  // The clients leave; every server side closes with the client's 1000 and nothing else.
  for (const client of all) client.close();
  await Promise.all(all.map((client) => client.waitClosed(15_000)));
  await waitUntil(() => gateway.connectionCount === 0, 15_000, 'every server connection to close');
  expect(gateway.coordinatorCount).toBe(0);
  expect(await counterValues(gateway.metrics.closes)).toEqual({ '1000': all.length });
  expect(await gateway.metrics.invalidTransitionCount()).toBe(0);
}

describe('connection storm', () => {
  it('500 concurrent connections of 50 users: all ready, no close, every event to every connection of its user only', async () => {
    env = await startGateway({ demoStepMs: 1 });
    const users = Array.from({ length: 50 }, (_, i) => `storm-user-${i}`);
    await storm(env, users, 10, 0x5eed);
  }, 60_000);

  it('100 concurrent connections of one user (maxConnectionsPerUser 200) all get every event in order', async () => {
    env = await startGateway({ demoStepMs: 1, maxConnectionsPerUser: 200 });
    await storm(env, ['storm-solo'], 100, 0xc0ffee);
  }, 60_000);

  it('a storm of connections joining while runs are producing events: each gets a contiguous tail from its last_seq', async () => {
    env = await startGateway({ demoStepMs: 1 });
    const gatewayEnv = env;
    const users = Array.from({ length: 20 }, (_, i) => `joiner-${i}`);
    const first = await Promise.all(users.map((user) => gatewayEnv.ready(user)));
    const tokens = await Promise.all(users.map((user) => gatewayEnv.token(user)));
    // Slow runs with step times spread over the users, so the joiners' setups overlap with
    // events being appended at every point of a run.
    const texts = first.map((_, i) => `/slow ${2 + 8 * i} count the words of user ${i}`);
    const acks = await Promise.all(first.map((client, i) => client.message(`m-${i}`, 't', texts[i]!)));
    const joiners = users
      .map((user, i) =>
        Array.from({ length: 10 }, () => {
          const client = new TestClient(gatewayEnv.url, { token: tokens[i]! });
          gatewayEnv.clients.push(client);
          return { user, client };
        }),
      )
      .flat();
    await Promise.all(joiners.map(({ client }) => client.ready(25_000)));
    for (const [i, client] of first.entries()) {
      const events = await client.runEvents(acks[i]!.run_id, 15_000);
      expect(events.map((e) => e.type)).toEqual(demoRunTypes(texts[i]!));
      expect(seqProblem(events, 0)).toBeNull();
    }
    for (const { user, client } of joiners) {
      const i = users.indexOf(user);
      const ready = client.frames[0]!;
      expect(ready).toMatchObject({ type: 'connection_ready', user_id: user, resumed: false, replayed: 0 });
      const lastSeq: number = ready.last_seq;
      expect(lastSeq).toBeGreaterThanOrEqual(1);
      if (lastSeq < demoRunTypes(texts[i]!).length) await client.runEvents(acks[i]!.run_id, 15_000);
      const events = client.events();
      // Exactly what the first connection saw after last_seq: no gap, no duplicate, no stranger.
      expect(events).toEqual(first[i]!.events().filter((e) => e.seq > lastSeq));
      expect(seqProblem(events, lastSeq)).toBeNull();
      expect(client.frames.length).toBe(1 + events.length);
    }
    expect([...first, ...joiners.map((j) => j.client)].filter((c) => c.closeCode !== null)).toEqual([]);
    expect(await gatewayEnv.gateway.metrics.invalidTransitionCount()).toBe(0);
    expect(await counterValues(gatewayEnv.gateway.metrics.faults)).toEqual({});
  }, 60_000);
});
