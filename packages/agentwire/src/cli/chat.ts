import { randomUUID } from 'node:crypto';
import { createInterface, type Interface } from 'node:readline';
import { Writable } from 'node:stream';
import {
  HistoryResetError,
  RequestError,
  createClient,
  type AgentwireClient,
  type CloseInfo,
  type DisconnectInfo,
  type HistoryAssistantMessage,
} from '@agentwire/client/node';
import { commandArgs, usageError, type CommandSpec } from './args.js';
import { TranscriptFormatter } from './formatEvent.js';

/** Exit codes: 0 agent_completed (or a clean end of the interactive session), 1 agent_error, 3 connection, 130 Ctrl-C. */
const EXIT_COMPLETED = 0;
const EXIT_AGENT_ERROR = 1;
const EXIT_CONNECTION = 3;
const EXIT_INTERRUPTED = 130;

/** After Ctrl-C, how long the cancelled run gets to send its terminal event before the command exits. */
const CANCEL_WAIT_MS = 2000;
/** Lines typed ahead (or piped in) beyond this pause reading stdin until the runs catch up. */
const MAX_QUEUED_LINES = 64;
const DEFAULT_URL = 'ws://127.0.0.1:8080/ws';

const CHAT_COMMAND: CommandSpec = {
  name: 'chat',
  help: `agentwire chat — talk to an agentwire gateway

Usage:
  agentwire chat [flags] "text"     send one message, print its run, exit with its outcome
  agentwire chat [flags]            a prompt on one thread: each line is sent, its run printed

  --url U              ws:// or wss:// endpoint (default $AGENTWIRE_URL or ${DEFAULT_URL})
  --token T            a JWT for the gateway (default $AGENTWIRE_TOKEN; \`npm start\` prints one in dev mode)
  --thread ID          the thread to talk on (default a new cli-xxxxxxxx)
  --json               print the server's frames as NDJSON instead of text
  -i, --interactive    the prompt even when a text is given (the text is sent first)
  --timeout-ms N       deadline for connecting, and for each run (default 130000)
  -h, --help           this help

A streamed answer is printed as it arrives, on one line. Ctrl-C during a run cancels it,
prints how it ended and exits 130. At the prompt, Ctrl-D or
/quit ends the session (0); lines typed while a run prints wait for their turn.

Exit status: 0 completed, 1 agent_error, 2 bad usage, 3 no connection or timed out, 130 Ctrl-C.
`,
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    thread: { type: 'string' },
    json: { type: 'boolean', default: false },
    interactive: { type: 'boolean', short: 'i', default: false },
    'timeout-ms': { type: 'string', default: '130000' },
  },
};

/**
 * `agentwire chat "text"`: connects with the client SDK, sends one message, prints the run's
 * events as they arrive (a streamed answer fragment by fragment on one line) and exits 0 on `agent_completed`, 1 on `agent_error`, 3 when the
 * connection fails or times out. A connection lost after it was ready is resumed by the SDK
 * (noted on stderr) and the run is followed to its end.
 *
 * With no text (or `--interactive`): a prompt on one thread; each line is sent and its run
 * printed, then the prompt returns. Ctrl-D or `/quit` ends the session with 0.
 */
export async function runChat(argv: string[]): Promise<number> {
  const parsed = commandArgs(CHAT_COMMAND, argv);
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const text = positionals.join(' ').trim();
  const interactive = values.interactive === true || !text;
  const url = (values.url as string | undefined) ?? process.env.AGENTWIRE_URL ?? DEFAULT_URL;
  const urlProblem = checkWebSocketUrl(url);
  if (urlProblem) return usageError('chat', `agentwire chat: ${urlProblem}`);
  const token = (values.token as string | undefined) ?? process.env.AGENTWIRE_TOKEN;
  if (!token) return usageError('chat', 'agentwire chat: --token (or AGENTWIRE_TOKEN) is required; `npm start` prints one in dev mode');
  const timeoutMs = Number(values['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
    return usageError('chat', `agentwire chat: --timeout-ms must be an integer >= 1 (got "${values['timeout-ms']}")`);
  }
  const session = new ChatSession({
    url,
    token,
    threadId: (values.thread as string | undefined) ?? `cli-${randomUUID().slice(0, 8)}`,
    json: values.json === true,
    timeoutMs,
  });
  const onSigint = () => session.interrupt();
  process.on('SIGINT', onSigint);
  try {
    return interactive ? await session.interactive(text) : await session.once(text);
  } finally {
    process.off('SIGINT', onSigint);
    session.close();
  }
}

/** Why `url` cannot be dialled, or null. The SDK would take http:// too, but the CLI asks for what it means. */
export function checkWebSocketUrl(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `--url is not a URL (got "${url}"): use ws:// or wss://, e.g. ${DEFAULT_URL}`;
  }
  if (parsed.protocol === 'ws:' || parsed.protocol === 'wss:') return null;
  const meant = parsed.protocol === 'http:' || parsed.protocol === 'https:' ? ` (did you mean ${url.replace(/^http/i, 'ws')}?)` : '';
  return `--url is ${parsed.protocol}//…: use ws:// or wss://${meant}`;
}

interface SessionOptions {
  url: string;
  token: string;
  threadId: string;
  json: boolean;
  timeoutMs: number;
}

class ChatSession {
  readonly #client: AgentwireClient;
  readonly #options: SessionOptions;
  #everReady = false;
  #ended = false;
  /** Resolves with exit code 3 once the connection failed for good. */
  readonly #connectionFailed: Promise<number>;
  /** The run being followed: null between runs; its id is null until the ack. */
  #run: { id: string | null } | null = null;
  #interrupts = 0;
  /** Resolves at the first Ctrl-C. */
  readonly #interrupted: Promise<void>;
  #onInterrupted!: () => void;
  /** Resolves at the second Ctrl-C: stop waiting for the cancelled run. */
  readonly #quitNow: Promise<void>;
  #onQuitNow!: () => void;
  /** The interactive prompt, while there is one: output goes around it. */
  #prompt: Prompt | null = null;
  /** Text mode: keeps a streamed answer on one line until other output comes. */
  readonly #transcript = new TranscriptFormatter();

  constructor(options: SessionOptions) {
    this.#options = options;
    this.#interrupted = new Promise((resolve) => (this.#onInterrupted = resolve));
    this.#quitNow = new Promise((resolve) => (this.#onQuitNow = resolve));
    // Before the first ready, a failure ends the command (fail fast, as a CLI should); after
    // it, the SDK reconnects and resumes, within a bounded number of retries.
    this.#client = createClient({ url: options.url, token: options.token, maxRetries: 8 });
    this.#client.on('ready', (frame) => this.#print(frame as unknown as Record<string, unknown>));
    this.#client.on('history_reset', (reset) =>
      this.#warn(`the server could not resume (epoch ${reset.previousEpoch} -> ${reset.epoch}); events may be missing`),
    );
    this.#connectionFailed = new Promise<number>((resolve) => {
      this.#client.on('disconnect', (info) => {
        if (this.#ended) return;
        if (!this.#everReady) {
          this.#ended = true;
          this.#warn(info.error ? cannotConnect(options.url, info.error) : describeLoss(info));
          resolve(EXIT_CONNECTION);
          return;
        }
        this.#warn(`connection lost (${describeLoss(info)}); reconnecting`);
      });
      this.#client.on('closed', (info) => {
        if (this.#ended) return;
        this.#ended = true;
        this.#warn(describeLoss(info));
        resolve(EXIT_CONNECTION);
      });
    });
    this.#client.on('ready', () => {
      this.#everReady = true;
    });
  }

  /** One message, one run; the deadline covers connecting and the whole run. */
  async once(text: string): Promise<number> {
    return this.#withDeadline(async () => {
      await this.#client.connect();
      return this.#ask(text);
    });
  }

  /** A prompt on one thread until Ctrl-D or /quit (0), Ctrl-C (130) or the connection fails (3). */
  async interactive(firstText: string): Promise<number> {
    const connected = await this.#withDeadline(async () => {
      await this.#client.connect();
      return EXIT_COMPLETED;
    });
    if (connected !== EXIT_COMPLETED) return connected;
    // The prompt (and the echo of what is typed) only for people: not into a pipe, and not
    // between NDJSON lines.
    const promptOutput = !this.#options.json && process.stdout.isTTY === true ? process.stdout : process.stderr;
    const prompt = new Prompt(promptOutput, () => this.interrupt());
    this.#prompt = prompt;
    try {
      let line: string | null = firstText;
      for (;;) {
        if (line) {
          if (line === '/quit' || line === '/exit') return EXIT_COMPLETED;
          const code = await this.#withDeadline(() => this.#ask(line!));
          if (code === EXIT_CONNECTION || code === EXIT_INTERRUPTED) return code;
        }
        const next = await Promise.race([
          prompt.nextLine(),
          this.#connectionFailed.then((code) => ({ exit: code })),
          this.#interrupted.then(() => ({ exit: EXIT_INTERRUPTED })),
        ]);
        if (next === null) return EXIT_COMPLETED;
        if (typeof next === 'object') return next.exit;
        line = next.trim();
      }
    } finally {
      this.#prompt = null;
      prompt.close();
    }
  }

  /**
   * Ctrl-C. The first cancels the run in progress (the command exits 130 once its terminal
   * event is printed, or after CANCEL_WAIT_MS), or ends the command at once when no run is in
   * progress; the second stops the wait.
   */
  interrupt(): void {
    this.#interrupts++;
    if (this.#interrupts > 1) {
      this.#onQuitNow();
      return;
    }
    this.#onInterrupted();
    this.#cancelRun();
  }

  close(): void {
    this.#ended = true;
    this.#client.close();
    this.#endLine();
  }

  /** Sends `text` and prints the ack and the run's events; resolves with the run's exit code. */
  async #ask(text: string): Promise<number> {
    const { ack, events } = this.#client.ask(this.#options.threadId, text);
    const run: { id: string | null } = { id: null };
    this.#run = run;
    try {
      try {
        const answer = await ack;
        this.#print(answer as unknown as Record<string, unknown>);
        run.id = answer.run_id;
      } catch (error) {
        if (error instanceof RequestError) {
          this.#print(error.frame as unknown as Record<string, unknown>);
          return EXIT_AGENT_ERROR;
        }
        return EXIT_CONNECTION;
      }
      // Ctrl-C before the ack: the run can only be cancelled now that it has an id.
      if (this.#interrupts > 0) this.#cancelRun();
      try {
        // After resumed:false the SDK reloads the run's answer from the thread's history.
        let reloaded: HistoryAssistantMessage | null = null;
        const noteReload = () => {
          if (events.reloaded === null || events.reloaded === reloaded) return;
          reloaded = events.reloaded;
          this.#warn(`run ${run.id} reloaded from the thread's history (${reloaded.status}); the answer so far: ${reloaded.text}`);
        };
        for await (const event of events) {
          noteReload();
          this.#print(event as unknown as Record<string, unknown>);
          if (event.type === 'agent_completed') return EXIT_COMPLETED;
          if (event.type === 'agent_error') return EXIT_AGENT_ERROR;
        }
        noteReload();
        // Ended while the connection could not resume: its outcome is the reloaded answer's.
        const outcome = events.reloaded?.status;
        if (outcome === 'completed' || outcome === 'cancelled') return EXIT_COMPLETED;
        if (outcome === 'error') return EXIT_AGENT_ERROR;
      } catch (error) {
        if (error instanceof HistoryResetError) this.#warn(`lost track of run ${run.id}: ${error.message}`);
        return EXIT_CONNECTION;
      }
      return EXIT_CONNECTION;
    } finally {
      if (this.#run === run) this.#run = null;
    }
  }

  #cancelRun(): void {
    const id = this.#run?.id;
    if (!id) return;
    this.#warn(`cancelling ${id} (Ctrl-C again to quit without waiting)`);
    this.#client.cancel(id).catch(() => {
      // Answered by the terminal event or by the wait running out.
    });
  }

  /** Races `work` against the connection failing, against --timeout-ms and against Ctrl-C. */
  async #withDeadline(work: () => Promise<number>): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<number>((resolve) => {
      timer = setTimeout(() => {
        if (!this.#ended) this.#warn(`no terminal event within ${this.#options.timeoutMs} ms`);
        this.#ended = true;
        resolve(EXIT_CONNECTION);
      }, this.#options.timeoutMs);
    });
    // Once Ctrl-C was pressed the command exits 130, however the run ended.
    const done = work().then(
      (code) => (this.#interrupts > 0 ? EXIT_INTERRUPTED : code),
      () => EXIT_CONNECTION,
    );
    const interrupted = this.#interrupted.then(() => this.#afterInterrupt(done));
    try {
      return await Promise.race([done, this.#connectionFailed, deadline, interrupted]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** After Ctrl-C: a run in progress gets CANCEL_WAIT_MS to end (its terminal event is printed by #ask). */
  async #afterInterrupt(done: Promise<number>): Promise<number> {
    if (this.#run !== null) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waited = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.#warn(`the run did not end within ${CANCEL_WAIT_MS} ms of Ctrl-C; it may still be running`);
          resolve();
        }, CANCEL_WAIT_MS);
      });
      try {
        await Promise.race([done, waited, this.#quitNow]);
      } finally {
        clearTimeout(timer);
      }
    }
    this.#ended = true;
    return EXIT_INTERRUPTED;
  }

  #print(frame: Record<string, unknown>): void {
    const text = this.#options.json ? `${JSON.stringify(frame)}\n` : this.#transcript.format(frame);
    if (text) this.#write(process.stdout, text);
  }

  #warn(message: string): void {
    this.#endLine();
    this.#write(process.stderr, `agentwire chat: ${message}\n`);
  }

  /** Ends a streamed line in progress, so that what follows (a warning, the shell) starts on its own line. */
  #endLine(): void {
    const end = this.#transcript.endLine();
    if (end) this.#write(process.stdout, end);
  }

  #write(stream: NodeJS.WriteStream, text: string): void {
    if (this.#prompt) this.#prompt.printAbove(() => stream.write(text));
    else stream.write(text);
  }
}

/**
 * The interactive prompt. Lines go into a queue and are taken one run at a time. On a
 * terminal, readline's echo goes through a gate: while a run prints, keystrokes are still read
 * (so Ctrl-C works and typed text is kept) but not shown; once the run has ended, the prompt
 * is drawn again with whatever was typed, and a line finished meanwhile is shown as `> line`
 * when its turn comes. So the run's output and the prompt never mix. Pipes get no prompt and
 * no echo.
 */
class Prompt {
  readonly #rl: Interface;
  readonly #gate: EchoGate | null;
  readonly #queue: Array<{ line: string; typedDuringRun: boolean }> = [];
  #inputEnded = false;
  #wake: (() => void) | null = null;

  constructor(output: NodeJS.WriteStream, onInterrupt: () => void) {
    this.#gate = process.stdin.isTTY === true ? new EchoGate(output) : null;
    // Held until the first nextLine: a text given on the command line runs first.
    if (this.#gate) this.#gate.held = true;
    this.#rl = createInterface({
      input: process.stdin,
      ...(this.#gate ? { output: this.#gate, terminal: true } : { terminal: false }),
    });
    this.#rl.setPrompt('> ');
    // On a terminal readline reads Ctrl-C as a key (raw mode) and reports it here.
    this.#rl.on('SIGINT', onInterrupt);
    this.#rl.on('line', (line) => {
      this.#queue.push({ line, typedDuringRun: this.#gate?.held === true });
      if (this.#queue.length >= MAX_QUEUED_LINES) this.#rl.pause();
      this.#notify();
    });
    this.#rl.on('close', () => {
      this.#inputEnded = true;
      this.#notify();
    });
  }

  /**
   * The next line, or null at the end of input. Shows the prompt while nothing is queued;
   * from the line's return until the next call, echo is held (the caller runs the line).
   */
  async nextLine(): Promise<string | null> {
    for (;;) {
      const next = this.#queue.shift();
      if (next) {
        // Node 22+ throws on resuming a closed interface: input may end with lines still queued.
        if (!this.#inputEnded) this.#rl.resume();
        if (this.#gate) {
          if (next.typedDuringRun) this.#gate.target.write(`> ${next.line}\n`);
          this.#gate.held = true;
        }
        return next.line;
      }
      if (this.#inputEnded) return null;
      if (this.#gate) {
        this.#gate.held = false;
        this.#rl.prompt(true);
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Runs `write` (output for the terminal) so that it does not land inside a visible prompt. */
  printAbove(write: () => void): void {
    if (!this.#gate || this.#gate.held || this.#inputEnded) return write();
    this.#gate.target.write('\r\x1b[K');
    write();
    this.#rl.prompt(true);
  }

  close(): void {
    // Leave the shell's prompt a line of its own.
    if (this.#gate && !this.#gate.held) this.#gate.target.write('\n');
    this.#gate?.detach();
    this.#rl.close();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/** readline's terminal output: passed on to `target`, or dropped while `held` (a run is printing). */
class EchoGate extends Writable {
  held = false;
  readonly target: NodeJS.WriteStream;
  readonly #onResize = () => this.emit('resize');

  constructor(target: NodeJS.WriteStream) {
    super({ decodeStrings: false });
    this.target = target;
    target.on('resize', this.#onResize);
  }

  /** readline wraps long lines at the terminal's width. */
  get columns(): number | undefined {
    return this.target.columns;
  }

  override _write(chunk: string | Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (!this.held) this.target.write(chunk);
    callback();
  }

  detach(): void {
    this.target.off('resize', this.#onResize);
  }
}

function cannotConnect(url: string, error: string): string {
  return `cannot connect to ${url} (${error}) — is a gateway running there? (start one with: npx agentwire serve)`;
}

function describeLoss(info: DisconnectInfo | CloseInfo): string {
  if (info.error) return info.error;
  return `connection closed with ${info.code}${info.reason ? ` (${info.reason})` : ''}`;
}
