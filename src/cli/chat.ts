import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import {
  HistoryResetError,
  RequestError,
  createClient,
  type AgentwireClient,
  type CloseInfo,
  type DisconnectInfo,
} from '../client/node.js';
import { parseCommandArgs } from './args.js';
import { formatFrame } from './formatEvent.js';

/** Exit codes: 0 agent_completed (or a clean end of the interactive session), 1 agent_error, 3 connection. */
const EXIT_COMPLETED = 0;
const EXIT_AGENT_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_CONNECTION = 3;

/**
 * `agentwire chat "text"`: connects with the client SDK, sends one message, prints the run's
 * events as they arrive and exits 0 on `agent_completed`, 1 on `agent_error`, 3 when the
 * connection fails or times out. A connection lost after it was ready is resumed by the SDK
 * (noted on stderr) and the run is followed to its end.
 *
 * With no text (or `--interactive`): a prompt on one thread; each line is sent and its run
 * printed, then the prompt returns. Ctrl-D or `/quit` ends the session with 0.
 */
export async function runChat(argv: string[]): Promise<number> {
  const parsed = parseCommandArgs('chat', argv, {
    url: { type: 'string', default: process.env.AGENTWIRE_URL ?? 'ws://127.0.0.1:8080/ws' },
    token: { type: 'string' },
    thread: { type: 'string' },
    json: { type: 'boolean', default: false },
    interactive: { type: 'boolean', short: 'i', default: false },
    'timeout-ms': { type: 'string', default: '130000' },
  });
  if (typeof parsed === 'string') return fail(parsed, EXIT_USAGE);
  const { values, positionals } = parsed;
  const text = positionals.join(' ').trim();
  const interactive = values.interactive === true || !text;
  const token = (values.token as string | undefined) ?? process.env.AGENTWIRE_TOKEN;
  if (!token) return fail('agentwire chat: --token (or AGENTWIRE_TOKEN) is required; `npm start` prints one in dev mode', EXIT_USAGE);
  const timeoutMs = Number(values['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
    return fail(`agentwire chat: --timeout-ms must be an integer >= 1 (got "${values['timeout-ms']}")`, EXIT_USAGE);
  }
  const session = new ChatSession({
    url: values.url as string,
    token,
    threadId: (values.thread as string | undefined) ?? `cli-${randomUUID().slice(0, 8)}`,
    json: values.json === true,
    timeoutMs,
  });
  try {
    return interactive ? await session.interactive(text) : await session.once(text);
  } finally {
    session.close();
  }
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

  constructor(options: SessionOptions) {
    this.#options = options;
    // Before the first ready, a failure ends the command (fail fast, as a CLI should); after
    // it, the SDK reconnects and resumes, within a bounded number of retries.
    this.#client = createClient({ url: options.url, token: options.token, maxRetries: 8 });
    this.#client.on('ready', (frame) => this.#print(frame as unknown as Record<string, unknown>));
    this.#client.on('history_reset', (reset) =>
      process.stderr.write(
        `agentwire chat: the server could not resume (epoch ${reset.previousEpoch} -> ${reset.epoch}); events may be missing\n`,
      ),
    );
    this.#connectionFailed = new Promise<number>((resolve) => {
      this.#client.on('disconnect', (info) => {
        if (this.#ended) return;
        if (!this.#everReady) {
          this.#ended = true;
          process.stderr.write(`agentwire chat: ${describeLoss(info)}\n`);
          resolve(EXIT_CONNECTION);
          return;
        }
        process.stderr.write(`agentwire chat: connection lost (${describeLoss(info)}); reconnecting\n`);
      });
      this.#client.on('closed', (info) => {
        if (this.#ended) return;
        this.#ended = true;
        process.stderr.write(`agentwire chat: ${describeLoss(info)}\n`);
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

  /** A prompt on one thread until Ctrl-D or /quit (0), or until the connection fails (3). */
  async interactive(firstText: string): Promise<number> {
    const connected = await this.#withDeadline(async () => {
      await this.#client.connect();
      return EXIT_COMPLETED;
    });
    if (connected !== EXIT_COMPLETED) return connected;
    if (firstText) {
      const code = await this.#withDeadline(() => this.#ask(firstText));
      if (code === EXIT_CONNECTION) return code;
    }
    const tty = process.stdin.isTTY === true;
    const rl = createInterface({
      input: process.stdin,
      // The prompt only for people: not into pipes, and not between NDJSON lines.
      ...(tty ? { output: this.#options.json ? process.stderr : process.stdout, terminal: true } : { terminal: false }),
    });
    let interrupted = false;
    rl.on('SIGINT', () => {
      interrupted = true;
      rl.close();
    });
    rl.setPrompt('> ');
    const lines = rl[Symbol.asyncIterator]();
    try {
      for (;;) {
        if (tty) rl.prompt();
        const next = await Promise.race([lines.next(), this.#connectionFailed.then((code) => ({ failed: code }))]);
        if ('failed' in next) return next.failed;
        if (next.done) return interrupted ? 130 : EXIT_COMPLETED;
        const line = next.value.trim();
        if (!line) continue;
        if (line === '/quit' || line === '/exit') return EXIT_COMPLETED;
        const code = await this.#withDeadline(() => this.#ask(line));
        if (code === EXIT_CONNECTION) return code;
      }
    } finally {
      rl.close();
    }
  }

  close(): void {
    this.#ended = true;
    this.#client.close();
  }

  /** Sends `text` and prints the ack and the run's events; resolves with the run's exit code. */
  async #ask(text: string): Promise<number> {
    const { ack, events } = this.#client.ask(this.#options.threadId, text);
    let runId: string;
    try {
      const answer = await ack;
      this.#print(answer as unknown as Record<string, unknown>);
      runId = answer.run_id;
    } catch (error) {
      if (error instanceof RequestError) {
        this.#print(error.frame as unknown as Record<string, unknown>);
        return EXIT_AGENT_ERROR;
      }
      return EXIT_CONNECTION;
    }
    try {
      for await (const event of events) {
        this.#print(event as unknown as Record<string, unknown>);
        if (event.type === 'agent_completed') return EXIT_COMPLETED;
        if (event.type === 'agent_error') return EXIT_AGENT_ERROR;
      }
    } catch (error) {
      if (error instanceof HistoryResetError) {
        process.stderr.write(`agentwire chat: lost track of run ${runId}: ${error.message}\n`);
      }
      return EXIT_CONNECTION;
    }
    return EXIT_CONNECTION;
  }

  /** Races `work` against the connection failing and against --timeout-ms. */
  async #withDeadline(work: () => Promise<number>): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<number>((resolve) => {
      timer = setTimeout(() => {
        if (!this.#ended) process.stderr.write(`agentwire chat: no terminal event within ${this.#options.timeoutMs} ms\n`);
        this.#ended = true;
        resolve(EXIT_CONNECTION);
      }, this.#options.timeoutMs);
    });
    const done = work().catch(() => EXIT_CONNECTION);
    try {
      return await Promise.race([done, this.#connectionFailed, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  #print(frame: Record<string, unknown>): void {
    if (this.#options.json) {
      process.stdout.write(`${JSON.stringify(frame)}\n`);
      return;
    }
    const line = formatFrame(frame);
    if (line) process.stdout.write(`${line}\n`);
  }
}

function describeLoss(info: DisconnectInfo | CloseInfo): string {
  if (info.error) return info.error;
  return `connection closed with ${info.code}${info.reason ? ` (${info.reason})` : ''}`;
}

function fail(message: string, code: number): number {
  process.stderr.write(`${message}\n`);
  return code;
}
