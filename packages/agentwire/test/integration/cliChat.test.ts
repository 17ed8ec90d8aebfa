import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../../src/engine/index.js';
import { PostgresHistoryStore } from '../../src/postgres/index.js';
import type { Agent, AgentStep } from '../../src/runs/agent.js';
import { ChildTracker, screenText, type Child } from '../helpers/childProcess.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { TcpProxy } from '../helpers/tcpProxy.js';
import { TestClient, seqProblem, type Frame } from '../helpers/wsClient.js';

/**
 * `agentwire chat` on the client SDK, beyond the one-shot cases of cli.test.ts: the interactive
 * mode driven through the child's stdin, fail-fast exit 3 when no connection can be made, and a
 * connection reset in the middle of a run that the command survives by resuming.
 */

const children = new ChildTracker();
let cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  await children.killAll();
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

/** `agentwire chat ...args` with its stdin piped to the test. */
function chat(args: string[]): Child {
  return children.spawn(['chat', ...args], {}, { stdin: 'pipe', timeoutMs: 20_000 });
}

async function gateway(options: Parameters<typeof startGateway>[0] = {}): Promise<TestGateway> {
  const env = await startGateway(options);
  cleanups.push(() => env.stop());
  return env;
}

/** The lines of a demo run from `seq` whose answer has `words` words: streamed on one line, then the end. */
const RUN_LINES = (seq: number, words: number) => [
  `#${seq} started`,
  `#${seq + 1} thinking: `,
  `#${seq + 2} tool `,
  `#${seq + 3} tool `,
  `#${seq + 4} thinking: `,
  `#${seq + 5} answer: `,
  `#${seq + 5 + words} completed`,
];

describe('agentwire chat --interactive', () => {
  it('sends each stdin line on one thread, one run after the other, and exits 0 at end of input', async () => {
    const env = await gateway();
    const child = chat(['--url', env.url, '--token', await env.token('alice'), '--thread', 'th-1']);
    await child.waitForStdout(/^connected as alice \(epoch \S+, last seq 0\)\n/);
    // Both lines at once: the second is sent only after the first run ended (ack "started",
    // not "queued"), and an empty line is skipped.
    child.write('what is 2+3*4?\n\nhow many words are here\n');
    child.endInput();
    expect(await child.waitExit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
    const lines = child.lines();
    expect(lines).toHaveLength(1 + 8 + 8);
    expect(lines[1]).toMatch(/^started run_\S+ on thread th-1$/);
    expect(lines[9]).toMatch(/^started run_\S+ on thread th-1$/);
    expect(lines[1]).not.toBe(lines[9]);
    RUN_LINES(1, 3).forEach((prefix, i) => expect(lines[2 + i]!.startsWith(prefix)).toBe(true));
    RUN_LINES(10, 5).forEach((prefix, i) => expect(lines[10 + i]!.startsWith(prefix)).toBe(true));
    // Each answer streamed onto one line; the completed text (the same) is not repeated.
    expect(lines.slice(7, 9)).toEqual(['#6 answer: 2+3*4 = 14', '#9 completed']);
    expect(lines.slice(15)).toEqual(['#15 answer: Your message has 5 words.', '#20 completed']);
  });

  it('/quit ends the session with 0 while stdin is still open; a failing run does not end it', async () => {
    const env = await gateway();
    const child = chat(['--url', env.url, '--token', await env.token('bob'), '--interactive']);
    await child.waitForStdout(/^connected as bob /);
    child.write('/fail what is 1+1?\n');
    await child.waitForStdout(/^#5 error agent_failed: demo agent failure requested by \/fail\n/m);
    expect(child.exit).toBeNull();
    child.write('what is 10/4?\n');
    await child.waitForStdout(/^#11 answer: 10\/4 = 2\.5\n#14 completed\n/m);
    expect(child.exit).toBeNull();
    child.write('/quit\n');
    expect(await child.waitExit()).toEqual({ code: 0, signal: null });
    expect(child.stderr).toBe('');
    expect(child.lines().filter((line) => line.startsWith('started run_'))).toHaveLength(2);
  });

  it('--json in interactive mode writes only NDJSON frames to stdout', async () => {
    const env = await gateway();
    const child = chat(['--url', env.url, '--token', await env.token('carol'), '--json', '--thread', 'j1']);
    await child.waitForStdout(/"type":"connection_ready"/);
    child.write('what is 7*6?\n');
    child.endInput();
    expect(await child.waitExit()).toEqual({ code: 0, signal: null });
    const frames = child.lines().map((line) => JSON.parse(line) as Frame);
    expect(frames.map((f) => f.type)).toEqual(['connection_ready', 'ack', ...demoRunTypes('what is 7*6?')]);
    expect(frames[1]).toMatchObject({ status: 'started', thread_id: 'j1' });
    expect(seqProblem(frames.slice(2), 0)).toBeNull();
    expect(frames.at(-1)).toMatchObject({ text: '7*6 = 42' });
  });
});

describe('agentwire chat: connection failures and recovery', () => {
  it('exits 3 at once when nothing listens on the URL, naming the error and what to do', async () => {
    const port = await freePort();
    const child = chat(['--url', `ws://127.0.0.1:${port}/ws`, '--token', 'x.y.z', 'hello']);
    expect(await child.waitExit()).toEqual({ code: 3, signal: null });
    expect(child.stdout).toBe('');
    expect(child.stderr).toBe(
      `agentwire chat: cannot connect to ws://127.0.0.1:${port}/ws (connect ECONNREFUSED 127.0.0.1:${port}) — ` +
        'is a gateway running there? (start one with: npx agentwire serve)\n',
    );
  });

  it('refuses an http:// URL before connecting (exit 2), naming the ws:// URL meant', async () => {
    const env = await gateway();
    const child = chat(['--url', env.url.replace(/^ws:/, 'http:'), '--token', await env.token('fay'), 'hello']);
    expect(await child.waitExit()).toEqual({ code: 2, signal: null });
    expect(child.stdout).toBe('');
    expect(child.stderr).toBe(`agentwire chat: --url is http://…: use ws:// or wss:// (did you mean ${env.url}?)\n(see agentwire chat --help)\n`);
    expect(env.gateway.connectionCount).toBe(0);
  });

  it('survives a connection reset in the middle of a run: reconnects, resumes and exits 0', async () => {
    const gates: Array<() => void> = [];
    const agent: Agent = {
      async *run({ text }): AsyncGenerator<AgentStep> {
        yield { type: 'thinking', text: 'before the reset' };
        await new Promise<void>((resolve) => gates.push(resolve));
        yield { type: 'thinking', text: 'after the reset' };
        yield { type: 'answer', text: `echo: ${text}` };
      },
    };
    const env = await gateway({ agent });
    const proxy = await TcpProxy.start(env.port);
    cleanups.push(() => proxy.close());
    const child = chat(['--url', `ws://127.0.0.1:${proxy.port}/ws`, '--token', await env.token('dave'), 'hi there']);
    const other = new TestClient(env.url, { token: await env.token('dave') });
    cleanups.push(async () => other.close());
    await other.ready();
    await child.waitForStdout(/^#2 thinking: before the reset\n/m);
    // The command's next connection is held at the proxy until the run has ended.
    proxy.stallNew = true;
    proxy.reset();
    await child.waitForStderr(/^agentwire chat: connection lost \(connection closed with 1006\); reconnecting\n/);
    // The run goes on while the command is away; it resumes and prints what it missed.
    gates.shift()!();
    await other.waitFor((f) => f.type === 'agent_completed', 5000, 'the end of the run');
    proxy.stallNew = false;
    proxy.unstall();
    expect(await child.waitExit()).toEqual({ code: 0, signal: null });
    expect(child.lines().map((line) => line.replace(/run_\S+/, 'RUN').replace(/epoch \S+,/, 'epoch E,'))).toEqual([
      'connected as dave (epoch E, last seq 0)',
      'started RUN on thread ' + child.lines()[1]!.split(' on thread ')[1],
      '#1 started',
      '#2 thinking: before the reset',
      'reconnected as dave (epoch E, last seq 4, 2 missed events replayed)',
      '#3 thinking: after the reset',
      '#4 completed: echo: hi there',
    ]);
    expect(child.stderr).toBe('agentwire chat: connection lost (connection closed with 1006); reconnecting\n');
    expect(proxy.accepted).toBe(2);
  });

  it('a run that ends while the server cannot resume is reloaded from the history: said on stderr, exit by its outcome', async () => {
    const gates: Array<() => void> = [];
    const words = ['two ', 'three ', 'four ', 'five ', 'six ', 'seven ', 'eight ', 'nine'];
    const agent: Agent = {
      async *run(): AsyncGenerator<AgentStep> {
        yield { type: 'text_delta', text: 'one ' };
        await new Promise<void>((resolve) => gates.push(resolve));
        for (const word of words) yield { type: 'text_delta', text: word };
      },
    };
    // Six events retained: the command's position leaves the log while it is away; the thread
    // stays in the PostgreSQL archive, where the SDK reloads the run's answer from.
    const engine = new MemoryEngine({ retentionEvents: 6 });
    const database = await createTestDatabase();
    const history = new PostgresHistoryStore({ url: database.url, engine });
    cleanups.push(async () => {
      await history.close();
      await database.drop();
    });
    await history.ready();
    const env = await gateway({ agent, engine, history });
    const proxy = await TcpProxy.start(env.port);
    cleanups.push(() => proxy.close());
    const child = chat(['--url', `ws://127.0.0.1:${proxy.port}/ws`, '--token', await env.token('erin'), 'hi there']);
    const other = new TestClient(env.url, { token: await env.token('erin') });
    cleanups.push(async () => other.close());
    await other.ready();
    await child.waitForStdout(/^#2 answer: one /m);
    proxy.stallNew = true;
    proxy.reset();
    await child.waitForStderr(/connection lost/);
    gates.shift()!();
    await other.waitFor((f) => f.type === 'agent_completed', 5000, 'the end of the run');
    await history.idle();
    proxy.stallNew = false;
    proxy.unstall();
    expect(await child.waitExit()).toEqual({ code: 0, signal: null });
    const answer = `one ${words.join('')}`;
    expect(child.stderr.replace(/run_\S+/, 'RUN').replace(/\(epoch \S+ -> [^)]+\)/, '(epoch E -> E)')).toBe(
      'agentwire chat: connection lost (connection closed with 1006); reconnecting\n' +
        'agentwire chat: the server could not resume (epoch E -> E); events may be missing\n' +
        `agentwire chat: run RUN reloaded from the thread's history (completed); the answer so far: ${answer}\n`,
    );
  });
});

/** Yields `steps`, then waits until the run is aborted (cancel, timeout). */
async function* untilAborted(signal: AbortSignal, steps: AgentStep[]): AsyncGenerator<AgentStep> {
  yield* steps;
  await new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
}

describe('agentwire chat: Ctrl-C', () => {
  it('SIGINT during a run cancels it, prints how it ended and exits 130', async () => {
    const env = await gateway();
    const token = await env.token('gus');
    const other = new TestClient(env.url, { token });
    cleanups.push(async () => other.close());
    await other.ready();
    const child = chat(['--url', env.url, '--token', token, '/hang until cancelled']);
    await child.waitForStdout(/^#2 thinking: /m);
    child.signal('SIGINT');
    const end = await other.waitFor((f) => f.type === 'agent_completed' || f.type === 'agent_error', 5000, 'the end of the run');
    expect(end).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    expect(await child.waitExit()).toEqual({ code: 130, signal: null });
    expect(child.lines().at(-1)).toBe(`#${end.seq} cancelled: `);
    expect(child.stderr).toMatch(/^agentwire chat: cancelling run_\S+ \(Ctrl-C again to quit without waiting\)\n$/);
  });

  it('prints each delta as it arrives, on one line; SIGINT mid-answer ends that line, cancels and prints the end on its own line', async () => {
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const agent: Agent = {
      async *run({ signal }): AsyncGenerator<AgentStep> {
        yield { type: 'text_delta', text: 'Hello' };
        await released;
        yield* untilAborted(signal, [{ type: 'text_delta', text: ', wor' }]);
      },
    };
    const env = await gateway({ agent });
    const child = chat(['--url', env.url, '--token', await env.token('kim'), 'hi']);
    // The fragment is on screen before the line ends: no newline per delta.
    await child.waitForStdout(/^#2 answer: Hello$/m);
    expect(child.stdout.endsWith('#2 answer: Hello')).toBe(true);
    release();
    await child.waitForStdout(/^#2 answer: Hello, wor$/m);
    child.signal('SIGINT');
    expect(await child.waitExit()).toEqual({ code: 130, signal: null });
    expect(child.lines().slice(-3)).toEqual(['#1 started', '#2 answer: Hello, wor', '#4 cancelled']);
    expect(child.stderr).toMatch(/^agentwire chat: cancelling run_\S+ \(Ctrl-C again to quit without waiting\)\n$/);
  });

  it('SIGINT while connecting (no run yet) exits 130 at once', async () => {
    // A listener that accepts TCP but never answers the upgrade: the command is stuck connecting.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    });
    const accepted = new Promise<void>((resolve) => silent.once('connection', () => resolve()));
    const { port } = silent.address() as net.AddressInfo;
    const child = chat(['--url', `ws://127.0.0.1:${port}/ws`, '--token', 'x.y.z', 'hello']);
    await accepted;
    child.signal('SIGINT');
    expect(await child.waitExit()).toEqual({ code: 130, signal: null });
    expect(child.stdout).toBe('');
  });
});

describe('agentwire chat at a terminal (pseudo-terminal)', () => {
  /** `agentwire chat ...args` at a terminal: `write` types, `stdout` is the screen. */
  function chatAtTerminal(args: string[]): Child {
    return children.spawn(['chat', ...args], { TERM: 'xterm' }, { terminal: true, timeoutMs: 20_000 });
  }

  it('text typed while a run prints is not shown inside its output; Ctrl-C (a key in raw mode) cancels the run, exit 130', async () => {
    const env = await gateway();
    const token = await env.token('hal');
    const other = new TestClient(env.url, { token });
    cleanups.push(async () => other.close());
    await other.ready();
    const child = chatAtTerminal(['--url', env.url, '--token', token, '--thread', 'tty-1']);
    await child.waitForStdout(/> /);
    child.write('/hang still there?\r');
    await child.waitForStdout(/#2 thinking: /);
    // Typed during the run, then Ctrl-C: the terminal delivers both in this order, so the
    // text has been read (and, before the fix, echoed) by the time the cancel goes out.
    child.write('typed during the run');
    child.write('\x03');
    const end = await other.waitFor((f) => f.type === 'agent_completed' || f.type === 'agent_error', 10_000, 'the end of the run');
    expect(end).toMatchObject({ type: 'agent_completed', status: 'cancelled' });
    expect(await child.waitExit()).toEqual({ code: 130, signal: null });
    const screen = screenText(child.stdout);
    expect(screen).not.toContain('typed during the run');
    const lines = screen.split('\n').filter((line) => line.length > 0);
    expect(lines.slice(-4)).toEqual([
      '#1 started',
      '#2 thinking: Reading your message (2 words).',
      expect.stringMatching(/^agentwire chat: cancelling run_\S+ \(Ctrl-C again to quit without waiting\)$/),
      `#${end.seq} cancelled: `,
    ]);
  });

  it('a line typed during a run waits for it to end, then is shown at the prompt and sent', async () => {
    const env = await gateway();
    const child = chatAtTerminal(['--url', env.url, '--token', await env.token('ida'), '--thread', 'tty-2']);
    await child.waitForStdout(/> /);
    child.write('/slow 150 what is 1+1?\r');
    await child.waitForStdout(/#2 thinking: /);
    child.write('what is 2+2?\r');
    // The prompt is back (after escape sequences) before Ctrl-D is typed at it.
    // eslint-disable-next-line no-control-regex -- matches the terminal's ESC-led escape sequences
    await child.waitForStdout(/#18 completed\r?\n(?:\x1b\[[0-9;?]*[A-Za-z])*> /);
    child.write('\x04'); // Ctrl-D at an empty prompt
    expect(await child.waitExit()).toEqual({ code: 0, signal: null });
    const lines = screenText(child.stdout)
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => line.replace(/run_\S+/, 'RUN').replace(/ \(epoch .*$/, ''));
    expect(lines).toEqual([
      'connected as ida',
      '> /slow 150 what is 1+1?',
      'started RUN on thread tty-2',
      ...RUN_LINES(1, 3).map((prefix) => expect.stringMatching(`^${escapeRegExp(prefix)}`)),
      '> what is 2+2?',
      'started RUN on thread tty-2',
      ...RUN_LINES(10, 3).map((prefix) => expect.stringMatching(`^${escapeRegExp(prefix)}`)),
      '> ',
    ]);
    expect(lines[8]).toBe('#6 answer: 1+1 = 2');
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A port that nothing listens on (bound, read, released). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
