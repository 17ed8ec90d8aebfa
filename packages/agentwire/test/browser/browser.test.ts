/// <reference lib="dom" />
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../../src/auth/index.js';
import { MemoryEngine } from '../../src/engine/index.js';
import { createChatPageHandler } from '../../src/index.js';
import { createGateway, type Gateway, type GatewayOptions } from '../../src/transport/index.js';
import { ChildTracker } from '../helpers/childProcess.js';
import { GatedAgent } from '../helpers/gatedAgent.js';
import { TEST_SECRET, startGateway, type TestGateway } from '../helpers/gateway.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { TcpProxy } from '../helpers/tcpProxy.js';
import { TestClient } from '../helpers/wsClient.js';

/**
 * The browser chat page (src/web) in a real Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core) against real gateways on 127.0.0.1. Every wait is on a DOM condition or a
 * socket event, with a timeout.
 */

const CHROMIUM = '/usr/bin/chromium';
const DOCS = fileURLToPath(new URL('../../../../docs/', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));
const WAIT_MS = 10_000;

let browser: Browser;
const contexts: BrowserContext[] = [];
const cleanups: Array<() => unknown> = [];
const children = new ChildTracker();

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await children.killAll();
});

afterAll(async () => {
  await browser?.close();
});

const token = async (userId: string) => (await signToken(TEST_SECRET, { sub: userId, ttlSec: 600 })).token;

interface OpenedPage {
  page: Page;
  /** Uncaught exceptions in the page (there must be none). */
  errors: string[];
  /** Requests of the page answered with a 4xx/5xx or not answered at all (favicon included). */
  badRequests: string[];
}

/** A fresh browser context (no storage) with a page at `url`; records the badge's states. */
async function open(url: string): Promise<OpenedPage> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  const badRequests: string[] = [];
  page.on('response', (response) => {
    if (response.status() >= 400) badRequests.push(`${response.status()} ${response.url()}`);
  });
  page.on('requestfailed', (request) => {
    // A reload aborts the requests of the page it leaves; that is not a failure of the page.
    if (request.failure()?.errorText !== 'net::ERR_ABORTED') badRequests.push(`failed ${request.url()}`);
  });
  await page.addInitScript(() => {
    // Every value the badge's data-state takes after the parser created it, in order.
    const w = window as unknown as { badgeStates: string[] };
    w.badgeStates = [];
    new MutationObserver((records) => {
      for (const record of records) {
        const el = record.target as HTMLElement;
        if (el.id !== 'connection') continue;
        const index = records.indexOf(record);
        const next = records.slice(index + 1).find((r) => r.target === el);
        const value = next ? (next.oldValue ?? '') : (el.dataset.state ?? '');
        if (w.badgeStates.at(-1) !== value) w.badgeStates.push(value);
      }
    }).observe(document, { subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ['data-state'] });
  });
  await page.goto(url);
  return { page, errors, badRequests };
}

async function badgeStates(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { badgeStates: string[] }).badgeStates);
}

async function waitReady(page: Page): Promise<void> {
  await page.waitForFunction(() => document.getElementById('connection')?.dataset.state === 'ready', null, { timeout: WAIT_MS });
}

interface Rendered {
  seq: number;
  epoch: string;
  type: string;
  thread: string;
}

/**
 * Every live durable event rendered, in document order: the elements with a `data-seq`, and the
 * deltas folded into an answer or thinking element (its `data-delta-seqs`, before its own event).
 */
async function rendered(page: Page): Promise<Rendered[]> {
  return page.$$eval('[data-seq], [data-delta-seqs]', (els) =>
    els.flatMap((el) => {
      const h = el as HTMLElement;
      const epoch = h.dataset.epoch ?? '';
      const thread = (h.closest('ol.transcript') as HTMLElement | null)?.dataset.threadId ?? '';
      const deltas = (h.dataset.deltaSeqs ?? '')
        .split(' ')
        .filter(Boolean)
        .map((seq) => ({ seq: Number(seq), epoch, type: h.dataset.deltaType ?? '', thread }));
      return h.dataset.seq ? [...deltas, { seq: Number(h.dataset.seq), epoch, type: h.dataset.type ?? '', thread }] : deltas;
    }),
  );
}

/** Waits until `count` live events are rendered (elements with a seq, and folded text deltas). */
async function waitForRendered(page: Page, count: number, timeout = WAIT_MS): Promise<void> {
  await page.waitForFunction(
    (n) =>
      document.querySelectorAll('[data-seq]').length +
        Array.from(document.querySelectorAll<HTMLElement>('[data-delta-seqs]')).reduce((sum, el) => sum + el.dataset.deltaSeqs!.split(' ').length, 0) >=
      n,
    count,
    { timeout },
  );
}

/** Waits until `count` runs have rendered their terminal event. */
async function waitForTerminals(page: Page, count: number): Promise<void> {
  await page.waitForFunction((n) => document.querySelectorAll('[data-type="agent_completed"], [data-type="agent_error"]').length >= n, count, {
    timeout: WAIT_MS,
  });
}

/** Types `text` into the message box and presses Enter (the keyboard path). */
async function say(page: Page, text: string): Promise<void> {
  const box = page.getByLabel('Message', { exact: true });
  await box.focus();
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** The seqs are exactly from..to, each once; within each thread in ascending document order. */
function expectExactly(list: Rendered[], from: number, to: number): void {
  const seqs = list.map((r) => r.seq);
  expect(new Set(seqs).size).toBe(seqs.length);
  expect([...seqs].sort((a, b) => a - b)).toEqual(range(from, to));
  for (const thread of new Set(list.map((r) => r.thread))) {
    const own = list.filter((r) => r.thread === thread).map((r) => r.seq);
    expect(own).toEqual([...own].sort((a, b) => a - b));
  }
}

/** A gateway on a given port (0: any) with HS256 test auth and the chat page on. */
async function gatewayOn(port: number, options: Partial<GatewayOptions> = {}): Promise<{ gateway: Gateway; port: number }> {
  const gateway = createGateway({ auth: { secret: TEST_SECRET }, demoStepMs: 1, chatPage: true, ...options });
  cleanups.push(() => gateway.shutdown());
  const listening = await gateway.listen(port, '127.0.0.1');
  return { gateway, port: listening.port };
}

async function started(options: Partial<GatewayOptions>): Promise<TestGateway> {
  const env = await startGateway(options);
  cleanups.push(() => env.stop());
  return env;
}

/**
 * A fresh tab opened from a link that carries a token: the page asks before it signs in as the
 * link's user (login CSRF), and the user continues.
 */
async function openLink(url: string): Promise<OpenedPage> {
  const opened = await open(url);
  await opened.page.getByRole('button', { name: /^Continue as / }).click();
  return opened;
}

/**
 * A page at `url` signed in and ready, and the banner that asks before a link switches its user.
 * `opener` is `open` for a page the server signs in (its token option), without the link's question.
 */
async function openSignedIn(url: string, opener: (url: string) => Promise<OpenedPage> = openLink): Promise<OpenedPage & { banner: Locator }> {
  const opened = await opener(url);
  await waitReady(opened.page);
  return { ...opened, banner: opened.page.getByRole('alert').filter({ hasText: 'The link you opened' }) };
}

describe('browser chat page', () => {
  it('renders every event kind of a run, by keyboard, with landmarks, labels and live regions; threads keep their transcripts', async () => {
    const env = await started({ chatPage: { token: await token('alice') } });
    const { page, errors, badRequests } = await open(`http://127.0.0.1:${env.port}/`);
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('alice');
    // The icon is inline: a browser that shows icons never asks the server for /favicon.ico
    // (headless Chromium asks for none, so the recorded requests alone would not show a 404).
    expect(await page.evaluate(() => document.querySelector<HTMLLinkElement>('link[rel="icon"]')?.href.slice(0, 19))).toBe('data:image/svg+xml,');

    // Landmarks, labels and live regions.
    await expect(page.getByRole('banner').count()).resolves.toBe(1);
    await expect(page.getByRole('navigation', { name: 'Threads' }).count()).resolves.toBe(1);
    await expect(page.getByRole('main').count()).resolves.toBe(1);
    const badge = page.locator('#connection');
    expect(await badge.getAttribute('role')).toBe('status');
    expect(await badge.getAttribute('aria-live')).toBe('polite');
    expect(await badge.textContent()).toBe('Connected');
    expect(await page.getByLabel('Message', { exact: true }).evaluate((el) => el.tagName)).toBe('TEXTAREA');
    const log = page.locator('ol.transcript:not([hidden])');
    expect(await log.getAttribute('aria-live')).toBe('polite');
    expect(await log.getAttribute('aria-label')).toBe('Messages in Thread 1');

    // Keyboard: Tab reaches the skip link first, Enter on it lands in the message box.
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Skip to the message box');
    await page.keyboard.press('Enter');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('message');
    await page.keyboard.type('what is 2+3*4?');
    await page.keyboard.press('Enter');
    await waitForTerminals(page, 1);
    expect(await page.getByLabel('Message', { exact: true }).inputValue()).toBe('');

    const first = await rendered(page);
    const firstTypes = demoRunTypes('what is 2+3*4?');
    expect(first.map((r) => r.type)).toEqual(firstTypes);
    expect(first.map((r) => r.seq)).toEqual(range(1, firstTypes.length));
    // The thread is named after its first message, as the server names it.
    expect(await log.getAttribute('aria-label')).toBe('Messages in what is 2+3*4?');
    expect(await log.locator('[data-type="agent_started"] .text').textContent()).toBe('what is 2+3*4?');
    expect(await log.locator('[data-type="agent_thinking"] .text').first().textContent()).toBe('Reading your message (3 words).');
    // The tool call shows its tool and arguments; its result is paired into the same item by call_id.
    const call = log.locator('li[data-type="tool_executing"]');
    expect(await call.locator('.tool-name').textContent()).toBe('calculator');
    expect(JSON.parse((await call.locator('pre.args').textContent())!)).toEqual({ expression: '2+3*4' });
    expect(await call.locator('[data-type="tool_completed"] pre.value').textContent()).toBe('14');
    expect(await call.getAttribute('data-call-id')).toMatch(/:1$/);
    expect(await log.locator('[data-type="agent_completed"] .text').textContent()).toBe('2+3*4 = 14');
    expect(await log.locator('button.stop').count()).toBe(0);

    // A second thread by keyboard; a failing run there.
    await page.getByRole('button', { name: 'New thread' }).focus();
    await page.keyboard.press('Enter');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('message');
    expect(await page.locator('#thread-heading').textContent()).toBe('Thread 2');
    await say(page, '/fail please count these words');
    await waitForTerminals(page, 2);
    const thread2 = page.locator('ol.transcript:not([hidden])');
    expect(await thread2.locator('[data-type]').evaluateAll((els) => els.map((el) => (el as HTMLElement).dataset.type))).toEqual([
      'agent_started',
      'agent_thinking',
      'tool_executing',
      'tool_completed',
      'agent_error',
    ]);
    expect(await thread2.locator('[data-type="tool_executing"] .tool-name').textContent()).toBe('word_count');
    expect(await thread2.locator('[data-type="agent_error"] .who').textContent()).toBe('Run failed: agent_failed');

    // Back to thread 1: its transcript is still there, unchanged.
    await page.getByRole('button', { name: /^what is 2\+3\*4\?/ }).click();
    expect(await page.locator('#thread-heading').textContent()).toBe('what is 2+3*4?');
    expect(await page.getByRole('button', { name: /^what is 2\+3\*4\?/ }).getAttribute('aria-current')).toBe('true');
    const all = await rendered(page);
    expectExactly(all, 1, firstTypes.length + 5);
    expect(new Set(all.map((r) => r.thread)).size).toBe(2);
    await say(page, 'and what is (1+2)*3?');
    await waitForTerminals(page, 3);
    expect(await page.locator('ol.transcript:not([hidden]) [data-type="agent_completed"] .text').last().textContent()).toBe('(1+2)*3 = 9');
    expectExactly(await rendered(page), 1, firstTypes.length + 5 + demoRunTypes('and what is (1+2)*3?').length);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}chat-page.png` });
    expect(errors).toEqual([]);
    expect(badRequests).toEqual([]);
  });

  it('resumes after the socket is cut mid-run: every line once, none missing', async () => {
    const env = await started({ chatPage: true });
    const proxy = await TcpProxy.start(env.port);
    cleanups.push(() => proxy.close());
    const { page, errors } = await openLink(`http://127.0.0.1:${proxy.port}/?token=${await token('bob')}`);
    await waitReady(page);

    await say(page, '/slow 150 what is 6*7?');
    await page.waitForSelector('[data-type="agent_thinking"]');
    // Hold what the server sends from now on, wait until an event is held, then cut: that
    // event never reaches the page on this socket and must come back by replay.
    proxy.stall('toClient');
    await proxy.waitFor(() => proxy.open.some((c) => c.heldBytesToClient > 0), WAIT_MS, 'an event held by the proxy');
    proxy.reset();
    await waitForTerminals(page, 1);

    const list = await rendered(page);
    const types = demoRunTypes('/slow 150 what is 6*7?');
    expect(list.map((r) => r.type)).toEqual(types);
    expectExactly(list, 1, types.length);
    expect(await page.locator('[data-type="agent_completed"] .text').textContent()).toBe('6*7 = 42');
    expect(await badgeStates(page)).toEqual(['idle', 'connecting', 'ready', 'reconnecting', 'ready']);
    expect(await page.locator('#history-note').isHidden()).toBe(true);
    expect(errors).toEqual([]);
  });

  it('survives a gateway restart on the same port with the same engine: the run cut by the restart and a run made meanwhile, each line once', async () => {
    const engine = new MemoryEngine();
    cleanups.push(() => engine.close());
    const first = await gatewayOn(0, { engine, drainTimeoutMs: 50 });
    const { page, errors } = await openLink(`http://127.0.0.1:${first.port}/?token=${await token('carol')}`);
    await waitReady(page);

    await say(page, '/slow 400 what is 6*7?');
    await page.waitForSelector('[data-type="agent_thinking"]');
    await first.gateway.shutdown(); // the drain timeout ends the run with agent_error "shutdown"

    // While the page is away, another gateway on the same engine runs a message for carol.
    const side = await gatewayOn(0, { engine });
    const client = new TestClient(`ws://127.0.0.1:${side.port}/ws`, { token: await token('carol') });
    cleanups.push(() => client.close());
    await client.ready();
    const ack = await client.message('side-1', 'side-thread', 'what is 1+1?');
    await client.runEvents(ack.run_id);
    client.close();
    await side.gateway.shutdown();

    await gatewayOn(first.port, { engine });
    const { lastSeq } = await engine.head('carol');
    await waitForRendered(page, lastSeq, 15_000);
    await waitForTerminals(page, 2);

    const list = await rendered(page);
    expectExactly(list, 1, lastSeq);
    const own = list.filter((r) => r.thread !== 'side-thread');
    expect(own.at(-1)!.type).toBe('agent_error');
    expect(await page.locator('[data-type="agent_error"] .who').textContent()).toBe('Run failed: shutdown');
    const other = list.filter((r) => r.thread === 'side-thread');
    expect(other.map((r) => r.type)).toEqual(demoRunTypes('what is 1+1?'));
    // The thread made elsewhere appears in the list under its first message, with its unread
    // count (a streamed answer counts once).
    expect(await page.locator('#thread-list button[data-thread-id="side-thread"]').textContent()).toBe('what is 1+1? (6 new)');
    expect(await page.locator('#history-note').isHidden()).toBe(true);
    expect(await badgeStates(page)).toEqual(['idle', 'connecting', 'ready', 'reconnecting', 'ready']);
    expect(errors).toEqual([]);
  });

  it('shows the history-reloaded note after a restart with a new engine, and keeps old and new lines apart', async () => {
    const first = await gatewayOn(0);
    const { page, errors } = await openLink(`http://127.0.0.1:${first.port}/?token=${await token('dave')}`);
    await waitReady(page);
    await say(page, 'what is 2*21?');
    await waitForTerminals(page, 1);
    const before = await rendered(page);
    expectExactly(before, 1, demoRunTypes('what is 2*21?').length);
    expect(await page.locator('#history-note').isHidden()).toBe(true);

    await first.gateway.shutdown();
    await gatewayOn(first.port); // a new in-memory engine: the log, and its epoch, are gone
    await page.waitForSelector('#history-note:not([hidden])', { timeout: 15_000 });
    await waitReady(page);
    const note = page.getByRole('alert').filter({ hasText: 'History reloaded' });
    expect(await note.count()).toBe(1);
    expect(await note.textContent()).toContain('Earlier messages may be incomplete');
    expect(await page.locator('li.divider').count()).toBe(1);

    await say(page, 'what is 3*3?');
    await waitForTerminals(page, 2);
    const after = await rendered(page);
    const epochs = [...new Set(after.map((r) => r.epoch))];
    expect(epochs).toHaveLength(2);
    expect(after.filter((r) => r.epoch === epochs[0])).toEqual(before);
    expectExactly(
      after.filter((r) => r.epoch === epochs[1]),
      1,
      demoRunTypes('what is 3*3?').length,
    );
    expect(await page.locator('[data-type="agent_completed"] .text').last().textContent()).toBe('3*3 = 9');

    await page.getByRole('button', { name: 'Dismiss' }).click();
    expect(await page.locator('#history-note').isHidden()).toBe(true);
    expect(errors).toEqual([]);
  });

  it('a reload rebuilds the threads and the open thread from history; another thread loads when opened', async () => {
    const env = await started({ chatPage: true });
    const { page, errors, badRequests } = await openLink(`http://127.0.0.1:${env.port}/?token=${await token('erin')}`);
    await waitReady(page);
    await say(page, 'what is 5+5?');
    await waitForTerminals(page, 1);
    await page.getByRole('button', { name: 'New thread' }).click();
    await say(page, 'two words');
    await waitForTerminals(page, 2);
    expectExactly(await rendered(page), 1, demoRunTypes('what is 5+5?').length + demoRunTypes('two words').length);

    await page.reload();
    await waitReady(page);
    await waitForTerminals(page, 1);
    // Most recently updated first, named after their first messages; the open thread stays open.
    expect(await page.locator('#thread-list button').allTextContents()).toEqual(['two words', 'what is 5+5?']);
    expect(await page.locator('#thread-heading').textContent()).toBe('two words');
    const open2 = page.locator('ol.transcript:not([hidden])');
    expect(await open2.locator('[data-type="agent_started"] .text').allTextContents()).toEqual(['two words']);
    expect(await open2.locator('[data-type="agent_completed"] .text').allTextContents()).toEqual(['Your message has 2 words.']);
    expect(await open2.locator('[data-type="tool_executing"] .tool-name').allTextContents()).toEqual(['word_count']);
    // Nothing was replayed over the history: no live event is drawn.
    expect(await rendered(page)).toEqual([]);

    await page.getByRole('button', { name: 'what is 5+5?' }).click();
    await waitForTerminals(page, 2);
    const open1 = page.locator('ol.transcript:not([hidden])');
    expect(await open1.locator('[data-type="agent_completed"] .text').allTextContents()).toEqual(['5+5 = 10']);
    expect(await page.locator('#history-note').isHidden()).toBe(true);
    expect(errors).toEqual([]);
    expect(badRequests).toEqual([]);
  });

  it('takes ?token= out of the address bar (other parameters and the hash stay) and keeps it for the tab: a reload signs in as the same user', async () => {
    const env = await started({ chatPage: true });
    const { page, errors, badRequests } = await openLink(`http://127.0.0.1:${env.port}/?lang=en%20GB&token=${await token('hana')}&x=1#top`);
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('hana');
    const address = () => page.evaluate(() => ({ search: location.search, hash: location.hash }));
    expect(await address()).toEqual({ search: '?lang=en%20GB&x=1', hash: '#top' });
    await say(page, 'what is 6*7?');
    await waitForTerminals(page, 1);
    expect(await page.locator('[data-type="agent_completed"] .text').textContent()).toBe('6*7 = 42');

    await page.reload();
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('hana');
    expect(await address()).toEqual({ search: '?lang=en%20GB&x=1', hash: '#top' });
    await waitForTerminals(page, 1); // hana's thread, from her history
    expect(await page.locator('[data-type="agent_completed"] .text').textContent()).toBe('6*7 = 42');
    expect(await page.locator('#switch-user').isHidden()).toBe(true);
    expect(errors).toEqual([]);
    expect(badRequests).toEqual([]);
  });

  it("a link with another user's token does not switch the tab silently: a banner names both users, the tab stays until Switch", async () => {
    const env = await started({ chatPage: true });
    const base = `http://127.0.0.1:${env.port}/`;
    const { page, errors, banner } = await openSignedIn(`${base}?token=${await token('judy')}`);
    const user = () => page.locator('#user').textContent();

    // The same user (a newer token): taken as it is, no question.
    await page.goto(`${base}?token=${(await signToken(TEST_SECRET, { sub: 'judy', ttlSec: 900 })).token}`);
    await waitReady(page);
    expect(await user()).toBe('judy');
    expect(await page.locator('#switch-user').isHidden()).toBe(true);

    // Another user: the tab stays judy's, connected, until the user chooses; Stay drops the link's token.
    await page.goto(`${base}?token=${await token('mallory')}`);
    await waitReady(page);
    await banner.waitFor({ state: 'visible' });
    expect(await banner.textContent()).toContain('signs in as mallory, but this tab is signed in as judy');
    expect(await user()).toBe('judy');
    expect(await page.evaluate(() => location.search)).toBe('');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Stay as judy');
    await page.getByRole('button', { name: 'Stay as judy' }).click();
    expect(await banner.isHidden()).toBe(true);
    await page.reload();
    await waitReady(page);
    expect(await user()).toBe('judy');
    expect(await page.locator('#switch-user').isHidden()).toBe(true);

    // Switch signs in as the link's user, who is then this tab's user, a reload included.
    await page.goto(`${base}?token=${await token('mallory')}`);
    await page.getByRole('button', { name: 'Switch to mallory' }).click();
    expect(await banner.isHidden()).toBe(true);
    await page.waitForFunction(() => document.getElementById('user')?.textContent === 'mallory', null, { timeout: WAIT_MS });
    await waitReady(page);
    await page.reload();
    await waitReady(page);
    expect(await user()).toBe('mallory');
    expect(errors).toEqual([]);
  });

  it("the banner shows a user id's invisible and reordering characters, so a link's user cannot pass for the tab's, and any other as it is", async () => {
    const env = await started({ chatPage: true });
    const base = `http://127.0.0.1:${env.port}/`;
    const { page, errors, banner } = await openSignedIn(`${base}?token=${await token('judy')}`);
    // U+202E (right-to-left override) "yduj" U+202C is drawn as "judy"; U+200B is drawn as nothing.
    for (const [sub, shown] of [
      ['\u202Eyduj\u202C', '\\u{202E}yduj\\u{202C}'],
      ['judy\u200B', 'judy\\u{200B}'],
      ['judy ', 'judy\\u{20}'],
      // Read as UTF-8, not one character per byte (it was `josÃ©`).
      ['josé', 'josé'],
    ]) {
      await page.goto(`${base}?token=${await token(sub!)}`);
      await waitReady(page);
      await banner.waitFor({ state: 'visible' });
      expect(await banner.textContent()).toContain(`signs in as ${shown}, but this tab is signed in as judy.`);
      expect(await page.getByRole('button', { name: `Switch to ${shown}` }).count()).toBe(1);
    }
    // The header names the signed-in user the same way.
    await page.goto(`${base}?token=${await token('\u202Eyduj\u202C')}`);
    await page.getByRole('button', { name: 'Switch to \\u{202E}yduj\\u{202C}' }).click();
    await page.waitForFunction(() => document.getElementById('user')?.textContent === '\\u{202E}yduj\\u{202C}', null, { timeout: WAIT_MS });
    expect(errors).toEqual([]);
  });

  it("a link's token the server refuses does not take the place of the tab's, even when it names the tab's user", async () => {
    const env = await started({ chatPage: true });
    const base = `http://127.0.0.1:${env.port}/`;
    const judy = await token('judy');
    const { page } = await openLink(`${base}?token=${judy}`);
    await waitReady(page);
    // judy's claims with a made-up signature: the page cannot tell it from judy's own token.
    const [header, claims] = judy.split('.');
    await page.goto(`${base}?token=${header}.${claims}.${'A'.repeat(43)}`);
    await page.locator('#token-error').waitFor({ state: 'visible' });
    expect(await page.locator('#token-error').textContent()).toContain('The server refused the token');
    await page.reload();
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('judy');
    expect(await page.locator('#token-form').isHidden()).toBe(true);
  });

  it("a fresh tab opened from a link asks before it signs in as the link's user; declining asks for a token and never connects as that user", async () => {
    const env = await started({ chatPage: true });
    const { page, errors } = await open(`http://127.0.0.1:${env.port}/?token=${await token('mallory')}`);
    const banner = page.getByRole('alert').filter({ hasText: 'The link you opened' });
    await banner.waitFor({ state: 'visible' });
    expect(await banner.textContent()).toContain('The link you opened signs in as mallory. Continue only if you meant to');
    expect(await page.evaluate(() => location.search)).toBe('');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Use another token');
    expect(await page.locator('#user').textContent()).toBe('…');

    await page.getByRole('button', { name: 'Use another token' }).click();
    expect(await banner.isHidden()).toBe(true);
    await page.locator('#token-form').waitFor({ state: 'visible' });
    const metrics = await (await fetch(`http://127.0.0.1:${env.port}/metrics`)).text();
    expect(metrics).not.toMatch(/^agentwire_state_transitions_total\{/m);
    // A reload does not bring the link's token back: it left the address bar and was never kept.
    await page.reload();
    await page.locator('#token-form').waitFor({ state: 'visible' });
    expect(await banner.isHidden()).toBe(true);

    await page.locator('#token').fill(await token('alice'));
    await page.locator('#token').press('Enter');
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('alice');
    expect(errors).toEqual([]);
  });

  it("a link with another user's token asks also over a token the server put into the page", async () => {
    const env = await started({ chatPage: { token: await token('ivan') } });
    const { page, errors, banner } = await openSignedIn(`http://127.0.0.1:${env.port}/?token=${await token('mallory')}`, open);
    await banner.waitFor({ state: 'visible' });
    expect(await banner.textContent()).toContain('signs in as mallory, but this tab is signed in as ivan');
    expect(await page.locator('#user').textContent()).toBe('ivan');
    await page.getByRole('button', { name: 'Switch to mallory' }).click();
    await page.waitForFunction(() => document.getElementById('user')?.textContent === 'mallory', null, { timeout: WAIT_MS });
    // The tab keeps the token it was given over the server's.
    await page.reload();
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('mallory');
    expect(errors).toEqual([]);
  });

  it('without a token asks for one; a refused token brings the form back with the reason', async () => {
    const env = await started({ chatPage: true });
    const { page, errors } = await open(`http://127.0.0.1:${env.port}/`);
    const tokenBox = page.getByLabel('Token (a JWT for your user)');
    await tokenBox.waitFor({ state: 'visible' });
    expect(await page.locator('#connection').textContent()).toBe('Not connected');
    expect(env.gateway.connectionCount).toBe(0);

    await tokenBox.fill('not-a-jwt');
    await tokenBox.press('Enter');
    await page.waitForFunction(() => document.getElementById('connection')?.dataset.state === 'closed', null, { timeout: WAIT_MS });
    expect(await page.locator('#connection').textContent()).toBe('Disconnected (4401 token_invalid)');
    expect(await page.locator('#token-error').textContent()).toBe('The server refused the token (token_invalid). Paste a valid one.');
    expect(await tokenBox.isVisible()).toBe(true);

    await tokenBox.fill(await token('frank'));
    await page.getByRole('button', { name: 'Connect' }).click();
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('frank');
    expect(await tokenBox.isVisible()).toBe(false);
    await say(page, 'hello there');
    await waitForTerminals(page, 1);
    expect(await page.locator('[data-type="agent_completed"] .text').textContent()).toBe('Your message has 2 words.');

    // A run that never ends on its own: its Stop button cancels it.
    await say(page, '/hang wait for me');
    const stop = page.getByRole('button', { name: 'Stop this run' });
    await stop.waitFor({ state: 'visible' });
    await page.waitForSelector('[data-type="agent_thinking"] >> nth=1');
    await stop.click();
    await waitForTerminals(page, 2);
    const cancelled = page.locator('[data-type="agent_completed"]').last();
    expect(await cancelled.locator('.who').textContent()).toBe('Agent (cancelled)');
    expect(await stop.count()).toBe(0);
    expectExactly(await rendered(page), 1, (await env.gateway.engine.head('frank')).lastSeq);
    expect(errors).toEqual([]);
  });

  it('is off by default; createChatPageHandler mounts it on an application server at a path', async () => {
    const gateway = createGateway({ auth: { secret: TEST_SECRET }, demoStepMs: 1 });
    cleanups.push(() => gateway.shutdown());
    const chat = createChatPageHandler({ path: '/chat', wsUrl: '/ws', title: 'Support chat' });
    const server: Server = createServer((req, res) => {
      if (gateway.handleRequest(req, res) || chat(req, res)) return;
      res.writeHead(404).end('app 404');
    });
    gateway.attach(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/chat`, { method: 'POST' })).status).toBe(404);
    const html = await fetch(`${base}/chat`);
    expect(html.status).toBe(200);
    expect(html.headers.get('cache-control')).toBe('no-store');
    expect(await html.text()).toContain('<script type="module" src="/chat/assets/chat.js">');
    const script = await fetch(`${base}/chat/assets/chat.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    const etag = script.headers.get('etag')!;
    expect((await script.text()).length).toBeGreaterThan(1000);
    const head = await fetch(`${base}/chat/assets/chat.js`, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(script.headers.get('content-length'));
    expect(await head.text()).toBe('');
    expect((await fetch(`${base}/chat/assets/chat.js`, { headers: { 'If-None-Match': etag } })).status).toBe(304);
    const plain = await startGateway();
    cleanups.push(() => plain.stop());
    expect((await fetch(`http://127.0.0.1:${plain.port}/`)).status).toBe(404);

    const { page, errors } = await openLink(`${base}/chat?token=${await token('gina')}`);
    await waitReady(page);
    expect(await page.title()).toBe('Support chat');
    await say(page, 'what is 8/2?');
    await waitForTerminals(page, 1);
    expect(await page.locator('[data-type="agent_completed"] .text').textContent()).toBe('8/2 = 4');
    expect(errors).toEqual([]);
  });

  it('`agentwire serve` in dev mode prints the page URL and the page signs in as demo', async () => {
    const child = children.spawn(['serve'], { PORT: '0', AGENTWIRE_DEMO_STEP_MS: '1' });
    const [, pageUrl] = await child.waitForStdout(/^Open (http:\/\/127\.0\.0\.1:\d+\/) in a browser to chat as "demo"/m, 20_000);
    const { page, errors } = await open(pageUrl!);
    await waitReady(page);
    expect(await page.locator('#user').textContent()).toBe('demo');
    await say(page, 'what is 2+3*4?');
    await waitForTerminals(page, 1);
    expect(await page.locator('[data-type="agent_completed"] .text').textContent()).toBe('2+3*4 = 14');
    expect(errors).toEqual([]);
  });

  describe('streaming, history, titles, Stop', () => {
    /** A gateway with a GatedAgent (a test decides each step of a `/gated` run) and the page at user's URL. */
    async function gatedPage(user: string): Promise<{ env: TestGateway; agent: GatedAgent; url: string; opened: OpenedPage }> {
      const agent = new GatedAgent();
      const env = await started({ chatPage: true, agent });
      const url = `http://127.0.0.1:${env.port}/?token=${await token(user)}`;
      const opened = await openLink(url);
      await waitReady(opened.page);
      return { env, agent, url, opened };
    }

    const openLog = (page: Page) => page.locator('ol.transcript:not([hidden])');
    const openThreadId = async (page: Page) => (await openLog(page).getAttribute('data-thread-id'))!;
    const answerOf = (page: Page) => openLog(page).locator('li.msg.answer').last();

    /** GET a history route as `user` from the test (not the page). */
    async function history(env: TestGateway, user: string, path: string): Promise<{ status: number; body: any }> {
      const response = await fetch(`http://127.0.0.1:${env.port}${path}`, { headers: { Authorization: `Bearer ${await token(user)}` } });
      return { status: response.status, body: response.status === 204 ? null : await response.json() };
    }

    it('streams the answer as markdown: it grows delta by delta before agent_completed; thinking deltas stream collapsed', async () => {
      const { agent, opened } = await gatedPage('hana');
      const { page, errors, badRequests } = opened;
      await say(page, '/gated explain');
      await agent.started(1);
      const threadId = await openThreadId(page);

      agent.push(threadId, { type: 'thinking_delta', text: 'Weighing ' });
      agent.push(threadId, { type: 'thinking_delta', text: 'the options.' });
      const thinking = openLog(page).locator('li.msg.thinking.streamed');
      await page.waitForFunction(() => document.querySelector('li.msg.thinking.streamed .text')?.textContent === 'Weighing the options.');
      expect(await thinking.locator('details').evaluate((el) => (el as HTMLDetailsElement).open)).toBe(false);

      const answer = answerOf(page);
      const steps: Array<{ delta: string; shown: string; check: (p: Page) => Promise<void> }> = [
        { delta: '**Bold** start', shown: 'Bold start', check: async () => expect(await answer.locator('strong').textContent()).toBe('Bold') },
        { delta: ' and a list:\n\n- one', shown: 'Bold start and a list:one', check: async () => expect(await answer.locator('li').count()).toBe(1) },
        { delta: '\n- `two`', shown: 'Bold start and a list:onetwo', check: async () => expect(await answer.locator('li code').textContent()).toBe('two') },
      ];
      for (const step of steps) {
        agent.push(threadId, { type: 'text_delta', text: step.delta });
        await page.waitForFunction(
          (text) => document.querySelector('ol.transcript:not([hidden]) li.msg.answer .markdown')?.textContent?.replace(/\n/g, '') === text,
          step.shown,
        );
        await step.check(page);
        // Still streaming: no terminal event has been drawn yet.
        expect(await page.locator('[data-type="agent_completed"]').count()).toBe(0);
        expect(await answer.getAttribute('class')).toContain('streaming');
      }
      agent.finish(threadId, 'ignored: the streamed text is the answer');
      await waitForTerminals(page, 1);
      expect(await answer.getAttribute('data-type')).toBe('agent_completed');
      expect(await answer.getAttribute('class')).not.toContain('streaming');
      expect(await answer.locator('.markdown').innerHTML()).toBe(
        '<p><strong>Bold</strong> start and a list:</p>\n<ul>\n<li>one</li>\n<li><code>two</code></li>\n</ul>',
      );
      const list = await rendered(page);
      expectExactly(list, 1, list.length);
      expect(list.filter((r) => r.type === 'agent_text_delta')).toHaveLength(3);
      expect(errors).toEqual([]);
      expect(badRequests).toEqual([]);
    });

    it('a reload mid-answer shows the answer so far from history and streams on: every word exactly once', async () => {
      const { env, agent, opened } = await gatedPage('ivan');
      const { page } = opened;
      await say(page, '/gated count slowly');
      await agent.started(1);
      const threadId = await openThreadId(page);
      const words = ['one ', 'two ', 'three ', 'four ', 'five ', 'six'];
      for (const word of words.slice(0, 3)) agent.push(threadId, { type: 'text_delta', text: word });
      await page.waitForFunction(() => document.querySelector('li.msg.answer .markdown')?.textContent === 'one two three');

      await page.reload();
      await waitReady(page);
      // The history's answer so far, then the live connection from the history's position.
      await page.waitForFunction(() => document.querySelector('ol.transcript:not([hidden]) li.msg.answer .markdown')?.textContent === 'one two three');
      expect(await page.locator('#thread-heading').textContent()).toBe('/gated count slowly');
      expect(await page.getByRole('button', { name: 'Stop this run' }).count()).toBe(1);
      for (const word of words.slice(3)) agent.push(threadId, { type: 'text_delta', text: word });
      await page.waitForFunction(() => document.querySelector('li.msg.answer .markdown')?.textContent === 'one two three four five six');
      agent.finish(threadId, '');
      await waitForTerminals(page, 1);

      expect(await openLog(page).locator('li.msg.answer').count()).toBe(1);
      expect(await answerOf(page).locator('.markdown').textContent()).toBe('one two three four five six');
      // Only what came after the history was applied live: the later deltas (maybe merged) and the end.
      const live = await rendered(page);
      expect(live.at(-1)!.type).toBe('agent_completed');
      expect(new Set(live.slice(0, -1).map((r) => r.type))).toEqual(new Set(['agent_text_delta']));
      const { lastSeq } = await env.gateway.engine.head('ivan');
      expect(live.map((r) => r.seq)).toEqual(range(lastSeq - live.length + 1, lastSeq));
      expect(await page.getByRole('button', { name: 'Stop this run' }).count()).toBe(0);
      expect(opened.errors).toEqual([]);
      expect(opened.badRequests).toEqual([]);
    });

    it('a second tab lists the threads, loads a thread when opened and then follows it live', async () => {
      const { agent, url, opened } = await gatedPage('jade');
      const { page } = opened;
      await say(page, 'first thread');
      await waitForTerminals(page, 1);
      await page.getByRole('button', { name: 'New thread' }).click();
      await say(page, 'second thread');
      await waitForTerminals(page, 2);
      await agent.started(2);

      const second = await openLink(url);
      await waitReady(second.page);
      expect(await second.page.locator('#thread-list button').allTextContents()).toEqual(['Thread 1', 'second thread', 'first thread']);
      expect(await second.page.locator('#thread-heading').textContent()).toBe('Thread 1');
      await second.page.getByRole('button', { name: 'first thread' }).click();
      await waitForTerminals(second.page, 1);
      const log2 = openLog(second.page);
      expect(await log2.locator('[data-type="agent_started"] .text').allTextContents()).toEqual(['first thread']);
      expect(await log2.locator('[data-type="agent_completed"] .text').allTextContents()).toEqual(['echo: first thread']);

      // The first tab goes on in that thread; the second tab sees it live, once.
      await page.getByRole('button', { name: 'first thread' }).click();
      await say(page, 'more please');
      await waitForTerminals(second.page, 2);
      expect(await log2.locator('[data-type="agent_started"] .text').allTextContents()).toEqual(['first thread', 'more please']);
      expect(await log2.locator('[data-type="agent_completed"] .text').allTextContents()).toEqual(['echo: first thread', 'echo: more please']);
      expect(await log2.locator('[data-type="agent_thinking"]').count()).toBe(2);
      expect(second.errors).toEqual([]);
      expect(second.badRequests).toEqual([]);
    });

    it('renames and deletes threads through the history routes (delete asks first)', async () => {
      const { env, opened } = await gatedPage('kim');
      const { page } = opened;
      await say(page, 'keep me');
      await waitForTerminals(page, 1);
      const threadId = await openThreadId(page);

      page.once('dialog', (dialog) => void dialog.accept('Renamed thread'));
      await page.getByRole('button', { name: 'Rename' }).click();
      await page.waitForFunction(() => document.getElementById('thread-heading')?.textContent === 'Renamed thread');
      expect(await page.locator(`#thread-list button[data-thread-id="${threadId}"]`).textContent()).toBe('Renamed thread');
      expect((await history(env, 'kim', '/v1/threads')).body.threads.map((t: { title: string }) => t.title)).toEqual(['Renamed thread']);

      page.once('dialog', (dialog) => void dialog.dismiss());
      await page.getByRole('button', { name: 'Delete' }).click();
      expect(await page.locator(`#thread-list button[data-thread-id="${threadId}"]`).count()).toBe(1);
      expect((await history(env, 'kim', '/v1/threads')).body.threads).toHaveLength(1);

      page.once('dialog', (dialog) => void dialog.accept());
      await page.getByRole('button', { name: 'Delete' }).click();
      await page.locator(`#thread-list button[data-thread-id="${threadId}"]`).waitFor({ state: 'detached' });
      expect(await page.locator('#thread-heading').textContent()).toBe('Thread 2');
      expect((await history(env, 'kim', '/v1/threads')).body.threads).toEqual([]);
      expect((await history(env, 'kim', `/v1/threads/${threadId}/messages`)).status).toBe(404);
      await page.reload(); // the empty thread made in this tab is kept by the tab, the deleted one is gone
      await waitReady(page);
      expect(await page.locator('#thread-list button').allTextContents()).toEqual(['Thread 2']);
      expect(opened.errors).toEqual([]);
      expect(opened.badRequests).toEqual([]);
    });

    it('Stop cancels the run and keeps the partial answer, marked stopped, also after a reload', async () => {
      const { agent, opened } = await gatedPage('lena');
      const { page } = opened;
      await say(page, '/gated write an essay');
      await agent.started(1);
      const threadId = await openThreadId(page);
      agent.push(threadId, { type: 'text_delta', text: 'Once upon ' });
      agent.push(threadId, { type: 'text_delta', text: 'a time' });
      await page.waitForFunction(() => document.querySelector('li.msg.answer .markdown')?.textContent === 'Once upon a time');
      await page.getByRole('button', { name: 'Stop this run' }).click();
      await waitForTerminals(page, 1);

      const check = async () => {
        const answer = answerOf(page);
        expect(await answer.getAttribute('class')).toContain('cancelled');
        expect(await answer.locator('.who').textContent()).toBe('Agent (cancelled)');
        expect(await answer.locator('.markdown').textContent()).toBe('Once upon a time');
        expect(await answer.locator('.stopped-note').textContent()).toBe('Stopped: the answer above is incomplete.');
        expect(await page.getByRole('button', { name: 'Stop this run' }).count()).toBe(0);
      };
      await check();
      await page.reload();
      await waitReady(page);
      await waitForTerminals(page, 1);
      await check();
      expect(opened.errors).toEqual([]);
      expect(opened.badRequests).toEqual([]);
    });

    it('an answer with a script, an onerror image and a javascript: link does nothing, streamed, completed or from history', async () => {
      const { agent, opened } = await gatedPage('mona');
      const { page } = opened;
      const payload = (n: number) =>
        `Hi <script>window.pwned = ${n}</script> <img src=x onerror="window.pwned = ${n + 1}"> ` +
        `[click](javascript:window.pwned=${n + 2}) [raw](JAVASCRIPT:alert(1)) <a href="javascript:alert(1)">a</a> ` +
        `[safe](https://example.com/docs) [mail](mailto:someone@example.com)`;
      // Answered whole (agent_completed) by the echo agent…
      await say(page, payload(10));
      await waitForTerminals(page, 1);
      // …and streamed in fragments that split the dangerous parts.
      await page.getByRole('button', { name: 'New thread' }).click();
      await say(page, '/gated hostile');
      await agent.started(2);
      const threadId = await openThreadId(page);
      const text = payload(20);
      for (let i = 0; i < text.length; i += 7) agent.push(threadId, { type: 'text_delta', text: text.slice(i, i + 7) });
      agent.finish(threadId, '');
      await waitForTerminals(page, 2);

      const inspect = () =>
        page.evaluate(() => {
          const answers = Array.from(document.querySelectorAll('li.msg.answer .markdown'));
          return {
            pwned: (window as unknown as { pwned?: unknown }).pwned ?? null,
            answers: answers.length,
            elements: answers.flatMap((a) => Array.from(a.querySelectorAll('script, img, iframe, [onerror]')).map((el) => el.outerHTML)),
            links: answers.flatMap((a) =>
              Array.from(a.querySelectorAll('a')).map((el) => ({ href: el.getAttribute('href'), rel: el.rel, target: el.target, text: el.textContent })),
            ),
          };
        });
      const expectSafe = async (answers: number) => {
        const seen = await inspect();
        expect(seen.pwned).toBeNull();
        expect(seen.answers).toBe(answers);
        expect(seen.elements).toEqual([]);
        const perAnswer = [
          { href: 'https://example.com/docs', rel: 'noopener noreferrer', target: '_blank', text: 'safe' },
          { href: 'mailto:someone@example.com', rel: 'noopener noreferrer', target: '_blank', text: 'mail' },
        ];
        expect(seen.links).toEqual(Array.from({ length: answers }, () => perAnswer).flat());
      };
      await expectSafe(2);
      // The raw markup is shown as text.
      expect(await answerOf(page).locator('.markdown').textContent()).toContain('<script>window.pwned = 20</script>');

      await page.reload(); // from history: the open thread, then the other one when opened
      await waitReady(page);
      await waitForTerminals(page, 1);
      await expectSafe(1);
      await page.getByRole('button', { name: /^Hi <script>/ }).click();
      await waitForTerminals(page, 2);
      await expectSafe(2);
      expect(opened.errors).toEqual([]);
      expect(opened.badRequests).toEqual([]);
    });

    it('an answer whose markdown would make a huge page (a wide table of one-character rows) is shown as plain text, streamed or from history', async () => {
      const { agent, opened } = await gatedPage('nora');
      const { page } = opened;
      // 4 KB: a 1000-column header and 70 rows of `|`, each of which markdown-it fills to 1000 cells.
      const hostile = `|${'a|'.repeat(1000)}\n|${'-|'.repeat(1000)}\n${'|\n'.repeat(70)}`;
      const small = '| n | square |\n|---|---|\n| 2 | 4 |\n| 3 | 9 |';
      await say(page, '/gated tables');
      await agent.started(1);
      const threadId = await openThreadId(page);
      agent.push(threadId, { type: 'text_delta', text: small });
      // A table of ordinary size is a table.
      await page.waitForFunction(() => document.querySelectorAll('li.msg.answer .markdown td').length === 4);
      agent.push(threadId, { type: 'text_delta', text: `\n\n${hostile}` });
      agent.finish(threadId, '');
      await waitForTerminals(page, 1);

      const check = async () => {
        const shown = await answerOf(page)
          .locator('.markdown')
          .evaluate((el) => ({ elements: el.querySelectorAll('*').length, text: el.textContent }));
        expect(shown).toEqual({ elements: 1, text: `${small}\n\n${hostile}` });
      };
      await check();
      await page.reload();
      await waitReady(page);
      await waitForTerminals(page, 1);
      await check();
      expect(opened.errors).toEqual([]);
    });

    it('screenshot for the docs: a streamed markdown answer and the thread list', async () => {
      const { agent, opened } = await gatedPage('demo');
      const { page } = opened;
      await say(page, 'what is agentwire?');
      await waitForTerminals(page, 1);
      await page.getByRole('button', { name: 'New thread' }).click();
      await say(page, 'how do I resume a stream?');
      await waitForTerminals(page, 2);
      await page.getByRole('button', { name: 'New thread' }).click();
      await say(page, '/gated How does a reload keep the answer?');
      await agent.started(3);
      const threadId = await openThreadId(page);
      agent.push(threadId, { type: 'thinking_delta', text: 'The page loads the history, then connects from its position.' });
      const answer =
        'A reload **never repeats a word**:\n\n' +
        '1. the page loads the thread from `GET /v1/threads/<id>/messages`, with the answer so far;\n' +
        "2. it connects with that answer's `epoch` and `last_seq`;\n" +
        '3. the gateway replays exactly the deltas after it.\n\n' +
        '> Each event is keyed by *(epoch, seq)*. See [the protocol](https://example.com/protocol).';
      for (const word of answer.match(/\s*\S+/g)!) agent.push(threadId, { type: 'text_delta', text: word });
      agent.finish(threadId, '');
      await waitForTerminals(page, 3);
      page.once('dialog', (dialog) => void dialog.accept('How does a reload keep the answer?'));
      await page.getByRole('button', { name: 'Rename' }).click();
      await page.waitForFunction(() => document.getElementById('thread-heading')?.textContent === 'How does a reload keep the answer?');
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: `${ARTIFACTS}chat-page-streaming.png` });
      if (process.env.AGENTWIRE_UPDATE_SCREENSHOT === '1') await page.screenshot({ path: `${DOCS}chat-page.png` });
      expect(opened.errors).toEqual([]);
      expect(opened.badRequests).toEqual([]);
    });
  });
});

describe('history routes from another origin (CORS)', () => {
  it("a page on another origin reads and changes threads when the gateway's allow-list names that origin, and cannot when not", async () => {
    // The app: a blank page on a port of its own, so another origin than either gateway's.
    const app: Server = createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end('<!doctype html><title>app</title>'));
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => app.close(() => resolve())));
    const appOrigin = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
    const allowing = await started({ allowedOrigins: [appOrigin] });
    const refusing = await started({ allowedOrigins: ['https://app.example'] });
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`${appOrigin}/`);
    const bearer = await token('carol');

    // What the client SDK sends: a GET and a PATCH with the token, each preflighted.
    const calls = (gatewayPort: number) =>
      page.evaluate(
        async ({ base, token }) => {
          const headers = { accept: 'application/json', authorization: `Bearer ${token}` };
          const outcome = (request: Promise<Response>) =>
            request.then(
              async (response) => `${response.status} ${await response.text()}`,
              (error: Error) => error.name,
            );
          return [
            await outcome(fetch(`${base}/v1/threads`, { headers })),
            await outcome(
              fetch(`${base}/v1/threads/none`, { method: 'PATCH', headers: { ...headers, 'content-type': 'application/json' }, body: '{"title":"x"}' }),
            ),
          ];
        },
        { base: `http://127.0.0.1:${gatewayPort}`, token: bearer },
      );
    expect(await calls(allowing.port)).toEqual(['200 {"threads":[],"next_cursor":null}', '404 {"error":"not_found"}']);
    expect(await calls(refusing.port)).toEqual(['TypeError', 'TypeError']);
  });
});
