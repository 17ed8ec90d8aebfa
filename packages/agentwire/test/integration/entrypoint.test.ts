import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { signToken } from '../../src/auth/index.js';
import { SHUTDOWN_GRACE_MS } from '../../src/cli/serve.js';
import { ChildTracker, REPO_ROOT, isRunning, processTree, type Child } from '../helpers/childProcess.js';
import { httpGet, waitStatus } from '../helpers/http.js';
import { demoRunTypes, isTerminal } from '../helpers/runInvariants.js';
import { TestClient, seqProblem } from '../helpers/wsClient.js';

/**
 * The production entrypoints as documented (Dockerfile, deploy/agentwire.service,
 * docs/DEPLOYMENT.md), each started exactly as written and stopped the way its supervisor stops
 * it: SIGTERM to the process the supervisor started.
 */

const children = new ChildTracker();
const clients: TestClient[] = [];
/** Every process seen under an entrypoint: a test that fails may leave an orphan gateway behind. */
const seenPids: number[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  // By pid, before the children: an orphan holds their output pipes open.
  for (const pid of seenPids.splice(0)) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
  await children.killAll();
});

const SECRET = 'entrypoint-secret-0123456789-abcdefghijklmnop';
/** Long enough that /readyz is seen 503 while the hanging run still holds the drain open. */
const DRAIN_TIMEOUT_MS = 2500;
const SETTINGS = {
  PORT: '0',
  AGENTWIRE_JWT_SECRET: SECRET,
  AGENTWIRE_DRAIN_TIMEOUT_MS: String(DRAIN_TIMEOUT_MS),
  AGENTWIRE_LOG_LEVEL: 'warn',
};

const readRepoFile = (path: string) => readFileSync(join(REPO_ROOT, path), 'utf8');

/** The Dockerfile's CMD (exec form), the command a container runs as its PID 1. */
function dockerCommand(): string[] {
  const line = readRepoFile('Dockerfile')
    .split('\n')
    .find((l) => l.startsWith('CMD '));
  expect(line, 'the Dockerfile has a CMD').toBeDefined();
  const command: unknown = JSON.parse(line!.slice('CMD '.length));
  expect(Array.isArray(command), 'CMD is in exec form (a JSON array): no shell between the runtime and the signal').toBe(true);
  return command as string[];
}

/** `node` as written in a documented command is the runtime running this suite. */
const onThisRuntime = (command: string[]) => command.map((word, i) => (i === 0 && word === 'node' ? process.execPath : word));

/** The `[Service]` settings of the systemd unit; repeated keys keep every value. */
function unitSettings(): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  let section = '';
  for (const line of readRepoFile('deploy/agentwire.service').split('\n')) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) section = header[1]!;
    const setting = /^(\w+)=(.*)$/.exec(line);
    if (section === 'Service' && setting) settings.set(setting[1]!, [...(settings.get(setting[1]!) ?? []), setting[2]!]);
  }
  return settings;
}

/** The pid of the one node process running the bin among `tree` (besides it: npm, unshare). */
function gatewayPid(tree: number[]): number {
  const runsBin = (pid: number) => {
    const [program, script] = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return /(^|\/)node$/.test(program!) && /(^|\/)bin\/agentwire\.mjs$/.test(script ?? '');
  };
  const gateways = tree.filter(runsBin);
  expect(gateways, 'node processes running bin/agentwire.mjs').toHaveLength(1);
  return gateways[0]!;
}

interface Entrypoint {
  /** Every process of the entrypoint while it was serving (the supervised one first). */
  tree: number[];
  gateway: number;
}

/**
 * Connects a client, starts a run that hangs and a short one, then sends SIGTERM to the process
 * `target` picks (by default `child`, the one its supervisor started) and checks the whole drain
 * as a supervisor sees it: not ready at once but still live, the short run finishes, the hanging
 * one ends `shutdown`, the client gets 1012, `child` exits 0 and no process of it is left.
 */
async function drainOnSigterm(child: Child, target: (entrypoint: Entrypoint) => number = () => child.pid!): Promise<Entrypoint> {
  const [, url] = await child.waitForStdout(/^agentwire listening on (ws:\/\/127\.0\.0\.1:\d+\/ws)$/m);
  const base = url!.replace(/^ws:/, 'http:').replace(/\/ws$/, '');
  await waitStatus(`${base}/readyz`, 200);
  const tree = processTree(child.pid!);
  seenPids.push(...tree);
  const entrypoint = { tree, gateway: gatewayPid(tree) };

  const client = new TestClient(url!, { token: (await signToken(SECRET, { sub: 'alice', ttlSec: 600 })).token });
  clients.push(client);
  await client.ready(10_000);
  const hang = await client.message('m-hang', 't-hang', '/hang');
  const slow = await client.message('m-slow', 't-slow', '/slow 50 what is 2+3*4?');
  expect(hang).toMatchObject({ type: 'ack', status: 'started' });
  expect(slow).toMatchObject({ type: 'ack', status: 'started' });
  await client.waitFor((f) => f.type === 'agent_thinking' && f.run_id === hang.run_id, 10_000);
  // The short run is in flight (a step and three words of 50 ms left), well inside the drain.
  await client.waitFor((f) => f.type === 'tool_completed' && f.run_id === slow.run_id, 10_000);

  process.kill(target(entrypoint), 'SIGTERM');
  // Draining: out of the load balancer at once, but alive (no restart) and the client still on.
  await waitStatus(`${base}/readyz`, 503, DRAIN_TIMEOUT_MS);
  expect((await httpGet(`${base}/healthz`)).status).toBe(200);
  expect(client.closeCode).toBeNull();

  expect(await client.waitClosed(DRAIN_TIMEOUT_MS + SHUTDOWN_GRACE_MS + 5000)).toEqual({ code: 1012, reason: 'service_restart' });
  expect(await child.waitExit(DRAIN_TIMEOUT_MS + SHUTDOWN_GRACE_MS + 5000)).toEqual({ code: 0, signal: null });
  expect(tree.filter(isRunning), 'processes of the entrypoint still running after it exited').toEqual([]);

  expect(client.frames.find((f) => f.run_id === hang.run_id && isTerminal(f))).toMatchObject({ type: 'agent_error', code: 'shutdown' });
  const slowTimeline = client.frames.filter((f) => f.run_id === slow.run_id && typeof f.seq === 'number').map((f) => f.type);
  expect(slowTimeline).toEqual(demoRunTypes('/slow 50 what is 2+3*4?'));
  expect(client.frames.find((f) => f.run_id === slow.run_id && isTerminal(f))).toMatchObject({ status: 'completed', text: '2+3*4 = 14' });
  expect(seqProblem(client.events(), 0)).toBeNull();
  expect(child.stderr).toBe('');
  return entrypoint;
}

describe('production entrypoint: SIGTERM drains and exits 0', () => {
  it("the Dockerfile's CMD, run as written, drains on SIGTERM to its pid and leaves no process", async () => {
    const command = dockerCommand();
    expect(command).toEqual(['node', 'packages/agentwire/bin/agentwire.mjs', 'serve']);
    const child = children.spawn([], SETTINGS, { command: onThisRuntime(command) });
    const { gateway } = await drainOnSigterm(child);
    // The gateway runs in the process started (no child runs it).
    expect(gateway).toBe(child.pid);
  });

  it('drains as PID 1 of its own pid namespace, signalled from outside as `docker stop` does', async () => {
    // A PID 1 has no default signal actions: without the gateway's own handlers SIGTERM would be
    // ignored and the container killed at the end of the grace period. Needs root (CI runs as root).
    const child = children.spawn([], SETTINGS, { command: ['unshare', '--pid', '--fork', '--mount-proc', ...onThisRuntime(dockerCommand())] });
    // unshare --fork exits with its child's status: 0 only if the gateway exited 0.
    await drainOnSigterm(child, ({ gateway }) => {
      const nsPids = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${gateway}/status`, 'utf8'))![1]!.split(/\s+/);
      expect(nsPids.at(-1), 'the gateway is PID 1 in its namespace').toBe('1');
      return gateway;
    });
  });

  it('`npm start` drains too when npm is signalled, and leaves no orphan gateway', async () => {
    // npm forwards SIGTERM to its script's process; the script execs node, so that is the gateway.
    const child = children.spawn([], SETTINGS, { command: ['npm', 'start'] });
    const { tree, gateway } = await drainOnSigterm(child);
    expect(tree[1], "the gateway is npm's own child: no shell between them").toBe(gateway);
  });

  it('the systemd unit runs the same command and waits longer than the gateway may take to stop', () => {
    const unit = unitSettings();
    const [directory] = unit.get('WorkingDirectory')!;
    const [node, bin, ...rest] = unit.get('ExecStart')![0]!.split(' ');
    const [, dockerBin, ...dockerRest] = dockerCommand();
    expect(node).toMatch(/^\/.*\/node$/);
    expect(bin).toBe(`${directory}/${dockerBin}`);
    expect(rest).toEqual(dockerRest);
    expect(unit.get('KillSignal')).toEqual(['SIGTERM']);
    const drain = unit.get('Environment')!.find((e) => e.startsWith('AGENTWIRE_DRAIN_TIMEOUT_MS='));
    const drainMs = Number(drain!.split('=')[1]);
    expect(Number(unit.get('TimeoutStopSec')![0]) * 1000).toBeGreaterThan(drainMs + SHUTDOWN_GRACE_MS);
  });

  it("the Kubernetes example's grace period is longer than the gateway may take to stop", () => {
    const deployment = readRepoFile('docs/DEPLOYMENT.md');
    const drainMs = Number(/AGENTWIRE_DRAIN_TIMEOUT_MS, value: "(\d+)"/.exec(deployment)![1]);
    const graceSec = Number(/terminationGracePeriodSeconds: (\d+)/.exec(deployment)![1]);
    expect(graceSec * 1000).toBeGreaterThan(drainMs + SHUTDOWN_GRACE_MS);
  });
});
