import { afterEach, describe, expect, it } from 'vitest';
import { signToken } from '../../src/auth/index.js';
import { MemoryEngine } from '../../src/engine/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { httpGet, tryUpgrade } from '../helpers/http.js';
import { ManualClock } from '../helpers/manualClock.js';
import { demoRunTypes, isTerminal } from '../helpers/runInvariants.js';
import { TestClient, seqProblem } from '../helpers/wsClient.js';

let env: TestGateway | undefined;
const children = new ChildTracker();
const clients: TestClient[] = [];
/** Lets a test that failed half-way through a manual-clock drain still shut down in afterEach. */
let manualClock: ManualClock | undefined;

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  const stopping = env?.gateway.shutdown();
  if (manualClock) await manualClock.advance(60_000);
  manualClock = undefined;
  await stopping;
  await children.killAll();
  await env?.stop();
  env = undefined;
});

/** The types of the run's durable events the client got, in arrival order. */
const runTimeline = (client: TestClient, runId: string) => client.frames.filter((f) => f.run_id === runId && typeof f.seq === 'number').map((f) => f.type);

describe('graceful shutdown in process', () => {
  it('lets a run in flight finish within the drain timeout, then closes clients with 1012', async () => {
    env = await startGateway({ drainTimeoutMs: 10_000 });
    const client = await env.ready('alice');
    const ack = await client.message('m1', 't1', '/slow 50 what is 2+3*4?');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    await client.waitFor((f) => f.type === 'agent_started' && f.run_id === ack.run_id);

    const stopped = env.gateway.shutdown();
    expect(env.gateway.isReady).toBe(false);
    const closed = await client.waitClosed(10_000);
    expect(closed).toEqual({ code: 1012, reason: 'service_restart' });
    await stopped;

    expect(runTimeline(client, ack.run_id)).toEqual(demoRunTypes('/slow 50 what is 2+3*4?'));
    const last = client.frames.at(-1)!;
    expect(last).toMatchObject({ type: 'agent_completed', run_id: ack.run_id, status: 'completed', text: '2+3*4 = 14' });
    expect(seqProblem(client.events(), 0)).toBeNull();
    expect(env.gateway.runs.liveRuns).toBe(0);
    expect(env.gateway.connectionCount).toBe(0);
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
  });

  it('ends a hanging run with agent_error shutdown after the drain timeout; not ready and refusing upgrades meanwhile', async () => {
    const clock = (manualClock = new ManualClock(Date.now()));
    const engine = new MemoryEngine({ clock });
    env = await startGateway({ clock, engine, drainTimeoutMs: 1000, demoStepMs: 1 });
    const base = `http://127.0.0.1:${env.port}`;
    const client = await env.ready('alice');
    const ack = await client.message('m1', 't1', '/hang');
    expect(ack).toMatchObject({ type: 'ack', status: 'started' });
    await client.waitFor((f) => f.type === 'agent_started' && f.run_id === ack.run_id);
    await clock.advance(1);
    await client.waitFor((f) => f.type === 'agent_thinking' && f.run_id === ack.run_id);

    const stopped = env.gateway.shutdown();
    let stoppedYet = false;
    void stopped.then(() => (stoppedYet = true));

    // Draining: not ready, new upgrades refused with 503, health still fine, the run still live.
    const readyz = await httpGet(`${base}/readyz`);
    expect(readyz.status).toBe(503);
    expect(JSON.parse(readyz.text)).toEqual({ status: 'not_ready' });
    expect(readyz.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    expect((await httpGet(`${base}/healthz`)).status).toBe(200);
    const upgrade = await tryUpgrade(env.url, { protocols: ['agentwire.v1', `jwt.${await env.token('bob')}`] });
    expect(upgrade.status).toBe(503);
    expect(upgrade.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    expect(env.gateway.connectionCount).toBe(1);
    expect(env.gateway.runs.liveRuns).toBe(1);
    expect(client.closeCode).toBeNull();
    expect(client.frames.some((f) => f.run_id === ack.run_id && isTerminal(f))).toBe(false);

    // Just before the drain timeout nothing has ended yet.
    await clock.advance(999);
    expect(env.gateway.runs.liveRuns).toBe(1);
    expect(client.closeCode).toBeNull();
    expect(stoppedYet).toBe(false);

    await clock.advance(1);
    const closed = await client.waitClosed();
    expect(closed).toEqual({ code: 1012, reason: 'service_restart' });
    await stopped;

    expect(runTimeline(client, ack.run_id)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    // The shutdown error is the last frame the client got before its 1012 close.
    expect(client.frames.at(-1)).toMatchObject({ type: 'agent_error', run_id: ack.run_id, code: 'shutdown', seq: 3 });
    expect(typeof client.frames.at(-1)!.message).toBe('string');
    // It is in the log too, so a client resuming elsewhere sees it.
    const logged = await engine.read('alice', 1, 10);
    expect(logged.map((e) => e.type)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(JSON.parse(logged[2]!.json)).toMatchObject({ type: 'agent_error', code: 'shutdown', run_id: ack.run_id });
    expect(env.gateway.runs.liveRuns).toBe(0);
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
    await engine.close();
  });

  it('also ends a run queued behind the hanging one with exactly one terminal event, shutdown', async () => {
    const clock = (manualClock = new ManualClock(Date.now()));
    env = await startGateway({ clock, drainTimeoutMs: 500, demoStepMs: 1 });
    const client = await env.ready('alice');
    const first = await client.message('m1', 't1', '/hang');
    const queued = await client.message('m2', 't1', 'what is 1+1?');
    expect(first).toMatchObject({ status: 'started' });
    expect(queued).toMatchObject({ status: 'queued' });
    await client.waitFor((f) => f.type === 'agent_started' && f.run_id === first.run_id);
    await clock.advance(1);
    await client.waitFor((f) => f.type === 'agent_thinking' && f.run_id === first.run_id);

    const stopped = env.gateway.shutdown();
    await clock.advance(499);
    expect(env.gateway.runs.liveRuns).toBe(2);
    await clock.advance(1);
    expect(await client.waitClosed()).toEqual({ code: 1012, reason: 'service_restart' });
    await stopped;

    expect(runTimeline(client, first.run_id)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(runTimeline(client, queued.run_id)).toEqual(['agent_started', 'agent_error']);
    const terminals = client.frames.filter(isTerminal);
    expect(terminals.map((f) => [f.run_id, f.code])).toEqual([
      [first.run_id, 'shutdown'],
      [queued.run_id, 'shutdown'],
    ]);
    // Runs on one thread never overlap, even while shutting down.
    const order = client.events().map((f) => `${f.run_id === first.run_id ? 'first' : 'queued'}:${f.type}`);
    expect(order).toEqual(['first:agent_started', 'first:agent_thinking', 'first:agent_error', 'queued:agent_started', 'queued:agent_error']);
    expect(seqProblem(client.events(), 0)).toBeNull();
  });
});

describe('graceful shutdown of `agentwire serve` on SIGTERM', () => {
  it('ends the hanging run with shutdown, lets the short run finish, closes with 1012 and exits 0', async () => {
    const secret = 'child-process-secret-0123456789-abcdefghijklmnop';
    const child = children.spawn(['serve'], {
      PORT: '0',
      AGENTWIRE_JWT_SECRET: secret,
      AGENTWIRE_DRAIN_TIMEOUT_MS: '300',
      AGENTWIRE_LOG_LEVEL: 'warn',
    });
    const [, url] = await child.waitForStdout(/^agentwire listening on (ws:\/\/127\.0\.0\.1:\d+\/ws)$/m);
    const token = (await signToken(secret, { sub: 'alice', ttlSec: 600 })).token;
    const client = new TestClient(url!, { token });
    clients.push(client);
    await client.ready(10_000);

    const hang = await client.message('m-hang', 't-hang', '/hang');
    const slow = await client.message('m-slow', 't-slow', '/slow 30 what is 2+3*4?');
    expect(hang).toMatchObject({ type: 'ack', status: 'started' });
    expect(slow).toMatchObject({ type: 'ack', status: 'started' });
    await client.waitFor((f) => f.type === 'agent_thinking' && f.run_id === hang.run_id, 10_000);
    // The short run is in flight (a step and three words of 30 ms left), well inside the 300 ms drain.
    await client.waitFor((f) => f.type === 'tool_completed' && f.run_id === slow.run_id, 10_000);

    child.signal('SIGTERM');
    const closed = await client.waitClosed(10_000);
    expect(closed).toEqual({ code: 1012, reason: 'service_restart' });
    const exit = await child.waitExit(10_000);
    expect(exit).toEqual({ code: 0, signal: null });

    expect(runTimeline(client, hang.run_id)).toEqual(['agent_started', 'agent_thinking', 'agent_error']);
    expect(client.frames.find((f) => f.run_id === hang.run_id && isTerminal(f))).toMatchObject({ code: 'shutdown' });
    expect(runTimeline(client, slow.run_id)).toEqual(demoRunTypes('/slow 30 what is 2+3*4?'));
    expect(client.frames.find((f) => f.run_id === slow.run_id && isTerminal(f))).toMatchObject({
      status: 'completed',
      text: '2+3*4 = 14',
    });
    // The hang run's shutdown error is the last frame before the close.
    expect(client.frames.at(-1)).toMatchObject({ type: 'agent_error', run_id: hang.run_id, code: 'shutdown' });
    expect(seqProblem(client.events(), 0)).toBeNull();
    // Nothing went wrong on the way down (warn level: only warnings and errors are logged).
    expect(child.stderr).toBe('');
    expect(child.stdout.split('\n').filter((line) => line.startsWith('{'))).toEqual([]);
  });
});
