import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Child } from '../helpers/childProcess.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { freePort } from '../helpers/redisServer.js';

// `agentwire serve` with AGENTWIRE_DATABASE_URL (runs the built bin: `npm run build` first).

let database: { url: string; drop: () => Promise<void> };

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

function serve(databaseUrl: string): Child {
  return new Child(['serve'], { ...process.env, PORT: '0', AGENTWIRE_DATABASE_URL: databaseUrl, AGENTWIRE_LOG_LEVEL: 'warn', NODE_ENV: '' });
}

/** HTTP has no event for "the state changed": asks again until `done` or the deadline. */
async function pollUntil<T>(what: string, ask: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await ask();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: last ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('agentwire serve with AGENTWIRE_DATABASE_URL', () => {
  it('migrates at start, is ready, archives a chat and answers the thread list from PostgreSQL', async () => {
    const server = serve(database.url);
    try {
      const [, wsUrl, hostPort] = await server.waitForStdout(/listening on (ws:\/\/(\S+?)\/ws)/);
      const url = `http://${hostPort}`;
      const [, token] = await server.waitForStdout(/user "demo"[^\n]*\n\s*\n\s*(\S+)/);
      await pollUntil(
        'ready',
        async () => (await fetch(`${url}/readyz`)).status,
        (status) => status === 200,
      );
      const db = new pg.Client({ connectionString: database.url });
      await db.connect();
      try {
        expect((await db.query('SELECT version FROM agentwire_schema_migrations ORDER BY version')).rows).toEqual([{ version: 1 }, { version: 2 }]);
        // The thread index is built in the background after ready (not a schema version).
        await pollUntil(
          'the background index build',
          async () =>
            (await db.query<{ valid: boolean }>("SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass('agentwire_events_by_thread')"))
              .rows[0]?.valid,
          (valid) => valid === true,
        );
        const chat = new Child(['chat', '--url', wsUrl!, '--token', token!, 'what is 2+3*4?'], process.env);
        expect((await chat.waitExit()).code).toBe(0);
        const threads = await pollUntil(
          'the archived thread',
          async () =>
            (await (await fetch(`${url}/v1/threads`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
              threads: Array<{ last_run?: { status?: string } }>;
            },
          // Archiving is write-behind: the run's terminal event reaches PostgreSQL shortly after the chat ends.
          (body) => body.threads?.length === 1 && body.threads[0]?.last_run?.status === 'completed',
        );
        expect(threads.threads[0]).toMatchObject({ title: 'what is 2+3*4?', last_run: { status: 'completed' } });
        const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM agentwire_events WHERE user_id = 'demo'`);
        expect(rows[0]!.n).toBeGreaterThan(3);
        // The archive's counters on /metrics: everything this node appended is archived, nothing lost or failed.
        const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
        const metrics = await pollUntil(
          'the archive idle on /metrics',
          async () => (await fetch(`${url}/metrics`)).text(),
          (text) => metric(text, 'agentwire_archive_lag_events') === 0,
        );
        expect(metric(metrics, 'agentwire_archive_events_total')).toBe(rows[0]!.n);
        expect(metric(metrics, 'agentwire_archive_events_lost_total')).toBe(0);
        expect(metric(metrics, 'agentwire_archive_batch_failures_total')).toBe(0);
        expect(metric(metrics, 'agentwire_archive_events_dropped_total')).toBe(0);
        expect(metric(metrics, 'agentwire_archive_behind_logs')).toBe(0);
      } finally {
        await db.end();
      }
      server.signal('SIGTERM');
      expect((await server.waitExit()).code).toBe(0);
    } finally {
      await server.kill();
    }
  }, 60_000);

  it('is not ready while the database cannot be reached', async () => {
    const server = serve(`postgres://postgres@127.0.0.1:${await freePort()}/nothing`);
    try {
      const [, hostPort] = await server.waitForStdout(/listening on ws:\/\/(\S+?)\/ws/);
      const url = `http://${hostPort}`;
      const response = await fetch(`${url}/readyz`);
      expect(response.status).toBe(503);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      server.signal('SIGTERM');
      expect((await server.waitExit()).code).toBe(0);
    } finally {
      await server.kill();
    }
  }, 30_000);
});
