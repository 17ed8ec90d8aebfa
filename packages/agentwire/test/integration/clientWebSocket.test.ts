import { afterEach, describe, expect, it, vi } from 'vitest';
import { createClient, type AgentEvent, type AgentwireClient, type WebSocketConstructor } from '@agentwire/client';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { within } from '../helpers/waitFor.js';

/**
 * The client SDK picks its WebSocket by itself (nothing passed), against a real gateway: the
 * platform's where the runtime has one (Node 22+), else the "ws" package, loaded at the first
 * dial (Node 20). `.ci/run` runs this file on Node 20 and on Node 24, so each runtime's own
 * default is exercised on real sockets.
 */

type GlobalWithWebSocket = { WebSocket?: WebSocketConstructor };
const globals = globalThis as GlobalWithWebSocket;
const platformWebSocket = globals.WebSocket;
const nodeMajor = Number(process.versions.node.split('.')[0]);

let env: TestGateway | undefined;
let client: AgentwireClient | undefined;
afterEach(async () => {
  client?.close();
  client = undefined;
  vi.doUnmock('ws');
  await env?.stop();
  env = undefined;
});

/** Counts the sockets a WebSocket class opens, by subclassing it. */
function counting(Base: WebSocketConstructor): { Counted: WebSocketConstructor; dials: () => number } {
  let dials = 0;
  class Counted extends (Base as new (url: string, protocols?: string | string[]) => object) {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      dials++;
    }
  }
  return { Counted: Counted as unknown as WebSocketConstructor, dials: () => dials };
}

/** A client made with the given global WebSocket (undefined: none), which is restored after. */
function clientWithGlobal(WebSocket: WebSocketConstructor | undefined, url: string, token: string): AgentwireClient {
  try {
    if (WebSocket === undefined) delete globals.WebSocket;
    else globals.WebSocket = WebSocket;
    return createClient({ url, token, pingIntervalMs: 0 });
  } finally {
    if (platformWebSocket === undefined) delete globals.WebSocket;
    else globals.WebSocket = platformWebSocket;
  }
}

/** Connects, runs the demo agent once and returns the run's event types. */
async function oneRun(sdk: AgentwireClient): Promise<string[]> {
  const ready = await within(sdk.connect(), 'connection_ready');
  expect(ready.user_id).toBe('alice');
  const { ack, events } = sdk.ask('thread-1', 'what is 2+3*4?');
  await within(ack, 'ack');
  const types: string[] = [];
  const collect = async () => {
    for await (const event of events as AsyncIterable<AgentEvent>) types.push(event.type);
  };
  await within(collect(), 'the run to end');
  return types;
}

describe('client: the WebSocket it picks without options.WebSocket', () => {
  it(`uses the platform WebSocket where there is one (Node 22+), else ws: Node ${process.versions.node}`, async () => {
    // The runtime matches what the README promises, so this test exercises the right branch.
    expect(platformWebSocket !== undefined).toBe(nodeMajor >= 22);
    env = await startGateway();
    const token = await env.token('alice');
    if (platformWebSocket) {
      const platform = counting(platformWebSocket);
      client = clientWithGlobal(platform.Counted, env.url, token);
      expect(await oneRun(client)).toContain('agent_completed');
      expect(platform.dials()).toBe(1);
    } else {
      const ws = counting((await import('ws')).default as unknown as WebSocketConstructor);
      vi.doMock('ws', () => ({ default: ws.Counted }));
      client = clientWithGlobal(undefined, env.url, token);
      expect(await oneRun(client)).toContain('agent_completed');
      expect(ws.dials()).toBe(1);
    }
  });

  it('without a platform WebSocket (as on Node 20) it loads ws at the first dial, and only then', async () => {
    env = await startGateway();
    const ws = counting((await import('ws')).default as unknown as WebSocketConstructor);
    vi.doMock('ws', () => ({ default: ws.Counted }));
    client = clientWithGlobal(undefined, env.url, await env.token('alice'));
    expect(ws.dials()).toBe(0);
    expect(await oneRun(client)).toContain('agent_completed');
    expect(ws.dials()).toBe(1);
  });

  it('without a platform WebSocket and without ws, connect() rejects naming both ways out', async () => {
    vi.doMock('ws', () => {
      throw new Error('Cannot find package "ws"');
    });
    client = clientWithGlobal(undefined, 'ws://127.0.0.1:9/ws', 'unused');
    const outcome = await within(
      client.connect().catch((error: unknown) => error),
      'connect to fail',
    );
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toMatch(/no WebSocket implementation.*install "ws" or pass options\.WebSocket/);
    expect(client.closeInfo).toMatchObject({ code: 1006, reason: 'no_websocket' });
    expect(client.state).toBe('closed');
  });
});
