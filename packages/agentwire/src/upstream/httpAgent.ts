import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { systemClock, type Clock } from '@agentwire/protocol';
import type { Agent, AgentRunInput, AgentStep } from '../runs/agent.js';
import { agUiDialect } from './agUiDialect.js';
import { aiSdkDialect } from './aiSdkDialect.js';
import { agentwireDialect } from './agentwireDialect.js';
import { AGENT_PROTOCOLS, type AgentProtocol, type Dialect } from './dialect.js';
import { UpstreamFailure, quoted } from './failure.js';
import { ndjsonLines, sseData } from './framing.js';
import { headerProblems, redact, secretsOf } from './headers.js';
import { openaiDialect } from './openaiDialect.js';

/** Options of `createHttpAgent`: where the upstream agent is and how to talk to it. */
export interface HttpAgentOptions {
  /** The agent's http(s) URL; for `openai`, the OpenAI-compatible base URL (`<url>/chat/completions` is POSTed). */
  readonly url: string;
  /** The dialect the upstream speaks (PROTOCOL.md section 15). Default `agentwire`. */
  readonly protocol?: AgentProtocol;
  /** Extra request headers (e.g. the upstream's credentials). Never logged or echoed: failure messages show `[redacted]` instead of any value. */
  readonly headers?: Readonly<Record<string, string>>;
  /** The model to ask for; required by the `openai` dialect. */
  readonly model?: string;
  /** How long the upstream has to answer with its status line and headers. Default 30000 ms. */
  readonly connectTimeoutMs?: number;
  /** The clock of the connect timeout. Default: the system clock. */
  readonly clock?: Clock;
}

export type { AgentProtocol } from './dialect.js';

/** The default of `HttpAgentOptions.connectTimeoutMs`. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
/** Bytes of an error answer's body quoted in the failure. */
const ERROR_BODY_BYTES = 2048;
/**
 * Bytes of one run's answer body in all. The run keeps its whole streamed text (for its
 * `agent_completed`), so without a bound an upstream streaming for the whole run timeout could
 * fill the gateway's memory.
 */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

const DIALECTS: ReadonlyMap<AgentProtocol, Dialect> = new Map<AgentProtocol, Dialect>([
  ['agentwire', agentwireDialect],
  ['ag-ui', agUiDialect],
  ['ai-sdk', aiSdkDialect],
  ['openai', openaiDialect],
]);

/**
 * An Agent that runs every run by one HTTP POST to an upstream agent, in one of the dialects of
 * PROTOCOL.md section 15, and streams its answer back as steps. Every fault of the upstream (refused,
 * non-2xx, no answer within `connectTimeoutMs`, a cut, malformed or oversized stream) ends the
 * run with a failure naming the cause; the run's abort signal (cancel, timeout, shutdown) aborts
 * the request. Throws at once for options that cannot work (a bad URL or header, `openai`
 * without a model).
 */
export function createHttpAgent(options: HttpAgentOptions): Agent {
  const protocol = options.protocol ?? 'agentwire';
  const dialect = DIALECTS.get(protocol);
  if (dialect === undefined) throw new Error(`createHttpAgent: protocol must be one of ${AGENT_PROTOCOLS.join(', ')}`);
  let url: URL;
  try {
    url = new URL(options.url);
  } catch {
    throw new Error('createHttpAgent: url is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('createHttpAgent: url must be http: or https:');
  if (protocol === 'openai' && !options.model) throw new Error('createHttpAgent: the openai protocol needs a model');
  const headers = { ...options.headers };
  const problems = headerProblems(headers);
  if (problems.length > 0) throw new Error(`createHttpAgent: headers: ${problems.join('; ')}`);
  const upstream: Upstream = {
    dialect,
    target: dialect.target(url),
    headers,
    secrets: secretsOf(headers),
    model: options.model,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    clock: options.clock ?? systemClock,
  };
  return { run: (input) => runUpstream(upstream, input) };
}

interface Upstream {
  readonly dialect: Dialect;
  readonly target: URL;
  readonly headers: Readonly<Record<string, string>>;
  /** Configured header values (and their words) that must never appear in a failure message. */
  readonly secrets: readonly string[];
  readonly model: string | undefined;
  readonly connectTimeoutMs: number;
  readonly clock: Clock;
}

async function* runUpstream(upstream: Upstream, input: AgentRunInput): AsyncGenerator<AgentStep> {
  const { dialect } = upstream;
  const body = JSON.stringify(dialect.body({ input, history: input.history ?? [], model: upstream.model }));
  let response: IncomingMessage | undefined;
  const request = new AbortController();
  const abort = () => request.abort(input.signal.reason);
  input.signal.addEventListener('abort', abort, { once: true });
  try {
    input.signal.throwIfAborted();
    response = await send(upstream, input, body, request);
    const framing = dialect.framing(mediaType(response.headers['content-type']));
    if (framing === null) {
      throw new UpstreamFailure(
        `the upstream answered with content-type ${quoted(String(response.headers['content-type']))}, which the ${dialect.name} dialect does not read`,
      );
    }
    const decoder = dialect.decoder();
    const answer = bounded(response);
    const messages = framing === 'sse' ? sseData(answer) : ndjsonLines(answer);
    for await (const message of messages) {
      const { steps, done } = decoder.decode(message);
      yield* steps;
      if (done) return;
    }
    decoder.ended();
  } catch (error) {
    // After the run's own abort nothing is reported: the run already ended.
    if (input.signal.aborted) throw error;
    throw new UpstreamFailure(redact(describe(error, upstream, response !== undefined), upstream.secrets));
  } finally {
    input.signal.removeEventListener('abort', abort);
    // Whatever is left unread (after RUN_FINISHED, or a failure) is not waited for.
    if (response && !response.complete) response.destroy();
    request.abort();
  }
}

/** POSTs the run; resolves with a 2xx response once its headers came within the connect timeout. */
async function send(upstream: Upstream, input: AgentRunInput, body: string, request: AbortController): Promise<IncomingMessage> {
  const { target, connectTimeoutMs, clock } = upstream;
  let timedOut = false;
  const timer = clock.setTimeout(() => {
    timedOut = true;
    request.abort();
  }, connectTimeoutMs);
  try {
    const response = await post(target, requestHeaders(upstream, input, body), body, request.signal);
    if (response.statusCode === undefined || response.statusCode < 200 || response.statusCode > 299) {
      const excerpt = await readExcerpt(response).catch(() => '');
      throw new UpstreamFailure(
        `the upstream agent answered HTTP ${response.statusCode} ${response.statusMessage ?? ''}`.trimEnd() + (excerpt ? `: ${quoted(excerpt)}` : ''),
      );
    }
    return response;
  } catch (error) {
    // A status already read is the cause, even if the timer cut the excerpt of its body short.
    if (timedOut && !(error instanceof UpstreamFailure)) {
      throw new UpstreamFailure(`the upstream agent did not answer within ${connectTimeoutMs} ms (connect timeout)`);
    }
    throw error;
  } finally {
    clock.clearTimeout(timer);
  }
}

function requestHeaders(upstream: Upstream, input: AgentRunInput, body: string): OutgoingHttpHeaders {
  return {
    ...upstream.headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    accept: upstream.dialect.accept,
    // Percent-encoded: a user id is any text of a token's `sub`, a header value only visible ASCII.
    'x-agentwire-user': encodeURIComponent(input.userId),
    'x-agentwire-run': encodeURIComponent(input.runId),
  };
}

/**
 * One request with node:http: its response is a Readable whose async iterator reads the socket
 * only as the run consumes it (backpressure down to TCP), it has no idle timeout of its own (an
 * agent may think for minutes between two lines), and its errors name the cause plainly.
 */
function post(target: URL, headers: OutgoingHttpHeaders, body: string, signal: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const client = target.protocol === 'https:' ? https : http;
    const req = client.request(target, { method: 'POST', headers, signal }, resolve);
    req.on('error', reject);
    req.end(body);
  });
}

/** The body's chunks, failing once they pass MAX_ANSWER_BYTES. */
async function* bounded(body: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let bytes = 0;
  for await (const chunk of body) {
    bytes += chunk.length;
    if (bytes > MAX_ANSWER_BYTES) throw new UpstreamFailure('the upstream sent over 16 MiB in one run');
    yield chunk;
  }
}

/** The start of an error answer's body, for the failure message. */
async function readExcerpt(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    bytes += chunk.length;
    if (bytes >= ERROR_BODY_BYTES) break;
  }
  return Buffer.concat(chunks).subarray(0, ERROR_BODY_BYTES).toString('utf8');
}

/** The failure message for anything the run threw, before the answer came (`streaming` false) or while reading it. */
function describe(error: unknown, upstream: Upstream, streaming: boolean): string {
  if (error instanceof UpstreamFailure) return error.message;
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  const cause = `${quoted(message)}${code && !message.includes(code) ? ` (${code})` : ''}`;
  // Node reports a body cut short (a reset, or a close before the last chunk) as `aborted`.
  if (streaming) return `the upstream connection was cut in the middle of the stream: ${cause}`;
  return `could not reach the upstream agent at ${upstream.target.origin}: ${cause}`;
}

/** `text/event-stream; charset=utf-8` -> `text/event-stream`. */
function mediaType(header: string | undefined): string | undefined {
  return header?.split(';')[0]!.trim().toLowerCase() || undefined;
}
