/**
 * The browser chat page (served by src/web/index.ts, bundled with esbuild). Plain DOM on top of
 * the client SDK (agentwire/client) with the browser's own WebSocket.
 *
 * Rendering rule: every durable event becomes exactly one element carrying `data-seq` and
 * `data-epoch`, created only if that (epoch, seq) pair has not been rendered yet. The SDK already
 * drops replayed duplicates; the page keys by (epoch, seq) as well, so a replay can never draw a
 * line twice, and a new epoch (the server lost its log) starts a fresh key space.
 */
import {
  ClientClosedError,
  RequestError,
  createClient,
  type AgentEvent,
  type AgentwireClient,
  type ClientState,
  type CloseInfo,
} from '@agentwire/client';
import type { ChatPageConfig } from './config.js';

type EventOf<T extends AgentEvent['type']> = Extract<AgentEvent, { type: T }>;

interface RunView {
  readonly runId: string;
  readonly tools: Map<string, HTMLElement>;
  stop: HTMLButtonElement | null;
  ended: boolean;
}

interface ThreadView {
  readonly id: string;
  readonly label: string;
  readonly button: HTMLButtonElement;
  readonly unread: HTMLElement;
  readonly log: HTMLOListElement;
  readonly runs: Map<string, RunView>;
  /** Message bubbles shown on submit, by message id, until their `agent_started` arrives. */
  readonly pending: Map<string, HTMLLIElement>;
  unreadCount: number;
}

const STATE_TEXT: Record<ClientState, string> = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  ready: 'Connected',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
};

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`chat page: #${id} is missing`);
  return el as T;
};

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') el.className = value;
    else el.setAttribute(name, value);
  }
  for (const child of children) el.append(child);
  return el;
}

function newId(prefix: string): string {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function pretty(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

function readConfig(): ChatPageConfig {
  const el = document.getElementById('agentwire-config');
  const parsed = el?.textContent ? (JSON.parse(el.textContent) as Partial<ChatPageConfig>) : {};
  return { wsUrl: parsed.wsUrl ?? '/ws', token: parsed.token ?? null };
}

/** `/ws` or `ws://…` to an absolute ws(s) URL (http pages get ws:, https pages wss:). */
function resolveWsUrl(wsUrl: string): string {
  const url = new URL(wsUrl, location.href);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  return url.toString();
}

/** The token's `sub`, only to key this tab's saved position per user (the server verifies tokens). */
function tokenSubject(token: string): string | null {
  try {
    const part = token.split('.')[1] ?? '';
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

interface Saved {
  epoch: string | null;
  threads: Array<{ id: string; label: string }>;
  active: string | null;
}

/** This tab's threads and epoch in sessionStorage: a reload replays the log and rebuilds them. */
class TabStore {
  constructor(readonly key: string | null) {}

  load(): Saved {
    const empty: Saved = { epoch: null, threads: [], active: null };
    if (!this.key) return empty;
    try {
      const raw = sessionStorage.getItem(this.key);
      return raw ? { ...empty, ...(JSON.parse(raw) as Partial<Saved>) } : empty;
    } catch {
      return empty;
    }
  }

  save(value: Saved): void {
    if (!this.key) return;
    try {
      sessionStorage.setItem(this.key, JSON.stringify(value));
    } catch {
      // storage full or disabled: a reload then starts empty
    }
  }
}

class ChatPage {
  readonly #threads = new Map<string, ThreadView>();
  /** `${epoch}:${seq}` of every event drawn. */
  readonly #rendered = new Set<string>();
  readonly #wsUrl: string;
  #client: AgentwireClient | null = null;
  #store = new TabStore(null);
  #active: ThreadView | null = null;
  #threadCounter = 0;
  /** Events up to this seq of this epoch are the history replayed on page load: not "new". */
  #history: { epoch: string; upTo: number } | null = null;
  #drawingHistory = false;

  readonly #badge = $<HTMLSpanElement>('connection');
  readonly #threadList = $<HTMLUListElement>('thread-list');
  readonly #logs = $<HTMLDivElement>('transcripts');
  readonly #heading = $<HTMLHeadingElement>('thread-heading');
  readonly #note = $<HTMLDivElement>('history-note');
  readonly #noteText = $<HTMLParagraphElement>('history-note-text');
  readonly #form = $<HTMLFormElement>('composer');
  readonly #input = $<HTMLTextAreaElement>('message');
  readonly #sendButton = $<HTMLButtonElement>('send');
  readonly #tokenForm = $<HTMLFormElement>('token-form');
  readonly #tokenInput = $<HTMLInputElement>('token');
  readonly #tokenError = $<HTMLParagraphElement>('token-error');

  constructor(config: ChatPageConfig) {
    this.#wsUrl = resolveWsUrl(config.wsUrl);
    $<HTMLButtonElement>('new-thread').addEventListener('click', () => {
      this.#select(this.#createThread());
      this.#input.focus();
    });
    $<HTMLButtonElement>('history-note-dismiss').addEventListener('click', () => {
      this.#note.hidden = true;
      this.#input.focus();
    });
    this.#form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.#input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#form.requestSubmit();
      }
    });
    this.#tokenForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const token = this.#tokenInput.value.trim();
      if (token) this.start(token);
    });

    const token = new URL(location.href).searchParams.get('token') || config.token;
    if (token) this.start(token);
    else this.#askForToken(null);
  }

  start(token: string): void {
    this.#tokenForm.hidden = true;
    if (this.#client) {
      // Another token, maybe another user: start from a clean page.
      this.#client.close();
      this.#client = null;
      this.#threads.clear();
      this.#rendered.clear();
      this.#threadList.replaceChildren();
      this.#logs.replaceChildren();
      this.#note.hidden = true;
      this.#active = null;
      this.#threadCounter = 0;
      this.#history = null;
    }
    const user = tokenSubject(token);
    this.#store = new TabStore(user === null ? null : `agentwire-chat:${this.#wsUrl}:${user}`);
    const saved = this.#store.load();
    for (const { id, label } of saved.threads) this.#thread(id, label);
    if (this.#threads.size === 0) this.#createThread();
    this.#select(this.#threads.get(saved.active ?? '') ?? this.#threads.values().next().value!);

    // A saved epoch resumes from seq 0, so the server replays this user's retained log.
    const client = createClient({
      url: this.#wsUrl,
      token,
      ...(saved.epoch ? { resume: { epoch: saved.epoch, lastSeq: 0 } } : {}),
    });
    this.#client = client;
    client.on('state', ({ state, closeInfo }) => this.#showState(state, closeInfo));
    client.on('ready', (ready) => {
      if (this.#history === null) this.#history = { epoch: ready.epoch, upTo: ready.resumed ? ready.last_seq : 0 };
      this.#badge.title = `Signed in as ${ready.user_id}`;
      $<HTMLSpanElement>('user').textContent = ready.user_id;
      this.#persist();
    });
    client.on('disconnect', (info) => {
      const seconds = Math.max(1, Math.round(info.delayMs / 1000));
      this.#badge.title = `Connection lost (${info.code}${info.reason ? ` ${info.reason}` : ''}); retry ${info.attempt} in ${seconds}s`;
    });
    client.on('history_reset', (reset) => this.#historyReset(reset.previousLastSeq));
    client.on('event', (event) => this.#render(event, client.position?.epoch ?? ''));
    client.on('server_error', (frame) => this.#systemLine(`Server error ${frame.code}: ${frame.message}`));
    this.#showState(client.state);
    client.connect().catch(() => {
      // closed before ready: the state listener shows why
    });
  }

  // ---- connection ----

  #showState(state: ClientState, closeInfo?: CloseInfo): void {
    this.#badge.dataset.state = state;
    this.#badge.textContent = STATE_TEXT[state];
    if (state === 'ready') this.#badge.title = '';
    this.#sendButton.disabled = state === 'closed';
    if (state === 'closed' && closeInfo) {
      const why = `${closeInfo.code}${closeInfo.reason ? ` ${closeInfo.reason}` : ''}`;
      this.#badge.textContent = `Disconnected (${why})`;
      if (closeInfo.code === 4401) this.#askForToken(`The server refused the token (${closeInfo.reason || '4401'}). Paste a valid one.`);
    }
  }

  #askForToken(error: string | null): void {
    if (!this.#client) this.#showState('idle');
    this.#tokenForm.hidden = false;
    this.#tokenError.textContent = error ?? '';
    this.#tokenError.hidden = error === null;
    this.#tokenInput.focus();
  }

  #historyReset(previousLastSeq: number): void {
    const hadEvents = [...this.#threads.values()].some((thread) => thread.log.querySelector('[data-seq]'));
    this.#noteText.textContent = hadEvents
      ? 'History reloaded: the server could not replay what happened while this page was away (its event log was reset). ' +
        'Earlier messages may be incomplete; new messages appear below.'
      : `History reloaded: the server no longer has this tab's earlier history (${previousLastSeq} events seen before), so it starts empty.`;
    this.#note.hidden = false;
    for (const thread of this.#threads.values()) {
      for (const run of thread.runs.values()) {
        if (!run.ended) this.#endRun(run, 'interrupted: history reset');
      }
      for (const bubble of thread.pending.values()) this.#setStatus(bubble, 'sending…');
      if (thread.log.childElementCount > 0) {
        thread.log.append(h('li', { class: 'divider', role: 'separator' }, 'history reset: earlier events may be missing'));
      }
    }
    this.#persist();
  }

  // ---- threads ----

  #createThread(): ThreadView {
    let label: string;
    do label = `Thread ${++this.#threadCounter}`;
    while ([...this.#threads.values()].some((thread) => thread.label === label));
    const view = this.#thread(newId('t-'), label);
    this.#persist();
    return view;
  }

  #thread(id: string, label = id): ThreadView {
    const existing = this.#threads.get(id);
    if (existing) return existing;
    const unread = h('span', { class: 'unread' });
    const button = h('button', { type: 'button', 'data-thread-id': id }, h('span', { class: 'label' }, label), unread);
    const log = h('ol', {
      class: 'transcript',
      'data-thread-id': id,
      'aria-label': `Messages in ${label}`,
      'aria-live': 'polite',
      'aria-relevant': 'additions',
      tabindex: '0',
    });
    log.hidden = true;
    const view: ThreadView = { id, label, button, unread, log, runs: new Map(), pending: new Map(), unreadCount: 0 };
    button.addEventListener('click', () => this.#select(view));
    this.#threadList.append(h('li', {}, button));
    this.#logs.append(log);
    this.#threads.set(id, view);
    return view;
  }

  #select(view: ThreadView): void {
    for (const thread of this.#threads.values()) {
      const active = thread === view;
      thread.log.hidden = !active;
      if (active) thread.button.setAttribute('aria-current', 'true');
      else thread.button.removeAttribute('aria-current');
    }
    this.#active = view;
    view.unreadCount = 0;
    view.unread.textContent = '';
    this.#heading.textContent = view.label;
    this.#scrollToEnd(view);
    this.#persist();
  }

  #persist(): void {
    this.#store.save({
      epoch: this.#client?.position?.epoch ?? null,
      threads: [...this.#threads.values()].map(({ id, label }) => ({ id, label })),
      active: this.#active?.id ?? null,
    });
  }

  // ---- sending ----

  #submit(): void {
    const client = this.#client;
    const thread = this.#active;
    const text = this.#input.value.trim();
    if (!client || !thread || !text) return;
    if (text.length > 32_768) {
      this.#systemLine('That message is too long (at most 32 768 characters).');
      return;
    }
    const id = newId('m-');
    const bubble = this.#userBubble(text, id);
    bubble.classList.add('pending');
    this.#setStatus(bubble, client.state === 'ready' ? 'sending…' : 'waiting for the connection…');
    thread.pending.set(id, bubble);
    this.#append(thread, bubble);
    this.#input.value = '';
    client.send(thread.id, text, { id }).then(
      (ack) => {
        if (!thread.pending.has(id)) return;
        this.#setStatus(bubble, ack.status === 'queued' ? 'queued behind the current run' : 'sent');
      },
      (error: unknown) => {
        thread.pending.delete(id);
        bubble.classList.replace('pending', 'failed');
        const why =
          error instanceof RequestError
            ? `${error.code}: ${error.frame.message}`
            : error instanceof ClientClosedError
              ? 'disconnected'
              : String(error);
        this.#setStatus(bubble, `not sent (${why})`);
      },
    );
  }

  #userBubble(text: string, messageId: string): HTMLLIElement {
    return h(
      'li',
      { class: 'msg user', 'data-message-id': messageId },
      h('span', { class: 'who' }, 'You'),
      h('p', { class: 'text' }, text),
      h('span', { class: 'status' }),
    );
  }

  #setStatus(bubble: HTMLElement, text: string): void {
    const status = bubble.querySelector('.status');
    if (status) status.textContent = text;
  }

  // ---- events ----

  #render(event: AgentEvent, epoch: string): void {
    const key = `${epoch}:${event.seq}`;
    if (this.#rendered.has(key)) return;
    this.#rendered.add(key);
    const thread = this.#thread(event.thread_id);
    this.#drawingHistory = this.#history !== null && this.#history.epoch === epoch && event.seq <= this.#history.upTo;
    const mark = (el: HTMLElement) => {
      el.dataset.seq = String(event.seq);
      el.dataset.epoch = epoch;
      el.dataset.type = event.type;
      el.dataset.runId = event.run_id;
      return el;
    };
    // eslint-disable-next-line @typescript-eslint/switch-exhaustiveness-check -- the delta events of section 7 are the streaming change's to render
    switch (event.type) {
      case 'agent_started':
        return this.#started(thread, event, mark);
      case 'agent_thinking':
        this.#append(thread, mark(h('li', { class: 'msg thinking' }, h('span', { class: 'who' }, 'Thinking'), h('p', { class: 'text' }, event.text))));
        return;
      case 'tool_executing':
        return this.#toolCall(thread, event, mark);
      case 'tool_completed':
        return this.#toolResult(thread, event, mark);
      case 'agent_completed':
      case 'agent_error':
        return this.#terminal(thread, event, mark);
    }
  }

  #run(thread: ThreadView, runId: string): RunView {
    let run = thread.runs.get(runId);
    if (!run) thread.runs.set(runId, (run = { runId, tools: new Map(), stop: null, ended: false }));
    return run;
  }

  #started(thread: ThreadView, event: EventOf<'agent_started'>, mark: (el: HTMLElement) => HTMLElement): void {
    const pending = thread.pending.get(event.message_id);
    thread.pending.delete(event.message_id);
    const bubble = pending ?? this.#userBubble(event.text, event.message_id);
    bubble.classList.remove('pending');
    mark(bubble);
    const run = this.#run(thread, event.run_id);
    if (!run.ended && this.#client) {
      const client = this.#client;
      const stop = h('button', { type: 'button', class: 'stop' }, 'Stop');
      stop.setAttribute('aria-label', 'Stop this run');
      stop.addEventListener('click', () => {
        stop.disabled = true;
        client.cancel(event.run_id).catch((error: unknown) => {
          stop.disabled = false;
          this.#systemLine(`Could not stop the run: ${error instanceof Error ? error.message : String(error)}`);
        });
      });
      run.stop = stop;
      bubble.append(stop);
    }
    this.#setStatus(bubble, '');
    // (Re)appended: a message sent while an earlier run was going moves below that run, so the
    // transcript stays in seq order.
    this.#append(thread, bubble);
  }

  #toolCall(thread: ThreadView, event: EventOf<'tool_executing'>, mark: (el: HTMLElement) => HTMLElement): void {
    const result = h('div', { class: 'result waiting' }, 'running…');
    const el = mark(
      h(
        'li',
        { class: 'msg tool', 'data-call-id': event.call_id },
        h('span', { class: 'who' }, 'Tool call ', h('code', { class: 'tool-name' }, event.tool)),
        h('pre', { class: 'args', 'aria-label': `Arguments of ${event.tool}` }, pretty(event.args)),
        result,
      ),
    );
    this.#run(thread, event.run_id).tools.set(event.call_id, result);
    this.#append(thread, el);
  }

  #toolResult(thread: ThreadView, event: EventOf<'tool_completed'>, mark: (el: HTMLElement) => HTMLElement): void {
    const body = [h('span', { class: 'who' }, event.ok ? 'Result' : 'Tool failed'), h('pre', { class: 'value' }, pretty(event.result))];
    const slot = this.#run(thread, event.run_id).tools.get(event.call_id);
    if (slot) {
      const stick = this.#nearEnd(thread);
      slot.className = `result ${event.ok ? 'ok' : 'failed'}`;
      slot.replaceChildren(...body);
      mark(slot);
      if (stick) this.#scrollToEnd(thread);
      this.#noteUnread(thread);
    } else {
      // The call itself was not seen (history reset in between): show the result on its own.
      this.#append(thread, mark(h('li', { class: `msg tool result ${event.ok ? 'ok' : 'failed'}`, 'data-call-id': event.call_id }, ...body)));
    }
  }

  #terminal(
    thread: ThreadView,
    event: EventOf<'agent_completed'> | EventOf<'agent_error'>,
    mark: (el: HTMLElement) => HTMLElement,
  ): void {
    const run = this.#run(thread, event.run_id);
    if (event.type === 'agent_completed') {
      const cancelled = event.status === 'cancelled';
      this.#append(
        thread,
        mark(
          h(
            'li',
            { class: `msg answer${cancelled ? ' cancelled' : ''}` },
            h('span', { class: 'who' }, cancelled ? 'Agent (cancelled)' : 'Agent'),
            h('p', { class: 'text' }, event.text),
          ),
        ),
      );
    } else {
      this.#append(
        thread,
        mark(
          h(
            'li',
            { class: 'msg error', role: 'note' },
            h('span', { class: 'who' }, `Run failed: ${event.code}`),
            h('p', { class: 'text' }, event.message),
          ),
        ),
      );
    }
    this.#endRun(run, null);
  }

  #endRun(run: RunView, why: string | null): void {
    run.ended = true;
    run.stop?.remove();
    run.stop = null;
    for (const slot of run.tools.values()) {
      if (slot.classList.contains('waiting')) slot.textContent = why ?? 'no result';
    }
  }

  #systemLine(text: string): void {
    const thread = this.#active;
    if (thread) this.#append(thread, h('li', { class: 'msg system', role: 'note' }, text));
  }

  #append(thread: ThreadView, el: HTMLElement): void {
    const stick = this.#nearEnd(thread);
    thread.log.append(el);
    this.#noteUnread(thread);
    if (stick) this.#scrollToEnd(thread);
  }

  #noteUnread(thread: ThreadView): void {
    if (thread === this.#active || this.#drawingHistory) return;
    thread.unreadCount++;
    thread.unread.textContent = ` (${thread.unreadCount} new)`;
  }

  #nearEnd(thread: ThreadView): boolean {
    const log = thread.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  #scrollToEnd(thread: ThreadView): void {
    if (thread !== this.#active) return;
    thread.log.scrollTop = thread.log.scrollHeight;
  }
}

new ChatPage(readConfig());
