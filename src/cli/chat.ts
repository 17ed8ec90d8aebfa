import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { parseCommandArgs } from './args.js';
import { formatFrame } from './formatEvent.js';

/**
 * `agentwire chat "text"`: connects, sends one message, prints the run's events as they arrive
 * and exits 0 on `agent_completed`, 1 on `agent_error`, 3 when the connection fails or times out.
 */
export async function runChat(argv: string[]): Promise<number> {
  const parsed = parseCommandArgs('chat', argv, {
    url: { type: 'string', default: process.env.AGENTWIRE_URL ?? 'ws://127.0.0.1:8080/ws' },
    token: { type: 'string' },
    thread: { type: 'string' },
    json: { type: 'boolean', default: false },
    'timeout-ms': { type: 'string', default: '130000' },
  });
  if (typeof parsed === 'string') return fail(parsed, 2);
  const { values, positionals } = parsed;
  const text = positionals.join(' ').trim();
  if (!text) return fail('agentwire chat: give the message text, e.g. agentwire chat "what is 2+3*4?"', 2);
  const token = (values.token as string | undefined) ?? process.env.AGENTWIRE_TOKEN;
  if (!token) return fail('agentwire chat: --token (or AGENTWIRE_TOKEN) is required; `npm start` prints one in dev mode', 2);
  const timeoutMs = Number(values['timeout-ms']);
  const threadId = (values.thread as string | undefined) ?? `cli-${randomUUID().slice(0, 8)}`;
  const print = values.json
    ? (frame: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(frame)}\n`)
    : (frame: Record<string, unknown>) => {
        const line = formatFrame(frame);
        if (line) process.stdout.write(`${line}\n`);
      };

  return new Promise<number>((resolve) => {
    const ws = new WebSocket(values.url as string, ['agentwire.v1', `jwt.${token}`]);
    const messageId = randomUUID();
    let runId: string | null = null;
    let exitCode: number | null = null;
    const finish = (code: number) => {
      if (exitCode !== null) return;
      exitCode = code;
      clearTimeout(timer);
      ws.close(1000, 'normal');
      resolve(code);
    };
    const timer = setTimeout(() => {
      process.stderr.write(`agentwire chat: no terminal event within ${timeoutMs} ms\n`);
      finish(3);
    }, timeoutMs);

    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Record<string, unknown>;
      if (frame.type === 'connection_ready') {
        print(frame);
        ws.send(JSON.stringify({ type: 'user_message', id: messageId, thread_id: threadId, text }));
      } else if (frame.type === 'ack' && frame.id === messageId) {
        runId = frame.run_id as string;
        print(frame);
      } else if (frame.type === 'error' && frame.ref === messageId) {
        print(frame);
        finish(1);
      } else if (runId !== null && frame.run_id === runId) {
        print(frame);
        if (frame.type === 'agent_completed') finish(0);
        else if (frame.type === 'agent_error') finish(1);
      }
    });
    ws.on('close', (code, reason) => {
      if (exitCode !== null) return;
      process.stderr.write(`agentwire chat: connection closed with ${code}${reason.length ? ` (${reason})` : ''}\n`);
      finish(3);
    });
    ws.on('error', (error) => {
      if (exitCode !== null) return;
      process.stderr.write(`agentwire chat: ${error.message}\n`);
      finish(3);
    });
  });
}

function fail(message: string, code: number): number {
  process.stderr.write(`${message}\n`);
  return code;
}
