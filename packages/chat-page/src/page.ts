/**
 * The browser chat page (served by src/web/index.ts, bundled with esbuild). Plain DOM on top of
 * the client SDK (agentwire/client): its WebSocket is the browser's own, and its history calls
 * (`threads()`, `history()`, …: the routes of PROTOCOL.md section 14) check every answer.
 *
 * Where a thread's lines come from: its history (GET …/messages) up to the position that answer
 * names (`epoch`/`last_seq`, the thread's "mark"), then the live events after it. A tab that
 * opens a thread (or reloads) loads the history first and connects from that mark, so the server
 * replays exactly what came after; a thread opened later is rebuilt from its history and the
 * live events this tab received meanwhile that the history does not include yet.
 *
 * Rendering rule: each live durable event is applied to its thread at most once, keyed by
 * (epoch, seq), and only if the thread's mark does not include it (same epoch, seq <= last_seq):
 * that is the seam that keeps a streamed answer from showing a fragment twice after a reload.
 * Every event except a delta becomes one element carrying `data-seq` and `data-epoch`; the
 * deltas of a run are folded into its one answer element, and its thinking deltas into one
 * collapsed element (their `data-delta-seqs` list them),
 * whose markdown is re-rendered at most once per animation frame. A new epoch (the server lost
 * its log) starts a fresh key space, and `resumed: false` reloads the history.
 */
import {
  ClientClosedError,
  HttpError,
  RequestError,
  createClient,
  type AgentEvent,
  type AgentwireClient,
  type ClientState,
  type CloseInfo,
  type HistoryMessage,
  type HistoryPage,
} from '@agentwire/client';
import type { ChatPageConfig } from './config.js';
import { renderMarkdown } from './markdown.js';

type EventOf<T extends AgentEvent['type']> = Extract<AgentEvent, { type: T }>;

/** A run's answer: one element whose markdown body is re-rendered from `text`. */
interface AnswerView {
  readonly el: HTMLLIElement;
  readonly who: HTMLElement;
  readonly body: HTMLDivElement;
  text: string;
  readonly deltaSeqs: number[];
}

/** A run's streamed reasoning: one collapsed element. */
interface ThinkingView {
  readonly el: HTMLLIElement;
  readonly body: HTMLParagraphElement;
  text: string;
  readonly deltaSeqs: number[];
}

interface RunView {
  readonly runId: string;
  readonly tools: Map<string, HTMLElement>;
  answer: AnswerView | null;
  thinking: ThinkingView | null;
  stop: HTMLButtonElement | null;
  ended: boolean;
}

/**
 * `local`: made in this tab, nothing on the server yet: every live event applies.
 * `unloaded`: its history was never loaded (live events apply, the history replaces them when opened).
 * `loading`/`loaded`: its history is (being) loaded; `mark` is what that history includes.
 */
type ThreadState = 'local' | 'unloaded' | 'loading' | 'loaded';

interface Mark {
  readonly epoch: string;
  readonly lastSeq: number;
}

interface ThreadView {
  readonly id: string;
  title: string;
  readonly item: HTMLLIElement;
  readonly button: HTMLButtonElement;
  readonly label: HTMLSpanElement;
  readonly unread: HTMLElement;
  readonly log: HTMLOListElement;
  readonly older: HTMLButtonElement;
  runs: Map<string, RunView>;
  /** Message bubbles shown on submit, by message id, until their `agent_started` arrives. */
  readonly pending: Map<string, HTMLLIElement>;
  /**
   * The newest live event applied since the log was last built. Events reach a thread in seq
   * order, so this one position is the whole set of applied (epoch, seq) keys.
   */
  applied: Mark | null;
  /** Live events applied since the log was last built, to re-apply over a fresh history (bounded). */
  live: Array<{ event: AgentEvent; epoch: string }>;
  state: ThreadState;
  mark: Mark | null;
  /** Cursor towards older messages of the loaded history, or null at its beginning. */
  olderCursor: string | null;
  unreadCount: number;
}

/** Live events kept per thread for a rebuild from history; older ones the history has by then. */
const LIVE_KEPT = 5000;
/** Threads listed, and messages per history page, asked for at a time. */
const PAGE_LIMIT = 50;
/** Longest thread title the server keeps (section 14). */
const TITLE_MAX = 200;

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

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Array<Node | string>): HTMLElementTagNameMap[K] {
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

/** The title the server gives a thread: its first message cut to 80 characters. */
function titleOf(text: string): string {
  return [...text].slice(0, 80).join('');
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

/** The token's `sub`, to key this tab's saved state per user and name users (unverified: the server verifies tokens). */
function tokenSubject(token: string): string | null {
  try {
    const part = token.split('.')[1] ?? '';
    const bytes = atob(
      part
        .replace(/-/g, '+')
        .replace(/_/g, '/')
        .padEnd(Math.ceil(part.length / 4) * 4, '='),
    );
    // atob gives one character per byte: the JSON is UTF-8 (a sub `josé` is not `josÃ©`).
    const json = new TextDecoder().decode(Uint8Array.from(bytes, (byte) => byte.charCodeAt(0)));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

/**
 * A user id as shown to the user: what draws nothing or reorders the text around it (controls,
 * format and bidi characters, spaces other than a plain one inside) written as `\u{…}`, so that
 * an id made to look like another (`\u202Eyduj\u202C` is drawn as `judy`) does not.
 */
function shownUserId(userId: string): string {
  return userId.replace(/[\p{C}\p{Z}]/gu, (char: string, offset: number) =>
    char === ' ' && offset > 0 && offset < userId.length - 1 ? char : `\\u{${char.codePointAt(0)!.toString(16).toUpperCase()}}`,
  );
}

/** Whether two tokens are of one user: the same token, or the same `sub` (unverified: only to compare). */
function sameUser(a: string, b: string): boolean {
  const subject = tokenSubject(a);
  return a === b || (subject !== null && subject === tokenSubject(b));
}

/**
 * The `?token=` of the page's URL, removed from the address bar so that it does not end up in
 * the history, bookmarks, screenshots or shared links. Every other parameter stays as written,
 * and the hash too.
 */
function takeUrlToken(): string | null {
  const token = new URL(location.href).searchParams.get('token');
  const parts = location.search.slice(1).split('&');
  const kept = parts.filter((part) => part !== '' && !new URLSearchParams(part).has('token'));
  if (token !== null) history.replaceState(history.state, '', `${location.pathname}${kept.length > 0 ? `?${kept.join('&')}` : ''}${location.hash}`);
  return token || null;
}

/** The token this tab was given (its URL or the sign-in form) and the server accepted, in sessionStorage: a reload signs in again. */
class TabToken {
  readonly #key: string;

  constructor(wsUrl: string) {
    this.#key = `agentwire-chat-token:${wsUrl}`;
  }

  load(): string | null {
    try {
      return sessionStorage.getItem(this.#key) || null;
    } catch {
      return null;
    }
  }

  save(token: string): void {
    try {
      sessionStorage.setItem(this.#key, token);
    } catch {
      // storage full or disabled: a reload then asks again
    }
  }
}

interface Saved {
  /** Threads made in this tab that have no message on the server yet. */
  local: Array<{ id: string; title: string }>;
  active: string | null;
}

/** This tab's open thread and its not-yet-sent threads in sessionStorage; the rest is history. */
class TabStore {
  constructor(readonly key: string | null) {}

  load(): Saved {
    const empty: Saved = { local: [], active: null };
    if (!this.key) return empty;
    try {
      const raw = sessionStorage.getItem(this.key);
      const parsed = raw ? (JSON.parse(raw) as Partial<Saved>) : {};
      return {
        local: Array.isArray(parsed.local) ? parsed.local.filter((t) => typeof t?.id === 'string' && typeof t.title === 'string') : [],
        active: typeof parsed.active === 'string' ? parsed.active : null,
      };
    } catch {
      return empty;
    }
  }

  save(value: Saved): void {
    if (!this.key) return;
    try {
      sessionStorage.setItem(this.key, JSON.stringify(value));
    } catch {
      // storage full or disabled: a reload then opens a new thread
    }
  }
}

class ChatPage {
  readonly #threads = new Map<string, ThreadView>();
  /** Threads deleted in this tab: their last events (the cancelled runs) must not bring them back. */
  readonly #deleted = new Set<string>();
  readonly #wsUrl: string;
  readonly #tabToken: TabToken;
  /** The client of the current token from start() on: its history calls work before it connects. */
  #api: AgentwireClient | null = null;
  /** The same client once it connects (null while the first history loads): what needs the socket uses it. */
  #client: AgentwireClient | null = null;
  #store = new TabStore(null);
  #active: ThreadView | null = null;
  /** Numbers the threads made in this tab ("Thread 2") until their first message names them. */
  #threadCounter = 0;
  /** Bumped by every start(): answers of an earlier start are dropped. */
  #generation = 0;
  /** True while a thread's log is built from history: those lines are not "new". */
  #drawingHistory = false;
  readonly #dirtyAnswers = new Set<AnswerView>();
  #frameRequested = false;

  readonly #badge = $<HTMLSpanElement>('connection');
  readonly #threadList = $<HTMLUListElement>('thread-list');
  readonly #logs = $<HTMLDivElement>('transcripts');
  readonly #heading = $<HTMLHeadingElement>('thread-heading');
  readonly #renameButton = $<HTMLButtonElement>('rename-thread');
  readonly #deleteButton = $<HTMLButtonElement>('delete-thread');
  readonly #note = $<HTMLDivElement>('history-note');
  readonly #noteText = $<HTMLParagraphElement>('history-note-text');
  readonly #form = $<HTMLFormElement>('composer');
  readonly #input = $<HTMLTextAreaElement>('message');
  readonly #sendButton = $<HTMLButtonElement>('send');
  readonly #tokenForm = $<HTMLFormElement>('token-form');
  readonly #tokenInput = $<HTMLInputElement>('token');
  readonly #tokenError = $<HTMLParagraphElement>('token-error');
  readonly #switchUser = $<HTMLDivElement>('switch-user');

  constructor(config: ChatPageConfig) {
    this.#wsUrl = resolveWsUrl(config.wsUrl);
    this.#tabToken = new TabToken(this.#wsUrl);
    $<HTMLButtonElement>('new-thread').addEventListener('click', () => {
      this.#select(this.#createThread());
      this.#input.focus();
    });
    this.#renameButton.addEventListener('click', () => void this.#rename());
    this.#deleteButton.addEventListener('click', () => void this.#delete());
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
      if (token) this.#signIn(token);
    });

    // Which token: the URL's, then the one this tab kept, then the server's. A URL token waits
    // for the user to accept it unless it is of the tab's own user: a link can carry anyone's
    // token, and taking it silently would sign the user into the link maker's account (login
    // CSRF), in a tab signed in as someone else and in a fresh tab alike.
    const urlToken = takeUrlToken();
    const held = this.#tabToken.load() ?? config.token;
    if (urlToken && held && sameUser(urlToken, held)) this.#signIn(urlToken);
    else if (urlToken) {
      if (held) void this.start(held);
      this.#offerLinkToken(urlToken, held);
    } else if (held) void this.start(held);
    else this.#askForToken(null);
  }

  /**
   * Starts with a token the user gave, kept for this tab once the server accepts it: a refused
   * one (a link's forged token naming the tab's user, or a mistyped one) must not take the place
   * of the token the tab had, or every reload would offer it again.
   */
  #signIn(token: string): void {
    void this.start(token, { keep: true });
  }

  /**
   * The banner that asks whether to sign in as the URL token's user: leaving the tab's current
   * user for it, or, in a tab not signed in yet, at all (declining then asks for a token).
   */
  #offerLinkToken(offered: string, current: string | null): void {
    const name = (token: string) => {
      const subject = tokenSubject(token);
      return subject === null ? 'an unknown user' : shownUserId(subject);
    };
    const accept = $<HTMLButtonElement>('switch-user-accept');
    const keep = $<HTMLButtonElement>('switch-user-keep');
    const warning = `whoever made the link sees what you send as ${name(offered)}.`;
    $<HTMLParagraphElement>('switch-user-text').textContent = current
      ? `The link you opened signs in as ${name(offered)}, but this tab is signed in as ${name(current)}. Switch only if you meant to: ${warning}`
      : `The link you opened signs in as ${name(offered)}. Continue only if you meant to: ${warning}`;
    accept.textContent = current ? `Switch to ${name(offered)}` : `Continue as ${name(offered)}`;
    keep.textContent = current ? `Stay as ${name(current)}` : 'Use another token';
    const close = () => {
      this.#switchUser.hidden = true;
      accept.onclick = keep.onclick = null;
    };
    accept.onclick = () => {
      close();
      this.#signIn(offered);
    };
    keep.onclick = () => {
      close();
      if (current) this.#input.focus();
      else this.#askForToken(null);
    };
    if (!current) this.#showState('idle');
    this.#switchUser.hidden = false;
    keep.focus();
  }

  async start(token: string, { keep = false } = {}): Promise<void> {
    const generation = ++this.#generation;
    this.#tokenForm.hidden = true;
    if (this.#api) {
      // Another token, maybe another user: start from a clean page.
      this.#api.close();
      this.#api = null;
      this.#client = null;
      this.#threads.clear();
      this.#deleted.clear();
      this.#threadList.replaceChildren();
      this.#logs.replaceChildren();
      this.#note.hidden = true;
      this.#active = null;
      this.#threadCounter = 0;
    }
    const user = tokenSubject(token);
    this.#store = new TabStore(user === null ? null : `agentwire-chat:${this.#wsUrl}:${user}`);
    const client = createClient({ url: this.#wsUrl, token });
    this.#api = client;
    const saved = this.#store.load();
    this.#showState('idle');
    this.#badge.textContent = 'Loading history…';

    // The user's threads, then the open one's history, then the connection from that history's
    // position: the server replays exactly what the history does not include.
    const listed = await client.threads({ limit: PAGE_LIMIT }).then(
      (page) => page.threads,
      (error: unknown) => {
        this.#systemLine(`Could not load the thread list: ${error instanceof Error ? error.message : String(error)}`);
        return [];
      },
    );
    if (generation !== this.#generation) return;
    for (const { thread_id, title } of listed) this.#thread(thread_id, title, 'unloaded');
    for (const { id, title } of saved.local) if (!this.#threads.has(id)) this.#thread(id, title, 'local');
    const active = this.#threads.get(saved.active ?? '') ?? this.#createThread();
    this.#select(active);
    if (active.state === 'unloaded') await this.#load(active);
    if (generation !== this.#generation) return;

    this.#client = client;
    client.on('state', ({ state, closeInfo }) => this.#showState(state, closeInfo));
    client.on('ready', (ready) => {
      if (keep) this.#tabToken.save(token);
      this.#badge.title = `Signed in as ${shownUserId(ready.user_id)}`;
      $<HTMLSpanElement>('user').textContent = shownUserId(ready.user_id);
    });
    client.on('disconnect', (info) => {
      const seconds = Math.max(1, Math.round(info.delayMs / 1000));
      this.#badge.title = `Connection lost (${info.code}${info.reason ? ` ${info.reason}` : ''}); retry ${info.attempt} in ${seconds}s`;
    });
    client.on('history_reset', (reset) => this.#historyReset(reset.previousLastSeq));
    client.on('event', (event) => this.#live(event, client.position?.epoch ?? ''));
    client.on('server_error', (frame) => this.#systemLine(`Server error ${frame.code}: ${frame.message}`));
    this.#showState(client.state);
    client.connect(active.mark ? { resume: active.mark } : {}).catch(() => {
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

  /** `resumed: false`: what happened while away is not replayed, so every history is reloaded. */
  #historyReset(previousLastSeq: number): void {
    const hadEvents = [...this.#threads.values()].some((thread) => thread.log.querySelector('[data-type]'));
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
      if (thread.log.querySelector('[data-type]')) {
        thread.log.append(h('li', { class: 'divider', role: 'separator' }, 'history reset: earlier events may be missing'));
      }
      if (thread.state !== 'local' || thread.runs.size > 0) thread.state = 'unloaded';
    }
    if (this.#active?.state === 'unloaded') void this.#load(this.#active);
  }

  // ---- threads ----

  #createThread(): ThreadView {
    let title: string;
    do title = `Thread ${++this.#threadCounter}`;
    while ([...this.#threads.values()].some((thread) => thread.title === title));
    const view = this.#thread(newId('t-'), title, 'local');
    this.#threadList.prepend(view.item);
    this.#persist();
    return view;
  }

  #thread(id: string, title: string, state: ThreadState): ThreadView {
    const existing = this.#threads.get(id);
    if (existing) return existing;
    const unread = h('span', { class: 'unread' });
    const label = h('span', { class: 'label' }, title);
    const button = h('button', { type: 'button', 'data-thread-id': id, title }, label, unread);
    const older = h('button', { type: 'button', class: 'older' }, 'Load older messages');
    older.hidden = true;
    const log = h('ol', {
      class: 'transcript',
      'data-thread-id': id,
      'aria-label': `Messages in ${title}`,
      'aria-live': 'polite',
      'aria-relevant': 'additions',
      tabindex: '0',
    });
    log.hidden = true;
    const item = h('li', {}, button);
    const view: ThreadView = {
      id,
      title,
      item,
      button,
      label,
      unread,
      log,
      older,
      runs: new Map(),
      pending: new Map(),
      applied: null,
      live: [],
      state,
      mark: null,
      olderCursor: null,
      unreadCount: 0,
    };
    button.addEventListener('click', () => this.#select(view));
    older.addEventListener('click', () => void this.#loadOlder(view));
    this.#threadList.append(item);
    this.#logs.append(log);
    this.#threads.set(id, view);
    return view;
  }

  #retitle(view: ThreadView, title: string): void {
    view.title = title;
    view.label.textContent = title;
    view.button.title = title;
    view.log.setAttribute('aria-label', `Messages in ${title}`);
    if (view === this.#active) this.#heading.textContent = title;
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
    this.#heading.textContent = view.title;
    this.#scrollToEnd(view);
    this.#persist();
    // A thread first seen in the list (or after a history reset) is loaded when opened; the
    // initial load in start() awaits it before connecting.
    if (view.state === 'unloaded' && this.#client) void this.#load(view);
  }

  #persist(): void {
    this.#store.save({
      local: [...this.#threads.values()]
        .filter((t) => t.state === 'local' && t.runs.size === 0 && t.pending.size === 0)
        .map(({ id, title }) => ({ id, title })),
      active: this.#active?.id ?? null,
    });
  }

  /**
   * Builds the thread's log from its newest history page, then re-applies the live events this
   * tab received that the history does not include.
   */
  async #load(view: ThreadView): Promise<void> {
    const api = this.#api;
    if (!api || view.state === 'loading') return;
    view.state = 'loading';
    let page: HistoryPage;
    try {
      page = await api.history(view.id, { limit: PAGE_LIMIT });
    } catch (error) {
      if (!this.#threads.has(view.id) || view.state !== 'loading') return;
      // Not on the server (its log was lost, or it is new): what is shown stays. Any other
      // failure leaves it to load again when opened. Either way the events that arrived
      // meanwhile are applied now (each at most once).
      const missing = error instanceof HttpError && error.status === 404;
      view.state = missing ? 'local' : 'unloaded';
      for (const { event, epoch } of view.live) this.#apply(view, event, epoch);
      if (!missing) this.#systemLine(`Could not load this thread's history: ${error instanceof Error ? error.message : String(error)}`, view);
      else this.#persist();
      return;
    }
    if (!this.#threads.has(view.id) || view.state !== 'loading') return;
    const pending = [...view.pending.values()];
    const live = view.live;
    view.log.replaceChildren(view.older);
    view.runs = new Map();
    view.applied = null;
    view.live = [];
    view.mark = { epoch: page.epoch, lastSeq: page.last_seq };
    view.olderCursor = page.next_cursor;
    view.older.hidden = page.next_cursor === null;
    view.state = 'loaded';
    this.#drawingHistory = true;
    try {
      for (const el of this.#historyElements(view, page.messages)) view.log.append(el);
      for (const bubble of pending) view.log.append(bubble);
      // Events of another epoch belong to a log the server no longer has: the history stands for them.
      for (const { event, epoch } of live) if (epoch === page.epoch) this.#apply(view, event, epoch);
    } finally {
      this.#drawingHistory = false;
    }
    this.#scrollToEnd(view);
  }

  async #loadOlder(view: ThreadView): Promise<void> {
    const api = this.#api;
    const cursor = view.olderCursor;
    if (!api || cursor === null) return;
    view.older.disabled = true;
    try {
      const page = await api.history(view.id, { limit: PAGE_LIMIT, cursor });
      if (view.olderCursor !== cursor) return;
      const height = view.log.scrollHeight;
      view.older.after(...this.#historyElements(view, page.messages));
      view.olderCursor = page.next_cursor;
      view.older.hidden = page.next_cursor === null;
      view.log.scrollTop += view.log.scrollHeight - height; // keep what was on screen in place
    } catch (error) {
      this.#systemLine(`Could not load older messages: ${error instanceof Error ? error.message : String(error)}`, view);
    } finally {
      view.older.disabled = false;
    }
  }

  async #rename(): Promise<void> {
    const view = this.#active;
    const api = this.#api;
    if (!view || !api) return;
    const answer = prompt('New title for this thread', view.title);
    const title = answer?.trim() ?? '';
    if (!title) return;
    if ([...title].length > TITLE_MAX) {
      this.#systemLine(`A title has at most ${TITLE_MAX} characters.`, view);
      return;
    }
    if (view.state === 'local' && view.runs.size === 0) {
      // The server names a thread after its first message; only then can it be renamed.
      this.#systemLine('Send a first message, then rename the thread.', view);
      return;
    }
    try {
      this.#retitle(view, (await api.renameThread(view.id, title)).title);
    } catch (error) {
      this.#systemLine(`Could not rename the thread: ${error instanceof Error ? error.message : String(error)}`, view);
    }
  }

  async #delete(): Promise<void> {
    const view = this.#active;
    const api = this.#api;
    if (!view || !api) return;
    if (!confirm(`Delete the thread "${view.title}"? Its messages are erased and its runs are stopped.`)) return;
    if (view.state !== 'local' || view.runs.size > 0) {
      try {
        await api.deleteThread(view.id);
      } catch (error) {
        if (!(error instanceof HttpError && error.status === 404)) {
          this.#systemLine(`Could not delete the thread: ${error instanceof Error ? error.message : String(error)}`, view);
          return;
        }
      }
    }
    this.#deleted.add(view.id);
    this.#threads.delete(view.id);
    view.item.remove();
    view.log.remove();
    const next = this.#threads.values().next().value;
    this.#select(next ?? this.#createThread());
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
    this.#persist();
    client.send(thread.id, text, { id }).then(
      (ack) => {
        if (!thread.pending.has(id)) return;
        this.#setStatus(bubble, ack.status === 'queued' ? 'queued behind the current run' : 'sent');
      },
      (error: unknown) => {
        thread.pending.delete(id);
        bubble.classList.replace('pending', 'failed');
        const why =
          error instanceof RequestError ? `${error.code}: ${error.frame.message}` : error instanceof ClientClosedError ? 'disconnected' : String(error);
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

  // ---- history ----

  /** The elements of history messages (oldest first), with the runs they leave open. */
  #historyElements(thread: ThreadView, messages: readonly HistoryMessage[]): HTMLElement[] {
    const els: HTMLElement[] = [];
    const typed = (el: HTMLElement, type: string, runId: string) => {
      el.dataset.type = type;
      el.dataset.runId = runId;
      return el;
    };
    for (const message of messages) {
      if (message.role === 'user') {
        const bubble = typed(this.#userBubble(message.text, message.id), 'agent_started', message.run_id);
        const run = this.#run(thread, message.run_id);
        if (!run.ended) this.#addStop(run, bubble);
        els.push(bubble);
        continue;
      }
      const run = this.#run(thread, message.run_id);
      for (const text of message.thinking) els.push(typed(this.#thinkingItem(text), 'agent_thinking', message.run_id));
      for (const call of message.tool_calls) {
        const { item, slot } = this.#toolItem(call.call_id, call.tool, call.args);
        if (call.ok !== undefined) this.#fillResult(slot, call.ok, call.result);
        else run.tools.set(call.call_id, slot);
        els.push(typed(item, 'tool_executing', message.run_id));
      }
      const finished = message.status === 'completed' || message.status === 'cancelled';
      if (message.text || finished) {
        const answer = this.#answer(run);
        answer.text = message.text;
        renderMarkdown(answer.body, answer.text);
        if (finished) this.#finishAnswer(answer, message.status === 'cancelled');
        typed(answer.el, finished ? 'agent_completed' : 'agent_text_delta', message.run_id);
        els.push(answer.el);
      }
      if (message.status === 'error' && message.error) {
        els.push(typed(this.#errorItem(message.error.code, message.error.message), 'agent_error', message.run_id));
      }
      if (finished || message.status === 'error') this.#endRun(run, null);
    }
    return els;
  }

  // ---- live events ----

  #live(event: AgentEvent, epoch: string): void {
    if (this.#deleted.has(event.thread_id)) return;
    let thread = this.#threads.get(event.thread_id);
    if (!thread) {
      // A thread this tab has not seen (made elsewhere, or after the list was loaded).
      thread = this.#thread(event.thread_id, event.type === 'agent_started' ? titleOf(event.text) : event.thread_id, 'unloaded');
    }
    if (thread.state !== 'loading') this.#apply(thread, event, epoch);
    thread.live.push({ event, epoch });
    if (thread.live.length > LIVE_KEPT) thread.live.splice(0, thread.live.length - LIVE_KEPT);
  }

  /** Applies one live event to a thread's log, unless applied already or its history includes it (same epoch, seq <= last_seq). */
  #apply(thread: ThreadView, event: AgentEvent, epoch: string): void {
    const includes = (position: Mark | null) => position !== null && position.epoch === epoch && event.seq <= position.lastSeq;
    if (includes(thread.applied) || includes(thread.mark)) return;
    thread.applied = { epoch, lastSeq: event.seq };
    const mark = (el: HTMLElement) => {
      el.dataset.seq = String(event.seq);
      el.dataset.epoch = epoch;
      el.dataset.type = event.type;
      el.dataset.runId = event.run_id;
      return el;
    };
    switch (event.type) {
      case 'agent_started':
        return this.#started(thread, event, mark);
      case 'agent_thinking':
        this.#append(thread, mark(this.#thinkingItem(event.text)));
        return;
      case 'agent_thinking_delta':
        return this.#thinkingDelta(thread, event, epoch);
      case 'agent_text_delta':
        return this.#textDelta(thread, event, epoch);
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
    if (!run) thread.runs.set(runId, (run = { runId, tools: new Map(), answer: null, thinking: null, stop: null, ended: false }));
    return run;
  }

  #started(thread: ThreadView, event: EventOf<'agent_started'>, mark: (el: HTMLElement) => HTMLElement): void {
    const pending = thread.pending.get(event.message_id);
    thread.pending.delete(event.message_id);
    const bubble = pending ?? this.#userBubble(event.text, event.message_id);
    bubble.classList.remove('pending');
    mark(bubble);
    const run = this.#run(thread, event.run_id);
    if (!run.ended) this.#addStop(run, bubble);
    this.#setStatus(bubble, '');
    if (/^Thread \d+$/.test(thread.title) && thread.state === 'local') this.#retitle(thread, titleOf(event.text));
    if (thread.state === 'local') this.#persist();
    this.#threadList.prepend(thread.item); // most recently active first, as the server lists them
    // (Re)appended: a message sent while an earlier run was going moves below that run, so the
    // transcript stays in seq order.
    this.#append(thread, bubble);
  }

  #addStop(run: RunView, bubble: HTMLElement): void {
    const stop = h('button', { type: 'button', class: 'stop' }, 'Stop');
    stop.setAttribute('aria-label', 'Stop this run');
    stop.addEventListener('click', () => {
      const client = this.#client;
      if (!client) return;
      stop.disabled = true;
      client.cancel(run.runId).catch((error: unknown) => {
        stop.disabled = false;
        this.#systemLine(`Could not stop the run: ${error instanceof Error ? error.message : String(error)}`);
      });
    });
    run.stop?.remove();
    run.stop = stop;
    bubble.append(stop);
  }

  #thinkingItem(text: string): HTMLLIElement {
    return h('li', { class: 'msg thinking' }, h('span', { class: 'who' }, 'Thinking'), h('p', { class: 'text' }, text));
  }

  #thinkingDelta(thread: ThreadView, event: EventOf<'agent_thinking_delta'>, epoch: string): void {
    const run = this.#run(thread, event.run_id);
    if (!run.thinking) {
      // Streamed reasoning: collapsed and dim, one element per run, opened on demand.
      const body = h('p', { class: 'text' });
      const details = h('details', {}, h('summary', {}, 'Thinking…'), body);
      const el = h('li', { class: 'msg thinking streamed', 'data-type': 'agent_thinking_delta', 'data-delta-type': 'agent_thinking_delta' }, details);
      el.dataset.runId = run.runId;
      run.thinking = { el, body, text: '', deltaSeqs: [] };
      this.#append(thread, el);
    }
    const thinking = run.thinking;
    thinking.text += event.text;
    thinking.body.textContent = thinking.text;
    thinking.deltaSeqs.push(event.seq);
    thinking.el.dataset.deltaSeqs = thinking.deltaSeqs.join(' ');
    thinking.el.dataset.epoch = epoch;
  }

  /** The run's answer element, made (and appended) on first use. */
  #answer(run: RunView): AnswerView {
    if (run.answer) return run.answer;
    const who = h('span', { class: 'who' }, 'Agent');
    const body = h('div', { class: 'text markdown' });
    const el = h('li', { class: 'msg answer streaming', 'data-run-id': run.runId, 'data-delta-type': 'agent_text_delta' }, who, body);
    run.answer = { el, who, body, text: '', deltaSeqs: [] };
    return run.answer;
  }

  #textDelta(thread: ThreadView, event: EventOf<'agent_text_delta'>, epoch: string): void {
    const run = this.#run(thread, event.run_id);
    const fresh = !run.answer;
    const answer = this.#answer(run);
    answer.text += event.text;
    answer.deltaSeqs.push(event.seq);
    answer.el.dataset.deltaSeqs = answer.deltaSeqs.join(' ');
    answer.el.dataset.epoch = epoch;
    if (fresh) {
      answer.el.dataset.type = 'agent_text_delta';
      this.#append(thread, answer.el);
    } else this.#noteUnread(thread, false);
    this.#dirtyAnswers.add(answer);
    if (!this.#frameRequested) {
      this.#frameRequested = true;
      requestAnimationFrame(() => this.#renderDirty());
    }
  }

  /** Re-renders the markdown of every answer that grew since the last frame. */
  #renderDirty(): void {
    this.#frameRequested = false;
    for (const answer of this.#dirtyAnswers) {
      const thread = this.#threads.get(answer.el.closest<HTMLElement>('ol.transcript')?.dataset.threadId ?? '');
      const stick = thread ? this.#nearEnd(thread) : false;
      renderMarkdown(answer.body, answer.text);
      if (thread && stick) this.#scrollToEnd(thread);
    }
    this.#dirtyAnswers.clear();
  }

  #toolItem(callId: string, tool: string, args: unknown): { item: HTMLLIElement; slot: HTMLElement } {
    const slot = h('div', { class: 'result waiting' }, 'running…');
    const item = h(
      'li',
      { class: 'msg tool', 'data-call-id': callId },
      h('span', { class: 'who' }, 'Tool call ', h('code', { class: 'tool-name' }, tool)),
      h('pre', { class: 'args', 'aria-label': `Arguments of ${tool}` }, pretty(args)),
      slot,
    );
    return { item, slot };
  }

  #fillResult(slot: HTMLElement, ok: boolean, result: unknown): void {
    slot.className = `result ${ok ? 'ok' : 'failed'}`;
    slot.replaceChildren(h('span', { class: 'who' }, ok ? 'Result' : 'Tool failed'), h('pre', { class: 'value' }, pretty(result)));
  }

  #toolCall(thread: ThreadView, event: EventOf<'tool_executing'>, mark: (el: HTMLElement) => HTMLElement): void {
    const { item, slot } = this.#toolItem(event.call_id, event.tool, event.args);
    this.#run(thread, event.run_id).tools.set(event.call_id, slot);
    this.#append(thread, mark(item));
  }

  #toolResult(thread: ThreadView, event: EventOf<'tool_completed'>, mark: (el: HTMLElement) => HTMLElement): void {
    const slot = this.#run(thread, event.run_id).tools.get(event.call_id);
    if (slot) {
      const stick = this.#nearEnd(thread);
      this.#fillResult(slot, event.ok, event.result);
      mark(slot);
      if (stick) this.#scrollToEnd(thread);
      this.#noteUnread(thread);
    } else {
      // The call itself was not seen (history reset in between): show the result on its own.
      const item = h('li', { class: 'msg tool', 'data-call-id': event.call_id });
      this.#fillResult(item, event.ok, event.result);
      item.classList.add('msg', 'tool');
      this.#append(thread, mark(item));
    }
  }

  #errorItem(code: string, message: string): HTMLLIElement {
    return h('li', { class: 'msg error', role: 'note' }, h('span', { class: 'who' }, `Run failed: ${code}`), h('p', { class: 'text' }, message));
  }

  /** A finished answer: no longer streaming; a stopped one says that it is incomplete. */
  #finishAnswer(answer: AnswerView, cancelled: boolean): void {
    answer.el.classList.remove('streaming');
    if (!cancelled) return;
    answer.el.classList.add('cancelled');
    answer.who.textContent = 'Agent (cancelled)';
    answer.el.append(h('p', { class: 'stopped-note' }, answer.text ? 'Stopped: the answer above is incomplete.' : 'Stopped before the agent answered.'));
  }

  #terminal(thread: ThreadView, event: EventOf<'agent_completed'> | EventOf<'agent_error'>, mark: (el: HTMLElement) => HTMLElement): void {
    const run = this.#run(thread, event.run_id);
    if (event.type === 'agent_completed') {
      const fresh = !run.answer;
      const answer = this.#answer(run);
      // The completed text is the whole answer (the deltas' concatenation when it streamed).
      answer.text = event.text;
      this.#dirtyAnswers.delete(answer);
      renderMarkdown(answer.body, answer.text);
      this.#finishAnswer(answer, event.status === 'cancelled');
      mark(answer.el);
      // A streamed answer was counted as unread when its first words arrived.
      if (fresh) this.#append(thread, answer.el);
    } else {
      if (run.answer) {
        run.answer.el.classList.remove('streaming');
        run.answer.el.classList.add('interrupted');
      }
      this.#append(thread, mark(this.#errorItem(event.code, event.message)));
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

  #systemLine(text: string, thread = this.#active): void {
    if (thread) this.#append(thread, h('li', { class: 'msg system', role: 'note' }, text));
  }

  #append(thread: ThreadView, el: HTMLElement): void {
    const stick = this.#nearEnd(thread);
    thread.log.append(el);
    this.#noteUnread(thread);
    if (stick) this.#scrollToEnd(thread);
  }

  /** Counts an update of a thread that is not on screen (`count`: false for a delta, which only grows a line). */
  #noteUnread(thread: ThreadView, count = true): void {
    if (thread === this.#active || this.#drawingHistory || !count) return;
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
