import { join } from 'node:path';
import { REPO_ROOT, type ChildTracker } from './childProcess.js';

/**
 * The durable events of one run of examples/python-agent/agent.py through a gateway that merges
 * no fragments (flush window 0): thinking in two parts, a tool call and its result, then the
 * answer a word per delta.
 */
export const PYTHON_AGENT_RUN_TYPES: readonly string[] = [
  'agent_started',
  'agent_thinking_delta',
  'agent_thinking_delta',
  'tool_executing',
  'tool_completed',
  ...Array<string>(5).fill('agent_text_delta'),
  'agent_completed',
];

/** Starts the Python example agent (Debian's python3) on a free port; resolves with its URL. */
export async function startPythonAgent(children: ChildTracker): Promise<string> {
  const python = children.spawn([], {}, { command: ['python3', join(REPO_ROOT, 'examples/python-agent/agent.py'), '0'] });
  const [, url] = await python.waitForStdout(/^agent on (http:\/\/127\.0\.0\.1:\d+\/run)$/m);
  return url!;
}
