import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentStep } from '../../src/runs/agent.js';
import { createHttpAgent, type HttpAgentOptions } from '../../src/upstream/index.js';
import { startGateway, stopAdvancing, type TestGateway } from '../helpers/gateway.js';
import { ManualClock } from '../helpers/manualClock.js';
import { runProblem } from '../helpers/runInvariants.js';
import { ndjson, ndjsonHead, UpstreamServer, type UpstreamHandler } from '../helpers/upstreamServer.js';
import { Waiters } from '../helpers/waitFor.js';
import { startRun, type Frame, type TestClient } from '../helpers/wsClient.js';

/**
 * Faults are answers (PROTOCOL.md section 15): every way an upstream agent over HTTP can fail
 * ends its run with agent_error agent_failed (timeout for the run timeout) and a message naming
 * the cause, never shows the configured header values, and leaves the other runs alone. The
 * upstreams are real HTTP servers on 127.0.0.1; the gateway is the real one over WebSockets.
 */

/** A configured credential: no failure message may show it. */
const CREDENTIAL = 'sk-upstream-credential-0123456789';
const HEADERS = { authorization: `Bearer ${CREDENTIAL}`, 'x-team-key': 'team-secret-abcdef' };

let env: TestGateway | undefined;
let clock: ManualClock | undefined;
let upstream: UpstreamServer | undefined;

afterEach(async () => {
  if (env) await stopAdvancing(env, clock, 10_000, 20);
  await upstream?.stop();
  env = undefined;
  clock = undefined;
  upstream = undefined;
});

/** Answers the run whose text is "ok" with a short streamed answer; every other run with `fault`. */
function upstreamWith(fault: UpstreamHandler): UpstreamHandler {
  return (request, req) => {
    if (request.body?.text !== 'ok') return fault(request, req);
    ndjsonHead(request.res);
    ndjson(request.res, { type: 'text_delta', text: 'all ' }, { type: 'text_delta', text: 'fine' });
    request.res.end();
  };
}

async function setUp(fault: UpstreamHandler, agent: Partial<HttpAgentOptions> = {}, gateway: { clock?: ManualClock; runTimeoutMs?: number } = {}) {
  upstream = await new UpstreamServer(upstreamWith(fault)).start();
  env = await startGateway({ agent: createHttpAgent({ url: upstream.url, headers: HEADERS, ...agent }), ...gateway });
  return { upstream, client: await env.ready('alice') };
}

/** The run's terminal event, after checking the run's events keep section 7's order. */
async function terminal(client: TestClient, runId: string): Promise<Frame> {
  const events = await client.runEvents(runId);
  expect(runProblem(events)).toBeNull();
  return events.at(-1)!;
}

/** The faulty run fails with `message`; a run started alongside it completes as usual. */
async function expectFailureAlongsideHealthyRun(client: TestClient, message: RegExp): Promise<Frame> {
  const faulty = await startRun(client, 'hello');
  const healthy = await startRun(client, 'ok');
  const failed = await terminal(client, faulty);
  expect(failed).toMatchObject({ type: 'agent_error', code: 'agent_failed' });
  expect(failed.message).toMatch(message);
  expectNoCredential(failed.message);
  expect(await terminal(client, healthy)).toMatchObject({ type: 'agent_completed', status: 'completed', text: 'all fine' });
  return failed;
}

function expectNoCredential(text: string): void {
  expect(text).not.toContain(CREDENTIAL);
  expect(text).not.toContain('team-secret-abcdef');
}

describe('upstream faults end the run with agent_failed naming the cause', () => {
  it('a refused connection', async () => {
    // A port that was free a moment ago and that nothing listens on.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    env = await startGateway({ agent: createHttpAgent({ url: `http://127.0.0.1:${port}/run`, headers: HEADERS }) });
    const client = await env.ready('alice');
    const failed = await terminal(client, await startRun(client, 'hello'));
    expect(failed).toMatchObject({ type: 'agent_error', code: 'agent_failed' });
    expect(failed.message).toMatch(new RegExp(`could not reach the upstream agent at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  });

  it('a 4xx answer, whose body echoes the credential, names the status and shows [redacted]', async () => {
    const { upstream, client } = await setUp(({ res, headers }) => {
      res.writeHead(401, { 'content-type': 'text/plain' });
      res.end(`bad credentials: ${headers.authorization}`);
    });
    const failed = await expectFailureAlongsideHealthyRun(client, /^the upstream agent answered HTTP 401 Unauthorized: bad credentials: \[redacted\]$/);
    expect(failed.message).toContain('[redacted]');
    // The credential did go to the upstream, with the user and the run.
    const request = upstream.requests.find((r) => r.body.text === 'hello')!;
    expect(request.headers).toMatchObject({ authorization: `Bearer ${CREDENTIAL}`, 'x-agentwire-user': 'alice', 'x-agentwire-run': failed.run_id });
  });

  it('a 5xx answer', async () => {
    const { client } = await setUp(({ res }) => {
      res.writeHead(503);
      res.end();
    });
    await expectFailureAlongsideHealthyRun(client, /^the upstream agent answered HTTP 503 Service Unavailable$/);
  });

  it('no first byte within the connect timeout (the upstream sees its request closed)', async () => {
    const agentClock = new ManualClock(0);
    const { upstream, client } = await setUp(() => {}, { clock: agentClock, connectTimeoutMs: 5000 });
    const faulty = await startRun(client, 'hello');
    const request = await upstream.request(1);
    await agentClock.advance(4999);
    expect(request.closed).toBe(false);
    await agentClock.advance(1);
    const failed = await terminal(client, faulty);
    expect(failed).toMatchObject({ type: 'agent_error', code: 'agent_failed', message: 'the upstream agent did not answer within 5000 ms (connect timeout)' });
    await upstream.closed(1);
    const healthy = await startRun(client, 'ok');
    expect(await terminal(client, healthy)).toMatchObject({ type: 'agent_completed', text: 'all fine' });
  });

  it('a stream cut mid-line, by a reset in a chunked body or by a close-delimited body ending', async () => {
    const { client } = await setUp(({ res }) => {
      ndjsonHead(res);
      ndjson(res, { type: 'text_delta', text: 'partial ' });
      res.write('{"type":"text_delta","te', () => res.destroy());
    });
    const failed = await expectFailureAlongsideHealthyRun(client, /^the upstream connection was cut in the middle of the stream/);
    const events = client
      .events()
      .filter((f) => f.run_id === failed.run_id)
      .map((f) => f.type);
    expect(events).toEqual(['agent_started', 'agent_text_delta', 'agent_error']);

    // HTTP/1.0 style: no length, no chunks, the body ends when the connection does.
    await upstream!.stop();
    upstream = await new UpstreamServer(
      upstreamWith(({ res }) => {
        res.socket!.end('HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n{"type":"text_delta","text":"a"}\n{"type":"text_de');
      }),
    ).start();
    const second = await startGateway({ agent: createHttpAgent({ url: upstream.url, headers: HEADERS }) });
    try {
      const other = await second.ready('bob');
      await expectFailureAlongsideHealthyRun(other, /^the upstream stream ended in the middle of a line$/);
    } finally {
      await second.stop();
    }
  });

  it('a malformed line', async () => {
    const { client } = await setUp(({ res }) => {
      ndjsonHead(res);
      ndjson(res, { type: 'thinking_delta', text: 'hm' });
      res.end('this is not json\n');
    });
    await expectFailureAlongsideHealthyRun(client, /^step 2 of the upstream stream is not JSON$/);
  });

  it('a line over 1 MiB (the upstream sees its request closed)', async () => {
    const { upstream, client } = await setUp(({ res }) => {
      ndjsonHead(res);
      res.write(`{"type":"text_delta","text":"${'x'.repeat(1024 * 1024)}"}`);
    });
    await expectFailureAlongsideHealthyRun(client, /^the upstream sent a line over 1 MiB$/);
    await upstream.closed(upstream.requests.findIndex((r) => r.body.text === 'hello') + 1);
  });

  it('an error step, and one that quotes the credential', async () => {
    const { client } = await setUp(({ res }) => {
      ndjsonHead(res);
      res.end(`${JSON.stringify({ type: 'error', message: `model overloaded (key ${CREDENTIAL})` })}\n`);
    });
    await expectFailureAlongsideHealthyRun(client, /^the upstream agent failed: model overloaded \(key \[redacted\]\)$/);
  });

  it('an answer that is not NDJSON or SSE names its content type', async () => {
    const { client } = await setUp(({ res }) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<html>login</html>');
    });
    await expectFailureAlongsideHealthyRun(
      client,
      /^the upstream answered with content-type text\/html; charset=utf-8, which the agentwire dialect does not read$/,
    );
  });

  it('a never-ending stream is ended by the run timeout (agent_error timeout) and the upstream sees the close', async () => {
    clock = new ManualClock(Date.UTC(2026, 0, 1));
    const { upstream, client } = await setUp(
      ({ res }) => {
        ndjsonHead(res);
        ndjson(res, { type: 'text_delta', text: 'and then' });
      },
      {},
      { clock, runTimeoutMs: 10_000 },
    );
    const runId = await startRun(client, 'hello');
    await client.waitFor((f) => f.run_id === runId && f.type === 'agent_text_delta');
    await clock.advance(10_000);
    const ended = await terminal(client, runId);
    expect(ended).toMatchObject({ type: 'agent_error', code: 'timeout' });
    await upstream.closed(1);
  });

  it('an upstream that ignores the abort: cancel ends the run at once, the connection is closed under it, other runs go on', async () => {
    const streams = new Set<NodeJS.Timeout>();
    const { upstream, client } = await setUp(({ res }) => {
      ndjsonHead(res);
      // Streams until the process ends it: it never listens for the close.
      const timer = setInterval(() => (res.writableEnded || res.destroyed ? clearInterval(timer) : ndjson(res, { type: 'text_delta', text: 'more ' })), 2);
      streams.add(timer);
    });
    try {
      const runId = await startRun(client, 'hello');
      await client.waitFor((f) => f.run_id === runId && f.type === 'agent_text_delta');
      client.send({ type: 'cancel', id: 'cancel-1', run_id: runId });
      expect(await terminal(client, runId)).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
      await upstream.closed(1);
      const healthy = await startRun(client, 'ok');
      expect(await terminal(client, healthy)).toMatchObject({ type: 'agent_completed', text: 'all fine' });
    } finally {
      for (const timer of streams) clearInterval(timer);
    }
  });

  it('shutdown ends a streaming run with agent_error shutdown and closes its request', async () => {
    upstream = await new UpstreamServer(({ res }) => {
      ndjsonHead(res);
      ndjson(res, { type: 'text_delta', text: 'still going' });
    }).start();
    const gateway = await startGateway({ agent: createHttpAgent({ url: upstream.url }), drainTimeoutMs: 0 });
    const client = await gateway.ready('alice');
    const runId = await startRun(client, 'hello');
    await client.waitFor((f) => f.run_id === runId && f.type === 'agent_text_delta');
    const stopping = gateway.gateway.shutdown();
    expect(await terminal(client, runId)).toMatchObject({ type: 'agent_error', code: 'shutdown' });
    await upstream.closed(1);
    await stopping;
  });

  it('a tool result for a call never announced', async () => {
    const { client } = await setUp(({ res }) => {
      ndjsonHead(res);
      res.end(`${JSON.stringify({ type: 'tool_result', call_id: 'c9', tool: 'x', ok: true, result: 1 })}\n`);
    });
    await expectFailureAlongsideHealthyRun(client, /^the upstream sent a tool result for call "c9", which it never announced$/);
  });
});

describe('backpressure', () => {
  it('a fast upstream waits for the run: unread output stays in bounded buffers, not in memory', async () => {
    const progress = new Waiters();
    let written = 0;
    const CAP = 64 * 1024 * 1024;
    const line = `${JSON.stringify({ type: 'text_delta', text: 'y'.repeat(64 * 1024) })}\n`;
    upstream = await new UpstreamServer(({ res }) => {
      ndjsonHead(res);
      const pump = () => {
        while (written < CAP && !res.destroyed) {
          written += line.length;
          progress.notify();
          if (!res.write(line)) return void res.once('drain', pump);
        }
      };
      pump();
    }).start();
    const controller = new AbortController();
    const steps = createHttpAgent({ url: upstream.url }).run(runInput(controller.signal))[Symbol.asyncIterator]();
    const first = await steps.next();
    expect((first.value as AgentStep).type).toBe('text_delta');
    // The run reads nothing more. Without backpressure the gateway would drain the socket into
    // memory and the upstream would reach the cap within moments; with it, the upstream stalls
    // once the socket buffers are full. An absence of progress is seen only over a window.
    const reachedCap = await progress
      .until(() => written >= CAP, 2000, 'the upstream reaching the cap')
      .then(
        () => true,
        () => false,
      );
    expect(reachedCap, `the upstream wrote ${written} bytes while the run read one step`).toBe(false);
    expect(written).toBeLessThan(16 * 1024 * 1024);
    controller.abort();
    await steps.return?.(undefined);
    await upstream.closed(1);
  });
});

/** A run's input for driving the agent directly. */
function runInput(signal: AbortSignal, text = 'hello'): Parameters<ReturnType<typeof createHttpAgent>['run']>[0] {
  return { runId: 'run_1', userId: 'alice', threadId: 't1', messageId: 'm1', text, history: [], signal };
}
