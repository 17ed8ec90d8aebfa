import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root (where bin/agentwire.mjs lives). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const AGENTWIRE_BIN = fileURLToPath(new URL('../../bin/agentwire.mjs', import.meta.url));

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
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
  #waiters = new Set<() => void>();

  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.proc = spawn(process.execPath, [AGENTWIRE_BIN, ...args], {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stdout!.on('data', (chunk: string) => {
      this.stdout += chunk;
      this.#notify();
    });
    this.proc.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
      this.#notify();
    });
    this.closed = new Promise((resolve) => {
      this.proc.once('close', (code, signal) => {
        this.exit = { code, signal };
        this.#notify();
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

  /** Resolves with the first match of `pattern` in stdout (waits for more output as needed). */
  waitForStdout(pattern: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    return this.#waitUntil(() => this.stdout.match(pattern) ?? undefined, timeoutMs, `stdout matching ${pattern}`);
  }

  /** Resolves once the process has exited and its output is complete. */
  waitExit(timeoutMs = 15_000): Promise<ExitInfo> {
    return this.#waitUntil(() => this.exit ?? undefined, timeoutMs, 'exit');
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

  #notify(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  #waitUntil<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const now = check();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const waiter = () => {
        const value = check();
        if (value === undefined) return;
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve(value);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; exit=${JSON.stringify(this.exit)}; ` +
              `stdout=${JSON.stringify(this.stdout.slice(-2000))}; stderr=${JSON.stringify(this.stderr.slice(-2000))}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }
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

  spawn(args: string[], env: Record<string, string> = {}): Child {
    const child = new Child(args, cleanEnv(env));
    this.#children.push(child);
    return child;
  }

  /** For afterEach: SIGKILL (by pid) every child still running and wait until each is gone. */
  async killAll(): Promise<void> {
    const children = this.#children.splice(0);
    await Promise.all(children.map((child) => child.kill()));
  }
}
