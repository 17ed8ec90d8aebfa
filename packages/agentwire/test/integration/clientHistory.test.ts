import { afterEach, describe, expect, it } from 'vitest';
import { HttpError, httpBaseOf, type AgentEvent, type FetchFunction, type HistoryReload } from '@agentwire/client';
import { createClient } from '@agentwire/client/node';
import { MemoryEngine } from '../../src/engine/index.js';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { GatedAgent } from '../helpers/gatedAgent.js';
import { ManualClock } from '../helpers/manualClock.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { TcpProxy } from '../helpers/tcpProxy.js';
import { Waiters } from '../helpers/waitFor.js';

// The SDK's history: threads()/history()/rename/delete over HTTP with the client's token, and
// the reload through the epoch/last_seq seam after `resumed: false`, against a real gateway.

let env: TestGateway | undefined;
let proxy: TcpProxy | undefined;
/** Closed after the gateway: the PostgreSQL store and its database. */
let database: { store: PostgresHistoryStore; drop: () => Promise<void> } | undefined;
const clients: Array<{ close(): void }> = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await proxy?.close();
  proxy = undefined;
  await env?.stop();
  env = undefined;
  await database?.store.close();
  await database?.drop();
  database = undefined;
});

/** A gate the test opens. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

describe('client history', () => {
  it('derives the http(s) origin from the WebSocket URL', () => {
    expect(httpBaseOf('wss://example.com:8443/ws?x=1')).toBe('https://example.com:8443');
    expect(httpBaseOf('ws://127.0.0.1:9/deep/ws')).toBe('http://127.0.0.1:9');
  });

  it('threads(), history(), renameThread() and deleteThread() use the client’s token', async () => {
    const agent = new GatedAgent();
    env = await startGateway({ agent });
    const client = createClient({ url: env.url, token: () => env!.token('carol') });
    clients.push(client);
    await client.connect();
    const ack = await client.send('t1', 'hello there');
    for await (const event of client.run(ack.run_id)) void event;

    const threads = await client.threads();
    expect(threads).toMatchObject({
      threads: [{ thread_id: 't1', title: 'hello there', last_run: { run_id: ack.run_id, status: 'completed' } }],
      next_cursor: null,
    });
    const page = await client.history('t1', { limit: 10 });
    expect(page).toMatchObject({ thread_id: 't1', epoch: client.position!.epoch, last_seq: client.position!.lastSeq, next_cursor: null });
    expect(page.messages.map((m) => m.text)).toEqual(['hello there', 'echo: hello there']);
    expect(await client.renameThread('t1', 'Greeting')).toMatchObject({ thread_id: 't1', title: 'Greeting' });
    await client.deleteThread('t1');
    expect((await client.threads()).threads).toEqual([]);
    const missing = await client.history('t1').catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(HttpError);
    expect(missing).toMatchObject({ status: 404, code: 'not_found' });

    const anonymous = createClient({ url: env.url });
    clients.push(anonymous);
    await expect(anonymous.threads()).rejects.toMatchObject({ status: 401, code: 'token_missing' });
  });

  it('one client loads a page before it connects, then connects from the page: exactly the later events, nothing twice', async () => {
    const agent = new GatedAgent();
    env = await startGateway({ agent });
    const helper = await env.ready('erin');
    const run = await helper.message('m1', 's', '/gated streaming');
    agent.push('s', { type: 'text_delta', text: 'one ' });
    await helper.waitFor((f) => f.type === 'agent_text_delta' && f.text === 'one ');

    const client = createClient({ url: env.url, token: () => env!.token('erin') });
    clients.push(client);
    const page = await client.history('s');
    expect(client.state).toBe('idle');
    const inPage = page.messages.find((m) => m.role === 'assistant');
    expect(inPage?.text).toBe('one ');
    // Made after the page and before the connection: the resume must replay it.
    agent.push('s', { type: 'text_delta', text: 'two ' });
    await helper.waitFor((f) => f.type === 'agent_text_delta' && f.text === 'two ');

    const delivered: AgentEvent[] = [];
    const seen = new Waiters();
    client.on('event', (event) => {
      delivered.push(event);
      seen.notify();
    });
    const ready = await client.connect({ resume: { epoch: page.epoch, lastSeq: page.last_seq } });
    expect(ready.resumed).toBe(true);
    agent.finish('s', '');
    await helper.runEvents(run.run_id);
    await seen.until(() => delivered.some((e) => e.type === 'agent_completed') || undefined, 5000, 'the terminal event');
    const later = helper
      .events()
      .filter((e) => e.seq > page.last_seq)
      .map((e) => e.seq);
    expect(later.length).toBeGreaterThan(0);
    expect(delivered.map((e) => e.seq)).toEqual(later);
    expect(delivered.filter((e) => e.type === 'agent_text_delta').map((e) => (e.type === 'agent_text_delta' ? e.text : ''))).toEqual(['two ']);
    // The position is for the first dial only.
    await expect(client.connect({ resume: { epoch: page.epoch, lastSeq: 0 } })).rejects.toThrow(/first dial only \(the client is ready\)/);
  });

  it('after resumed:false it reloads the threads through the seam: the page plus the later live events, nothing twice', async () => {
    const agent = new GatedAgent();
    env = await startGateway({ agent });
    const helper = await env.ready('dave');
    const run = await helper.message('m1', 's', '/gated streaming');
    agent.push('s', { type: 'thinking', text: 'one ' });
    await helper.waitFor((f) => f.type === 'agent_thinking' && f.text === 'one ');

    // The request waits for `send`; the answer, once the server made it, waits for `answer`.
    const send = gate();
    const answer = gate();
    const answered = gate();
    const gatedFetch: FetchFunction = async (url, init) => {
      await send.promise;
      const response = await fetch(url, init);
      const text = await response.text();
      answered.open();
      await answer.promise;
      return { status: response.status, text: async () => text };
    };
    const delivered: AgentEvent[] = [];
    const reloads: HistoryReload[] = [];
    const seen = new Waiters();
    const client = createClient({
      url: env.url,
      token: () => env!.token('dave'),
      // A position from a log that no longer exists: the server answers resumed:false.
      resume: { epoch: 'a-lost-epoch', lastSeq: 1 },
      fetch: gatedFetch,
      reloadThreads: () => ['s'],
    });
    clients.push(client);
    client.on('event', (event) => {
      delivered.push(event);
      seen.notify();
    });
    // 'frame' comes before the client handles it: check once the handling is done.
    client.on('frame', () => queueMicrotask(() => seen.notify()));
    client.on('history_reloaded', (reload) => {
      reloads.push(reload);
      seen.notify();
    });
    const ready = await client.connect();
    expect(ready.resumed).toBe(false);
    const positionAt = (seq: number) => seen.until(() => client.position!.lastSeq >= seq || undefined, 5000, `client at seq ${seq}`);

    // Received while the page loads, and included in it: must not be delivered again.
    agent.push('s', { type: 'thinking', text: 'two ' });
    const two = await helper.waitFor((f) => f.type === 'agent_thinking' && f.text === 'two ');
    const clientSaw = () => client.position!.lastSeq;
    await positionAt(two.seq);
    send.open();
    await answered.promise;
    // After the page: must be delivered.
    agent.push('s', { type: 'thinking', text: 'three ' });
    const three = await helper.waitFor((f) => f.type === 'agent_thinking' && f.text === 'three ');
    await positionAt(three.seq);
    expect(delivered).toEqual([]);
    expect(clientSaw()).toBe(three.seq);
    answer.open();
    await seen.until(() => reloads.length > 0 || undefined, 5000, 'history_reloaded');
    agent.finish('s', 'done');
    await helper.runEvents(run.run_id);
    await seen.until(() => delivered.some((e) => e.type === 'agent_completed') || undefined, 5000, 'the terminal event');

    const page = reloads[0]!.threads[0]!.page!;
    expect(page.last_seq).toBe(two.seq);
    const answerInPage = page.messages.find((m) => m.role === 'assistant')!;
    expect(answerInPage.role === 'assistant' && answerInPage.thinking).toEqual(['one ', 'two ']);
    expect(delivered.map((e) => e.seq)).toEqual(
      helper
        .events()
        .filter((e) => e.seq > page.last_seq)
        .map((e) => e.seq),
    );
    expect(delivered.filter((e) => e.type === 'agent_thinking').map((e) => (e.type === 'agent_thinking' ? e.text : ''))).toEqual(['three ']);
  });
  it('a run iterator goes on across resumed:false: the answer reloaded through the seam, then the later deltas, the whole answer once', async () => {
    const agent = new GatedAgent();
    // Six events retained: the client's position falls out of the log while it is away, and so
    // does the run's start; the thread stays in the PostgreSQL archive (the default store, folded
    // from the log, would answer 404 for it, and the iterator would fail with HistoryResetError).
    const engine = new MemoryEngine({ retentionEvents: 6 });
    const created = await createTestDatabase();
    const store = new PostgresHistoryStore({ url: created.url, engine });
    database = { store, drop: created.drop };
    await store.ready();
    env = await startGateway({ agent, engine, history: store });
    proxy = await TcpProxy.start(env.port);
    const pageFetched = gate();
    const clock = new ManualClock();
    const client = createClient({
      url: `ws://127.0.0.1:${proxy.port}/ws`,
      httpUrl: `http://127.0.0.1:${env.port}`,
      token: () => env!.token('fay'),
      clock,
      random: () => 0.5,
      minDelayMs: 10,
      maxDelayMs: 40,
      pingIntervalMs: 0,
      fetch: async (url, init) => {
        const response = await fetch(url, init);
        const text = await response.text();
        pageFetched.open();
        return { status: response.status, text: async () => text };
      },
    });
    clients.push(client);
    await client.connect();
    const helper = await env.ready('fay');
    const run = client.ask('s', '/gated streaming');
    const runId = (await run.ack).run_id;
    agent.push('s', { type: 'text_delta', text: 'one ' });
    expect((await run.events.next()).value).toMatchObject({ type: 'agent_started' });
    expect((await run.events.next()).value).toMatchObject({ type: 'agent_text_delta', text: 'one ' });

    const down = new Promise<void>((resolve) => client.on('disconnect', () => resolve()));
    proxy.reset();
    await down;
    const away = ['two ', 'three ', 'four ', 'five ', 'six ', 'seven ', 'eight '];
    for (const word of away) {
      agent.push('s', { type: 'text_delta', text: word });
      await helper.waitFor((f) => f.type === 'agent_text_delta' && f.text === word);
    }
    // Archived up to the log's head: the page reaches the position the client resumes at (a
    // page short of it is fetched again on the client's clock, tested in client.test.ts).
    await store.idle();
    const reset = new Promise((resolve) => client.on('history_reset', resolve));
    // The reconnect's backoff runs on the manual clock.
    await clock.advance(100);
    await reset;
    const rest = (async () => {
      const events: AgentEvent[] = [];
      for await (const event of run.events) events.push(event);
      return events;
    })();
    await pageFetched.promise;
    agent.push('s', { type: 'text_delta', text: 'last' });
    agent.finish('s', '');
    const after = await rest;
    const whole = `one ${away.join('')}last`;
    expect(run.events.reloaded).toMatchObject({ run_id: runId, status: 'running', text: `one ${away.join('')}` });
    expect(after.filter((e) => e.type === 'agent_text_delta').map((e) => (e.type === 'agent_text_delta' ? e.text : ''))).toEqual(['last']);
    expect(after.at(-1)).toMatchObject({ type: 'agent_completed', status: 'completed', text: whole });
    expect(run.events.text).toBe(whole);
  });
});
