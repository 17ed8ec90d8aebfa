import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { signToken } from '../../src/auth/index.js';
import { MemoryEngine } from '../../src/engine/index.js';
import { GatewayMetrics } from '../../src/observability/index.js';
import { createGateway, type Gateway } from '../../src/transport/index.js';
import { TEST_SECRET, startGateway, type TestGateway } from '../helpers/gateway.js';
import { httpGet, httpRequest, parsePrometheus, sampleValue, tryUpgrade } from '../helpers/http.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { TransitionWatcher } from '../helpers/transitions.js';
import { within } from '../helpers/waitFor.js';
import { TestClient, seqProblem } from '../helpers/wsClient.js';

/** A memory engine whose `ready()` resolves only when the test opens it. */
class GatedEngine extends MemoryEngine {
  readonly #opened: Promise<void>;
  #open!: () => void;

  constructor() {
    super();
    this.#opened = new Promise((resolve) => (this.#open = resolve));
  }

  open(): void {
    this.#open();
  }

  override ready(): Promise<void> {
    return this.#opened;
  }
}

const cleanups: Array<() => Promise<void> | void> = [];
let env: TestGateway | undefined;

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await env?.stop();
  env = undefined;
});

function listenOn(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function track(client: TestClient): TestClient {
  cleanups.push(() => client.close());
  return client;
}

/** Sends one message and returns the run's events once it ended. */
async function runToEnd(client: TestClient, id: string, thread: string, text: string) {
  const ack = await client.message(id, thread, text);
  expect(ack).toMatchObject({ type: 'ack', status: 'started' });
  return client.runEvents(ack.run_id);
}

describe('readiness before and after the engine is up', () => {
  it('refuses upgrades with 503 + Retry-After and answers /readyz 503 until the engine is ready, then serves', async () => {
    const engine = new GatedEngine();
    const metrics = new GatewayMetrics();
    const transitions = new TransitionWatcher(metrics);
    const gateway = createGateway({ auth: { secret: TEST_SECRET }, engine, metrics, demoStepMs: 1, streamFlushMs: 0 });
    const server = createServer((req, res) => {
      if (!gateway.handleRequest(req, res)) {
        res.writeHead(404);
        res.end();
      }
    });
    gateway.attach(server);
    cleanups.push(() => engine.close());
    cleanups.push(async () => {
      engine.open(); // so that shutdown is not held up by a never-ready engine
      await gateway.shutdown();
    });
    const port = await listenOn(server);
    const base = `http://127.0.0.1:${port}`;
    const wsUrl = `ws://127.0.0.1:${port}/ws`;
    const token = (await signToken(TEST_SECRET, { sub: 'alice', ttlSec: 600 })).token;

    let readyResolved = false;
    void gateway.ready().then(() => (readyResolved = true));

    // Not ready: /readyz 503, /healthz 200, and upgrades (even with a valid token) get HTTP 503.
    expect(gateway.isReady).toBe(false);
    const notReady = await httpGet(`${base}/readyz`);
    expect(notReady.status).toBe(503);
    expect(JSON.parse(notReady.text)).toEqual({ status: 'not_ready' });
    expect((await httpGet(`${base}/healthz`)).status).toBe(200);

    const refusedViaSubprotocol = await tryUpgrade(wsUrl, { protocols: ['agentwire.v1', `jwt.${token}`] });
    expect(refusedViaSubprotocol.status).toBe(503);
    expect(refusedViaSubprotocol.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    const refusedNoToken = await tryUpgrade(wsUrl);
    expect(refusedNoToken.status).toBe(503);
    expect(refusedNoToken.headers['retry-after']).toMatch(/^[1-9]\d*$/);

    // The TestClient sees the refusal as 'unexpected-response' with 503 and never opens.
    const refusedClient = track(new TestClient(wsUrl, { token }));
    await expect(refusedClient.opened).rejects.toThrow('upgrade refused with HTTP 503');
    expect(refusedClient.unexpectedResponseStatus).toBe(503);

    // No socket was ever accepted: every attempt went CONNECTING -> CLOSED directly.
    expect(transitions.count('CLOSED', 'CONNECTING')).toBe(3);
    expect(transitions.count('ACCEPTED')).toBe(0);
    expect(gateway.connectionCount).toBe(0);
    expect(gateway.coordinatorCount).toBe(0);
    expect(readyResolved).toBe(false);
    expect(await metrics.invalidTransitionCount()).toBe(0);

    // The engine comes up.
    engine.open();
    await gateway.ready();
    expect(readyResolved).toBe(true);
    expect(gateway.isReady).toBe(true);
    const ready = await httpGet(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ status: 'ready' });
    expect((await httpGet(`${base}/healthz`)).status).toBe(200);

    const client = track(new TestClient(wsUrl, { token }));
    const hello = await client.ready();
    expect(hello).toMatchObject({ type: 'connection_ready', user_id: 'alice', last_seq: 0, resumed: false });
    const events = await runToEnd(client, 'm1', 't1', 'what is 2+3*4?');
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('what is 2+3*4?'));
    expect(seqProblem(events, 0)).toBeNull();
    expect(events.at(-1)!.text).toBe('2+3*4 = 14');
    expect(transitions.count('ACCEPTED')).toBe(1);
    expect(await metrics.invalidTransitionCount()).toBe(0);
  });
});

describe('HTTP routes', () => {
  it('serves Prometheus metrics with the gateway series and values that match one run', async () => {
    const metrics = new GatewayMetrics();
    const transitions = new TransitionWatcher(metrics);
    env = await startGateway({ metrics });
    const base = `http://127.0.0.1:${env.port}`;
    const client = await env.ready('alice');
    const events = await runToEnd(client, 'm1', 't1', 'what is 2+3*4?');
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('what is 2+3*4?'));

    const reply = await httpGet(`${base}/metrics`);
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const types: Record<string, string> = {
      agentwire_connections: 'gauge',
      agentwire_state_transitions_total: 'counter',
      agentwire_invalid_transitions_total: 'counter',
      agentwire_closes_total: 'counter',
      agentwire_auth_total: 'counter',
      agentwire_events_sent_total: 'counter',
      agentwire_runs_total: 'counter',
      agentwire_time_to_ready_seconds: 'histogram',
      agentwire_append_to_send_seconds: 'histogram',
      agentwire_delta_holds_total: 'counter',
      agentwire_delta_holds_overdue_total: 'counter',
    };
    for (const [name, type] of Object.entries(types)) {
      expect(reply.text).toContain(`# TYPE ${name} ${type}\n`);
    }
    const samples = parsePrometheus(reply.text);
    const value = (name: string, labels: Record<string, string> = {}) => sampleValue(samples, name, labels);

    expect(value('agentwire_connections', { state: 'PROCESSING_READY' })).toBe(1);
    for (const state of ['CONNECTING', 'ACCEPTED', 'AUTHENTICATED', 'SERVICES_READY', 'CLOSING']) {
      expect(value('agentwire_connections', { state }) ?? 0).toBe(0);
    }
    for (const [from, to] of [
      ['CONNECTING', 'ACCEPTED'],
      ['ACCEPTED', 'AUTHENTICATED'],
      ['AUTHENTICATED', 'SERVICES_READY'],
      ['SERVICES_READY', 'PROCESSING_READY'],
    ]) {
      expect(value('agentwire_state_transitions_total', { from: from!, to: to! })).toBe(1);
    }
    expect(samples.filter((s) => s.name === 'agentwire_state_transitions_total')).toHaveLength(4);
    expect(value('agentwire_invalid_transitions_total')).toBe(0);
    expect(samples.filter((s) => s.name === 'agentwire_closes_total')).toHaveLength(0);
    expect(value('agentwire_auth_total', { method: 'subprotocol', outcome: 'ok' })).toBe(1);
    expect(value('agentwire_events_sent_total', { type: 'agent_started' })).toBe(1);
    expect(value('agentwire_events_sent_total', { type: 'agent_thinking' })).toBe(2);
    expect(value('agentwire_events_sent_total', { type: 'tool_executing' })).toBe(1);
    expect(value('agentwire_events_sent_total', { type: 'tool_completed' })).toBe(1);
    expect(value('agentwire_events_sent_total', { type: 'agent_text_delta' })).toBe(3); // "2+3*4", " =", " 14"
    expect(value('agentwire_events_sent_total', { type: 'agent_completed' })).toBe(1);
    expect(value('agentwire_events_sent_total', { type: 'agent_error' }) ?? 0).toBe(0);
    expect(value('agentwire_runs_total', { outcome: 'completed' })).toBe(1);
    expect(samples.filter((s) => s.name === 'agentwire_runs_total')).toHaveLength(1);
    expect(value('agentwire_time_to_ready_seconds_count')).toBe(1);
    expect(value('agentwire_time_to_ready_seconds_sum')).toBeGreaterThan(0);
    expect(value('agentwire_time_to_ready_seconds_bucket', { le: '+Inf' })).toBe(1);
    // One fan-out per durable event of the user.
    expect(value('agentwire_append_to_send_seconds_count')).toBe(events.length);
    expect(value('agentwire_append_to_send_seconds_bucket', { le: '+Inf' })).toBe(events.length);
    // The demo's three text deltas were held; a hold not ended by the window was ended by the next event.
    expect(value('agentwire_delta_holds_total')).toBeGreaterThanOrEqual(0);
    expect(value('agentwire_delta_holds_total')).toBeLessThanOrEqual(3);
    expect(value('agentwire_delta_holds_overdue_total')).toBeLessThanOrEqual(value('agentwire_delta_holds_total')!);

    // A normal close by the client is counted by code once the server has finished it.
    client.close(1000);
    await transitions.waitFor('CLOSED', 1);
    const after = parsePrometheus((await httpGet(`${base}/metrics`)).text);
    expect(sampleValue(after, 'agentwire_closes_total', { code: '1000' })).toBe(1);
    expect(after.filter((s) => s.name === 'agentwire_closes_total')).toHaveLength(1);
    expect(sampleValue(after, 'agentwire_connections', { state: 'PROCESSING_READY' })).toBe(0);
    expect(sampleValue(after, 'agentwire_connections', { state: 'CLOSING' })).toBe(0);
    expect(sampleValue(after, 'agentwire_state_transitions_total', { from: 'PROCESSING_READY', to: 'CLOSING' })).toBe(1);
    expect(sampleValue(after, 'agentwire_state_transitions_total', { from: 'CLOSING', to: 'CLOSED' })).toBe(1);
    expect(sampleValue(after, 'agentwire_invalid_transitions_total')).toBe(0);
  });

  it('counts failed authentications by method and reason', async () => {
    const metrics = new GatewayMetrics();
    const transitions = new TransitionWatcher(metrics);
    env = await startGateway({ metrics });
    const bad = new TestClient(env.url, { token: 'not-a-jwt', via: 'header' });
    env.clients.push(bad);
    expect(await bad.waitClosed()).toEqual({ code: 4401, reason: 'token_invalid' });
    await transitions.waitFor('CLOSED', 1);
    const samples = parsePrometheus((await httpGet(`http://127.0.0.1:${env.port}/metrics`)).text);
    expect(sampleValue(samples, 'agentwire_auth_total', { method: 'header', outcome: 'token_invalid' })).toBe(1);
    expect(sampleValue(samples, 'agentwire_closes_total', { code: '4401' })).toBe(1);
    expect(sampleValue(samples, 'agentwire_state_transitions_total', { from: 'ACCEPTED', to: 'CLOSING' })).toBe(1);
    expect(sampleValue(samples, 'agentwire_state_transitions_total', { from: 'ACCEPTED', to: 'AUTHENTICATED' })).toBeUndefined();
  });

  it('answers unknown paths with 404 and refuses upgrades on them', async () => {
    const metrics = new GatewayMetrics();
    const transitions = new TransitionWatcher(metrics);
    env = await startGateway({ metrics });
    const base = `http://127.0.0.1:${env.port}`;
    const token = await env.token('alice');

    const missing = await httpGet(`${base}/nope`);
    expect(missing.status).toBe(404);
    // The test-token route exists only when a bypass key is configured.
    const testToken = await httpRequest('POST', `${base}/v1/auth/test-token`, JSON.stringify({ user_id: 'u1', ttl_s: 600 }));
    expect(testToken.status).toBe(404);
    // Routes match the path only, not a prefix.
    expect((await httpGet(`${base}/healthz/extra`)).status).toBe(404);
    const health = await httpGet(`${base}/healthz?probe=1`);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.text)).toEqual({ status: 'ok' });

    for (const path of ['/other', '/ws/extra', '/']) {
      const outcome = await tryUpgrade(`ws://127.0.0.1:${env.port}${path}`, { protocols: ['agentwire.v1', `jwt.${token}`] });
      expect(outcome.status, `upgrade on ${path}`).toBe(404);
    }
    // The refused upgrades never became connections.
    expect(transitions.seen).toEqual([]);
    expect(env.gateway.connectionCount).toBe(0);

    // The real path still works.
    const client = await env.ready('alice');
    expect(client.frames[0]).toMatchObject({ type: 'connection_ready', user_id: 'alice' });
  });
});

describe('embedding with attach()', () => {
  it("shares an application's http.Server: the app's routes and upgrades stay its own, /ws and delegated routes are the gateway's", async () => {
    const gateway: Gateway = createGateway({ auth: { secret: TEST_SECRET }, demoStepMs: 1 });
    const appSockets = new WebSocketServer({ noServer: true });
    appSockets.on('connection', (ws) => ws.on('message', (data) => ws.send(`echo:${(data as Buffer).toString()}`)));
    const server = createServer((req, res) => {
      if (req.url === '/app') {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('app');
        return;
      }
      if (gateway.handleRequest(req, res)) return;
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('app 404');
    });
    server.on('upgrade', (req, socket, head) => {
      if (req.url === '/echo') appSockets.handleUpgrade(req, socket, head, (ws) => appSockets.emit('connection', ws, req));
    });
    gateway.attach(server);
    cleanups.push(() => new Promise<void>((resolve) => appSockets.close(() => resolve())));
    cleanups.push(() => gateway.shutdown());
    const port = await listenOn(server);
    await gateway.ready();
    const base = `http://127.0.0.1:${port}`;

    const app = await httpGet(`${base}/app`);
    expect(app.status).toBe(200);
    expect(app.text).toBe('app');
    const health = await httpGet(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(JSON.parse(health.text)).toEqual({ status: 'ok' });
    const ready = await httpGet(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ status: 'ready' });
    expect((await httpGet(`${base}/metrics`)).text).toContain('# TYPE agentwire_connections gauge');
    const other = await httpGet(`${base}/elsewhere`);
    expect(other.status).toBe(404);
    expect(other.text).toBe('app 404');

    // The application's own WebSocket endpoint is left to the application.
    const echo = new WebSocket(`ws://127.0.0.1:${port}/echo`);
    cleanups.push(() => echo.terminate());
    const echoed = await within(
      new Promise<string>((resolve, reject) => {
        echo.once('error', reject);
        echo.once('open', () => echo.send('hi'));
        echo.once('message', (data) => resolve((data as Buffer).toString()));
      }),
      'the echo',
    );
    expect(echoed).toBe('echo:hi');

    // The gateway's endpoint on the same server.
    const token = (await signToken(TEST_SECRET, { sub: 'alice', ttlSec: 600 })).token;
    const client = track(new TestClient(`ws://127.0.0.1:${port}/ws`, { token }));
    await client.ready();
    const events = await runToEnd(client, 'm1', 't1', 'what is 2+3*4?');
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('what is 2+3*4?'));
    expect(events.at(-1)!.text).toBe('2+3*4 = 14');
    expect(gateway.connectionCount).toBe(1);
  });
});
