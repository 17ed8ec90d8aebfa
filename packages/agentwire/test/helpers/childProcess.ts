import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Waiters } from './waitFor.js';

/** The repository root (where bin/agentwire.mjs lives). */
export const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const AGENTWIRE_BIN = fileURLToPath(new URL('../../bin/agentwire.mjs', import.meta.url));

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ChildOptions {
  /** 'pipe' lets the test write to the child's stdin (`write`, `endInput`); default 'ignore'. */
  stdin?: 'pipe' | 'ignore';
  /** Default deadline of the waits, in ms (15 s unless given). */
  timeoutMs?: number;
  /** The program and its leading arguments, before `args`; default `node bin/agentwire.mjs`. */
  command?: readonly string[];
  /**
   * Runs the command in a pseudo-terminal (util-linux `script`), so that its stdin and stdout
   * are a TTY, as for a person at a terminal: `write` is typing (`\r` is Enter, `\x03` Ctrl-C),
   * stdout is the screen (with `\r\n` and escape sequences; see `screenText`), stdin is piped.
   */
  terminal?: boolean;
}

/**
 * A child process whose stdout and stderr are recorded; waits are driven by the child's
 * 'data' and 'close' events and always have a timeout that names what was awaited.
 */
export class Child {
  readonly proc: ChildProcess;
  stdout = '';
  stderr = '';
  exit: ExitInfo | null = null;
  /** Resolves once the process exited and its stdio closed (so all output is recorded). */
  readonly closed: Promise<ExitInfo>;
  readonly #timeoutMs: number;
  readonly #waiters = new Waiters(
    () => `exit=${JSON.stringify(this.exit)}; ` + `stdout=${JSON.stringify(this.stdout.slice(-2000))}; stderr=${JSON.stringify(this.stderr.slice(-2000))}`,
  );

  constructor(args: string[], env: NodeJS.ProcessEnv, options: ChildOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? 15_000;
    const command = [...(options.command ?? [process.execPath, AGENTWIRE_BIN]), ...args];
    this.proc = options.terminal
      ? spawn('script', ['--quiet', '--flush', '--return', '--command', command.map(shellQuote).join(' '), '/dev/null'], {
          cwd: REPO_ROOT,
          env,
          stdio: ['pipe', 'pipe', 'pipe'],
        })
      : spawn(command[0]!, command.slice(1), { cwd: REPO_ROOT, env, stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stdout!.on('data', (chunk: string) => {
      this.stdout += chunk;
      this.#waiters.notify();
    });
    this.proc.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
      this.#waiters.notify();
    });
    // Writing to a child that already exited fails with EPIPE; the test sees the exit instead.
    this.proc.stdin?.on('error', () => {});
    this.closed = new Promise((resolve) => {
      this.proc.once('close', (code, signal) => {
        this.exit = { code, signal };
        this.#waiters.notify();
        resolve(this.exit);
      });
    });
    // A spawn failure also ends in 'close'; keep it from becoming an unhandled 'error'.
    this.proc.on('error', () => {});
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The non-empty lines of stdout so far. */
  lines(): string[] {
    return this.stdout.split('\n').filter((line) => line.length > 0);
  }

  /** Writes to the child's stdin (spawned with `stdin: 'pipe'`). */
  write(text: string): void {
    this.#stdin().write(text);
  }

  /** Ends the child's stdin (spawned with `stdin: 'pipe'`). */
  endInput(): void {
    this.#stdin().end();
  }

  /** Resolves with the first match of `pattern` in stdout (waits for more output as needed). */
  waitForStdout(pattern: RegExp, timeoutMs = this.#timeoutMs): Promise<RegExpMatchArray> {
    return this.#waiters.until(() => this.stdout.match(pattern) ?? undefined, timeoutMs, `stdout matching ${pattern}`);
  }

  /** Resolves with the first match of `pattern` in stderr (waits for more output as needed). */
  waitForStderr(pattern: RegExp, timeoutMs = this.#timeoutMs): Promise<RegExpMatchArray> {
    return this.#waiters.until(() => this.stderr.match(pattern) ?? undefined, timeoutMs, `stderr matching ${pattern}`);
  }

  /** Resolves once the process has exited and its output is complete. */
  waitExit(timeoutMs = this.#timeoutMs): Promise<ExitInfo> {
    return this.#waiters.until(() => this.exit ?? undefined, timeoutMs, 'exit');
  }

  /** Sends a signal to this child's pid (only). */
  signal(signal: NodeJS.Signals): void {
    if (this.pid !== undefined && this.running) process.kill(this.pid, signal);
  }

  /** SIGKILLs the child by pid if it is still alive, then waits for it to be gone. */
  async kill(timeoutMs = 5000): Promise<void> {
    if (this.exit) return;
    this.signal('SIGKILL');
    await this.waitExit(timeoutMs);
  }

  #stdin(): NonNullable<ChildProcess['stdin']> {
    if (!this.proc.stdin) throw new Error("this child's stdin is not piped (spawn it with stdin: 'pipe')");
    return this.proc.stdin;
  }
}

function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** What a terminal shows of `output`: escape sequences and carriage returns removed. */
export function screenText(output: string): string {
  // CSI sequences: readline's cursor moves and line clears.
  // eslint-disable-next-line no-control-regex -- matches the terminal's ESC-led escape sequences
  return output.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
}

/**
 * The parent's environment without any setting of the configuration contract (PORT, HOST,
 * NODE_ENV, AGENTWIRE_*), plus `extra`: each test states exactly the settings it means.
 */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (name === 'PORT' || name === 'HOST' || name === 'NODE_ENV' || name.startsWith('AGENTWIRE_')) continue;
    env[name] = value;
  }
  return { ...env, ...extra };
}

/** Starts children of `node bin/agentwire.mjs` and kills every one still alive in `killAll`. */
export class ChildTracker {
  readonly #children: Child[] = [];

  spawn(args: string[], env: Record<string, string> = {}, options: ChildOptions = {}): Child {
    const child = new Child(args, cleanEnv(env), options);
    this.#children.push(child);
    return child;
  }

  /** For afterEach: SIGKILL (by pid) every child still running and wait until each is gone. */
  async killAll(): Promise<void> {
    const children = this.#children.splice(0);
    await Promise.all(children.map((child) => child.kill()));
  }
}

/** `pid` and all its descendants at this moment, parents first (Linux: read from /proc). */
export function processTree(pid: number): number[] {
  const childrenOf = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (!stat) continue;
    const siblings = childrenOf.get(stat.ppid) ?? [];
    siblings.push(Number(entry));
    childrenOf.set(stat.ppid, siblings);
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) tree.push(...(childrenOf.get(tree[i]!) ?? []));
  return tree;
}

/** Whether `pid` is a running process (a zombie has exited: only its parent has not reaped it yet). */
export function isRunning(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}

function procStat(pid: number): { state: string; ppid: number } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // gone, or gone while the directory was being read
  }
  // `pid (comm) state ppid ...`; comm may itself hold spaces and parentheses.
  const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: state!, ppid: Number(ppid) };
}

/** Signals a server process the test started and waits for its exit; nothing to do if it already exited. */
export async function stopChild(child: ChildProcess | null, signal: NodeJS.Signals): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  await exited;
}
