import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PYTHON_AGENT_RUN_TYPES, startPythonAgent } from '../helpers/pythonAgent.js';
import { ChildTracker, REPO_ROOT } from '../helpers/childProcess.js';
import { runProblem } from '../helpers/runInvariants.js';
import { TestClient } from '../helpers/wsClient.js';

/**
 * `agentwire serve --agent-url` in front of examples/python-agent/agent.py, both real processes
 * (the bin runs the built dist/: `npm run build` first): a streamed run over a WebSocket, resumed
 * mid-answer by a second connection; the banner names the agent; the configured header values
 * appear in no output. And the README shows the Python agent exactly as the file is.
 */

const children = new ChildTracker();
const clients: TestClient[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await children.killAll();
});

const CREDENTIAL = 'sk-python-agent-credential-42';

function connect(url: string, token: string, resume?: { epoch: string; lastSeq: number }): TestClient {
  const client = new TestClient(url, { token, ...resume });
  clients.push(client);
  return client;
}

describe('agentwire serve --agent-url in front of the Python example', () => {
  it('streams a run over a WebSocket, resumable mid-answer; the banner names the agent; the header values are never printed', async () => {
    const agentUrl = await startPythonAgent(children);
    const server = children.spawn(['serve', '--agent-url', agentUrl], {
      PORT: '0',
      AGENTWIRE_AGENT_HEADERS: JSON.stringify({ authorization: `Bearer ${CREDENTIAL}` }),
      AGENTWIRE_LOG_LEVEL: 'debug',
      // Every fragment the agent streams is one event, so the event list below is exact.
      AGENTWIRE_STREAM_FLUSH_MS: '0',
    });
    const [, url] = await server.waitForStdout(/^agentwire listening on (ws:\/\/127\.0\.0\.1:\d+\/ws)$/m);
    const [, token] = await server.waitForStdout(/^A token for user "demo" \(valid 24 h\):\n\n {2}(\S+)\n/m);
    await server.waitForStdout(new RegExp(`^Talk to the upstream agent at ${agentUrl.replace(/[./]/g, '\\$&')} \\(agentwire dialect\\):$`, 'm'));

    const client = connect(url!, token!);
    const { epoch } = await client.ready();
    const ack = await client.message('m1', 'thread-1', 'how many words are here');
    const events = await client.runEvents(ack.run_id);
    expect(runProblem(events)).toBeNull();
    expect(events.map((e) => e.type)).toEqual(PYTHON_AGENT_RUN_TYPES);
    expect(events[3]).toMatchObject({ call_id: 'c1', tool: 'word_count', args: { text: 'how many words are here' } });
    expect(events[4]).toMatchObject({ call_id: 'c1', ok: true, result: 5 });
    const deltas = events.filter((e) => e.type === 'agent_text_delta');
    const answer = deltas.map((e) => e.text).join('');
    expect(answer).toBe('Your message has 5 words.');
    expect(events.at(-1)).toMatchObject({ status: 'completed', text: answer });

    // A connection that saw the answer up to its second delta resumes with exactly the rest.
    const resumed = connect(url!, token!, { epoch, lastSeq: deltas[1]!.seq });
    expect(await resumed.ready()).toMatchObject({ resumed: true });
    await resumed.runEvents(ack.run_id);
    const rest = resumed.events().filter((e) => e.type === 'agent_text_delta');
    expect(
      deltas
        .slice(0, 2)
        .map((e) => e.text)
        .join('') + rest.map((e) => e.text).join(''),
    ).toBe(answer);

    server.signal('SIGTERM');
    expect(await server.waitExit()).toEqual({ code: 0, signal: null });
    expect(server.stdout + server.stderr).not.toContain(CREDENTIAL);
    expect(server.stdout).toContain('[redacted]'); // the logged config shows the setting, not its value
  });
});

describe('README "Bring your agent"', () => {
  it('shows examples/python-agent/agent.py exactly as it is', () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const at = readme.indexOf('](examples/python-agent/agent.py)');
    expect(at, 'README.md links examples/python-agent/agent.py').toBeGreaterThan(-1);
    const block = /```python\n([\s\S]*?)```\n/.exec(readme.slice(at));
    expect(block, 'a python block after the link').not.toBeNull();
    expect(block![1]).toBe(readFileSync(join(REPO_ROOT, 'examples/python-agent/agent.py'), 'utf8'));
  });
});
