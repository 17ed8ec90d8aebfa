/**
 * The servers of one measured configuration (one or more gateway nodes, or the raw ws server),
 * as the redis and stream phases drive them: summed usage, teardown between steps, users'
 * connections spread over the nodes.
 */
import type { ChildProcess } from 'node:child_process';
import type { IpcClient, ServerUsage } from './common.js';

export interface StartedServer {
  child: ChildProcess;
  ipc: IpcClient;
  port: number;
  /** The server's `listening` message. */
  hello?: Record<string, unknown>;
}

export const cpuOf = (u: ServerUsage) => u.cpuUser + u.cpuSystem;

export class NodeGroup {
  constructor(
    readonly servers: readonly StartedServer[],
    readonly load: IpcClient,
    /** Where a step's problems are recorded (the configuration's failures). */
    readonly failures: string[],
  ) {}

  get urls(): string[] {
    return this.servers.map((s) => `ws://127.0.0.1:${s.port}/ws`);
  }

  usage(): Promise<ServerUsage[]> {
    return Promise.all(this.servers.map((s) => s.ipc.call<ServerUsage>('usage')));
  }

  /** Summed CPU (user + system) of all servers, µs. */
  async cpuUs(): Promise<number> {
    return (await this.usage()).reduce((n, u) => n + cpuOf(u), 0);
  }

  /**
   * Closes every client, waits (bounded) until the servers have torn them all down, then runs a
   * full GC in each, so that no step pays for an earlier one's teardown or garbage.
   */
  async closeAll(): Promise<void> {
    await this.load.call('closeAll', {}, 60_000);
    const deadline = Date.now() + 15_000;
    const open = async () => (await this.usage()).reduce((n, u) => n + u.connections, 0);
    let left = await open();
    while (left > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      left = await open();
    }
    if (left > 0) this.failures.push(`servers still count ${left} connections 15 s after close`);
    for (const s of this.servers) await s.ipc.call('gc');
  }

  /** Tokens and `connsPerUser` connections for `users` users named `<prefix>-<i>`, spread over the nodes. */
  async prepare(prefix: string, users: number, connsPerUser: number): Promise<void> {
    const names = Array.from({ length: users }, (_, i) => `${prefix}-${i}`);
    await this.load.call('tokens', { users: names }, 60_000);
    const urls = this.urls;
    await this.load.call('prepareEvents', { url: urls[0], urls, users: names, connsPerUser }, 120_000);
  }
}
