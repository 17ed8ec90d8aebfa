import { request } from 'node:http';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { createTokenVerifier, signToken } from '../../src/auth/index.js';
import { ChildTracker, type Child } from '../helpers/childProcess.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { CONTRACT_SETTINGS } from '../helpers/settings.js';
import { httpGet } from '../helpers/http.js';
import { TEST_SECRET } from '../helpers/gateway.js';
import { TestClient, seqProblem, type Frame } from '../helpers/wsClient.js';

const children = new ChildTracker();
afterEach(async () => children.killAll());

/** Splits a printed shell command line into arguments (double-quoted parts stay whole). */
function shellWords(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

interface DevServer {
  child: Child;
  url: string;
  token: string;
  /** The arguments of the printed `agentwire chat` command line, after `chat`. */
  chatArgs: string[];
}

/** `agentwire serve` in dev mode: no JWT setting, NODE_ENV unset, a free port. */
async function startDevServer(): Promise<DevServer> {
  const child = children.spawn(['serve'], { PORT: '0' });
  const [, url] = await child.waitForStdout(/^agentwire listening on (ws:\/\/127\.0\.0\.1:\d+\/ws)$/m);
  const [, token] = await child.waitForStdout(/^A token for user "demo" \(valid 24 h\):\n\n {2}(\S+)\n/m);
  const [, chatLine] = await child.waitForStdout(/^ *npx agentwire chat (.+)\n/m);
  return { child, url: url!, token: token!, chatArgs: shellWords(chatLine!) };
}

/** Runs `node bin/agentwire.mjs chat ...` and waits for it to exit. */
async function chat(args: string[]) {
  const child = children.spawn(['chat', ...args]);
  const exit = await child.waitExit(20_000);
  return { exit, stdout: child.stdout, stderr: child.stderr };
}

describe('agentwire serve in dev mode + agentwire chat', () => {
  it('prints a ready token and a chat command that works as printed', async () => {
    const server = await startDevServer();
    expect(server.chatArgs).toEqual(['--url', server.url, '--token', server.token, 'what is 2+3*4?']);
    // The printed token is for user demo and lives 24 h.
    expect(decodeProtectedHeader(server.token).alg).toBe('HS256');
    const claims = decodeJwt(server.token);
    expect(claims.sub).toBe('demo');
    expect(claims.exp! - claims.iat!).toBe(86_400);

    const { exit, stdout, stderr } = await chat(server.chatArgs);
    expect(stderr).toBe('');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(stdout).toContain('connected as demo');
    expect(stdout).toContain('2+3*4 = 14');
    expect(stdout.trimEnd().split('\n').slice(-2)).toEqual(['#6 answer: 2+3*4 = 14', '#9 completed']);
    expect(server.child.running).toBe(true);
  });

  it('--json prints one parseable JSON frame per line: ready, ack, then the run in seq order', async () => {
    const server = await startDevServer();
    const { exit, stdout, stderr } = await chat(['--url', server.url, '--token', server.token, '--json', 'what is 2+3*4?']);
    expect(stderr).toBe('');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(stdout.endsWith('\n')).toBe(true);
    const frames = stdout
      .slice(0, -1)
      .split('\n')
      .map((line) => JSON.parse(line) as Frame);
    expect(frames.map((f) => f.type)).toEqual(['connection_ready', 'ack', ...demoRunTypes('what is 2+3*4?')]);
    expect(frames[0]).toMatchObject({ protocol: 'agentwire.v1', user_id: 'demo', last_seq: 0, resumed: false });
    expect(frames[1]).toMatchObject({ status: 'started' });
    const events = frames.slice(2);
    expect(events.every((f) => f.run_id === frames[1]!.run_id)).toBe(true);
    expect(seqProblem(events, 0)).toBeNull();
    expect(events.at(-1)).toMatchObject({ status: 'completed', text: '2+3*4 = 14' });
  });

  it('exits non-zero when the run fails (/fail)', async () => {
    const server = await startDevServer();
    const { exit, stdout, stderr } = await chat(['--url', server.url, '--token', server.token, '/fail what is 1+1?']);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(stderr).toBe('');
    expect(stdout).toContain('tool calculator ok: 2');
    expect(stdout.trimEnd().split('\n').at(-1)).toBe('#5 error agent_failed: demo agent failure requested by /fail');
  });

  it('exits non-zero with a message naming close code 4401 when the token is bad', async () => {
    const server = await startDevServer();
    const forged = (await signToken('not-the-dev-secret-0123456789abcdef', { sub: 'demo', ttlSec: 600 })).token;
    const { exit, stdout, stderr } = await chat(['--url', server.url, '--token', forged, 'hello']);
    expect(exit.code).not.toBe(0);
    expect(exit).toEqual({ code: 3, signal: null });
    expect(stdout).toBe('');
    expect(stderr).toBe('agentwire chat: connection closed with 4401 (token_invalid)\n');
    expect(server.child.running).toBe(true);
  });
});

describe('agentwire serve start-up errors', () => {
  /** Runs `agentwire serve` with `env`; it must exit non-zero with nothing on stdout and one stderr line, returned. */
  async function startupError(env: Record<string, string>): Promise<string> {
    const child = children.spawn(['serve'], env);
    const exit = await child.waitExit();
    expect(exit.code).not.toBe(0);
    expect(exit.signal).toBeNull();
    expect(child.stdout).toBe('');
    expect(child.stderr).toMatch(/^[^\n]+\n$/);
    return child.stderr;
  }

  it('stops with one stderr line naming AGENTWIRE_HEARTBEAT_MS when it is not a number', async () => {
    const line = await startupError({ PORT: '0', AGENTWIRE_HEARTBEAT_MS: 'abc' });
    expect(line).toContain('AGENTWIRE_HEARTBEAT_MS');
    expect(line).toContain('"abc"');
  });

  it('stops with one stderr line naming AGENTWIRE_JWT_SECRET in production without a key', async () => {
    const line = await startupError({ PORT: '0', NODE_ENV: 'production' });
    expect(line).toContain('AGENTWIRE_JWT_SECRET');
    expect(line).toContain('production');
  });
});

describe('agentwire serve --help and agentwire token', () => {
  it('serve --help lists every setting of the configuration contract (PROTOCOL.md section 12)', async () => {
    const child = children.spawn(['serve', '--help']);
    const exit = await child.waitExit();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
    const words = new Set(child.stdout.split(/\s+/));
    const missing = CONTRACT_SETTINGS.filter((name) => !words.has(name));
    expect(missing).toEqual([]);
  });

  it('token --secret s --user u prints one HS256 JWT for u that verifies with s (and only with s)', async () => {
    const child = children.spawn(['token', '--secret', 's', '--user', 'u']);
    const exit = await child.waitExit();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
    expect(child.stdout).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$/);
    const token = child.stdout.trim();
    expect(decodeProtectedHeader(token).alg).toBe('HS256');
    const verified = await createTokenVerifier({ secret: 's' }).verify(token);
    expect(verified).toMatchObject({ ok: true, userId: 'u' });
    const claims = decodeJwt(token);
    expect(claims.exp! - claims.iat!).toBe(3600);
    expect(await createTokenVerifier({ secret: 't' }).verify(token)).toMatchObject({ ok: false, reason: 'token_invalid' });
  });
});

describe('--help and mistyped options on every command', () => {
  /** Spawns every case at once and waits for all of them to exit. */
  async function runAll(cases: string[][]): Promise<Child[]> {
    const spawned = cases.map((args) => children.spawn(args));
    await Promise.all(spawned.map((child) => child.waitExit(30_000)));
    return spawned;
  }

  it("<command> --help (or -h) prints that command's usage on stdout and exits 0, whatever else is wrong", async () => {
    // serve --help is covered above; help wins over a bad URL or a stray argument.
    const cases = [
      ['chat', '--help'],
      ['token', '--help'],
      ['storm', '-h'],
      ['chat', '--url', 'http://nowhere', '--thred', 'x', '-h'],
    ];
    const spawned = await runAll(cases);
    cases.forEach((args, i) => {
      const child = spawned[i]!;
      expect(child.exit, args.join(' ')).toEqual({ code: 0, signal: null });
      expect(child.stderr, args.join(' ')).toBe('');
      expect(child.stdout, args.join(' ')).toMatch(new RegExp(`^agentwire ${args[0]} — `));
    });
  });

  it('an unknown option or command is named with the closest known one, on stderr, exit 2', async () => {
    const cases: Array<[string[], string]> = [
      [['chat', '--thred', 't1', 'hello'], 'agentwire chat: unknown option --thred (did you mean --thread?)\n(see agentwire chat --help)\n'],
      [['token', '--secret', 's', '--usr', 'u'], 'agentwire token: unknown option --usr (did you mean --user?)\n(see agentwire token --help)\n'],
      [['storm', '--conections', '5'], 'agentwire storm: unknown option --conections (did you mean --connections?)\n(see agentwire storm --help)\n'],
      [['chta'], 'agentwire: unknown command "chta" (did you mean chat?)\n\n'],
    ];
    const spawned = await runAll(cases.map(([args]) => args));
    cases.forEach(([args, text], i) => {
      const child = spawned[i]!;
      expect(child.exit, args.join(' ')).toEqual({ code: 2, signal: null });
      expect(child.stdout, args.join(' ')).toBe('');
      expect(child.stderr.startsWith(text), `${args.join(' ')}: ${child.stderr}`).toBe(true);
    });
  });
});

describe('agentwire serve: the storm probe and the chat page', () => {
  it('dev mode opens the test-token route with a printed random bypass key and prints a storm command using it', async () => {
    // Two starts: each makes its own key.
    const [server, other] = await Promise.all([startDevServer(), startDevServer()]);
    const [, stormLine] = await server.child.waitForStdout(/^ *npx agentwire storm (.+)\n/m);
    const args = shellWords(stormLine!);
    expect(args.slice(0, 3)).toEqual(['--url', server.url, '--bypass-key']);
    const key = args[3]!;
    expect(key.length).toBeGreaterThanOrEqual(16);
    const base = server.url.replace(/^ws:/, 'http:').replace(/\/ws$/, '');
    const post = (bypassKey: string) =>
      fetch(`${base}/v1/auth/test-token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-e2e-bypass-key': bypassKey },
        body: JSON.stringify({ user_id: 'storm-u0', ttl_s: 600 }),
      });
    const wrong = await post(`${key}x`);
    expect(wrong.status).toBe(401);
    await wrong.body?.cancel();
    const res = await post(key);
    expect(res.status).toBe(200);
    const { token } = (await res.json()) as { token: string };
    const client = new TestClient(server.url, { token });
    try {
      expect(await client.ready()).toMatchObject({ user_id: 'storm-u0' });
    } finally {
      client.close();
    }
    const [, otherLine] = await other.child.waitForStdout(/^ *npx agentwire storm (.+)\n/m);
    expect(shellWords(otherLine!)[3]).not.toBe(key);
  });

  it('dev mode puts the demo token only into a page asked for by a loopback name, not by another name (DNS rebinding)', async () => {
    const server = await startDevServer();
    const port = new URL(server.url).port;
    const configOf = (host: string) =>
      new Promise<{ token: string | null }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/', agent: false, headers: { host } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve(JSON.parse(/id="agentwire-config">(.*?)<\/script>/.exec(text)![1]!) as { token: string | null }));
        });
        req.on('error', reject);
        req.end();
      });
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, '127.0.0.1']) {
      expect(decodeJwt((await configOf(host)).token!).sub, host).toBe('demo');
    }
    // A site whose name resolves to 127.0.0.1 would read the page as its own: it gets none.
    for (const host of [`attacker.example:${port}`, `127.0.0.1.attacker.example:${port}`, `127.attacker.example:${port}`]) {
      expect((await configOf(host)).token, host).toBeNull();
    }
  });

  it('AGENTWIRE_CHAT_PAGE=true (or --chat-page) serves the chat page with a configured secret, without a token in it', async () => {
    const withEnv = children.spawn(['serve'], { PORT: '0', AGENTWIRE_JWT_SECRET: TEST_SECRET, AGENTWIRE_CHAT_PAGE: 'true' });
    const withFlag = children.spawn(['serve', '--chat-page'], { PORT: '0', AGENTWIRE_JWT_SECRET: TEST_SECRET });
    const without = children.spawn(['serve'], { PORT: '0', AGENTWIRE_JWT_SECRET: TEST_SECRET });
    const pageOf = async (child: Child) => {
      const [, url] = await child.waitForStdout(/^agentwire listening on ws:\/\/(127\.0\.0\.1:\d+)\/ws$/m);
      return httpGet(`http://${url}/`);
    };
    for (const child of [withEnv, withFlag]) {
      const page = await pageOf(child);
      expect(page.status).toBe(200);
      expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
      // No token in the page: it shows its sign-in form and asks for one.
      expect(page.text).toContain('<script type="application/json" id="agentwire-config">{"wsUrl":"/ws","token":null}</script>');
      expect(page.text).toContain('id="token-form"');
      expect(child.stdout).toMatch(/^chat page on http:\/\/127\.0\.0\.1:\d+\/ \(it asks for a token\)$/m);
    }
    expect((await pageOf(without)).status).toBe(404);
    expect(without.stdout).not.toContain('chat page');
  });
});
