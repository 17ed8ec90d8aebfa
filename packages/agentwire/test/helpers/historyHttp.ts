/**
 * Requests to a test gateway's HTTP routes (the section 14 history routes and the rest), the
 * gateways of history tests on either store, and their users: one helper for every test file
 * that calls them.
 */
import { randomUUID } from 'node:crypto';
import { request, type IncomingHttpHeaders } from 'node:http';
import { systemClock, type Clock } from '@agentwire/protocol';
import { expect } from 'vitest';
import { MemoryEngine } from '../../src/engine/memoryEngine.js';
import type { HistoryStore } from '../../src/history/types.js';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import { GatedAgent } from './gatedAgent.js';
import { startGateway, type TestGateway } from './gateway.js';
import { Waiters, within } from './waitFor.js';
import type { TestClient } from './wsClient.js';

/** The history store of a test: folded from the log (memory engine), or PostgreSQL. */
export type StoreKind = 'log-folded' | 'postgres';

/** A gateway with a gated agent (see GatedAgent) on a memory engine and the chosen history store. */
export interface HistorySetup {
  readonly gateway: TestGateway;
  readonly agent: GatedAgent;
  /** Resolves once what the gateway appended is readable through the routes. */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts a HistorySetup; `databaseUrl` (a database of the test's own) for PostgreSQL. */
export async function startHistorySetup(kind: StoreKind, options: { databaseUrl?: string; clock?: Clock } = {}): Promise<HistorySetup> {
  const clock = options.clock ?? systemClock;
  const agent = new GatedAgent();
  const engine = new MemoryEngine({ retentionEvents: 10_000, clock });
  if (kind === 'log-folded') {
    const gateway = await startGateway({ agent, engine, clock });
    return { gateway, agent, settled: async () => {}, stop: async () => (await gateway.stop(), await engine.close()) };
  }
  if (!options.databaseUrl) throw new TypeError('a PostgreSQL history setup needs a databaseUrl');
  const waiters = new Waiters();
  const history = new PostgresHistoryStore({ url: options.databaseUrl, engine, holeGraceMs: 20, onChange: () => waiters.notify() });
  await history.ready();
  await waiters.until(() => history.available, 5000, 'PostgreSQL history available');
  const gateway = await startGateway({ agent, engine, clock, history: history as HistoryStore });
  return {
    gateway,
    agent,
    settled: () => within(history.idle(), 'the archive to be idle'),
    async stop() {
      await gateway.stop();
      await history.close();
      await engine.close();
    },
  };
}

/** An answer: `body` is its JSON, null when it is empty or not JSON (then see `text`). */
export interface HttpReply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
  /** Tests match on the shape of what the routes answer. */
  readonly body: any;
}

export interface HttpCallOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  readonly token?: string | null;
  /** Sent as is, as `application/json`. */
  readonly body?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** One request on a connection of its own to 127.0.0.1:`port`. */
export function httpCall(port: number, method: string, path: string, options: HttpCallOptions = {}): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    Object.assign(headers, options.headers);
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: jsonOrNull(text) }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function jsonOrNull(text: string): unknown {
  try {
    return text === '' ? null : JSON.parse(text);
  } catch {
    return null;
  }
}

/** A user of a history test: a ready connection to `gateway` and a token for the routes. */
export async function historyUser(gateway: TestGateway, name: string): Promise<{ id: string; token: string; client: TestClient }> {
  const id = `${name}-${randomUUID().slice(0, 6)}`;
  return { id, token: await gateway.token(id), client: await gateway.ready(id) };
}

/** Sends a message and waits for its run's end and for `settled` (what it appended readable through the routes); its run id. */
export async function completedRun(client: TestClient, threadId: string, text: string, settled: () => Promise<void>): Promise<string> {
  const ack = await client.message(randomUUID(), threadId, text);
  expect(ack.type).toBe('ack');
  await client.runEvents(ack.run_id);
  await settled();
  return ack.run_id as string;
}

/** A history store whose every call fails, as one whose storage is down; `available` as given. */
export function brokenStore(available: boolean): HistoryStore {
  const fail = () => Promise.reject(new Error('history storage is down'));
  return {
    available,
    listThreads: fail,
    messages: fail,
    renameThread: fail,
    deleteThread: fail,
    conversation: fail,
    record: () => {},
    close: async () => {},
  };
}
