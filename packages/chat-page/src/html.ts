import type { ChatPageConfig } from './config.js';

/** JSON that is safe inside a `<script>` element (no `</script>`, no `<!--`). */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** An inline icon, so that the browser never asks the server for /favicon.ico (a 404). */
const FAVICON =
  'data:image/svg+xml,' +
  encodeURIComponent(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="4" fill="#1f57c3"/><path d="M4 5h8M4 8h6M4 11h4" stroke="#fff" stroke-width="1.6" stroke-linecap="round"/></svg>',
  );

const CSS = `
:root{color-scheme:light dark;--bg:#f6f7f9;--fg:#1b1d21;--muted:#5d6470;--card:#fff;--line:#d6dae1;--accent:#1f57c3;--accent-bg:#e6eeff;--ok:#166534;--ok-bg:#dcfce7;--warn:#8a4b00;--warn-bg:#fff4d6;--bad:#a1121b;--bad-bg:#fde8e8;--code:#f0f2f5}
@media (prefers-color-scheme:dark){:root{--bg:#15171b;--fg:#e8eaee;--muted:#a2a9b5;--card:#1e2126;--line:#343944;--accent:#8fb1ff;--accent-bg:#23324f;--ok:#86efac;--ok-bg:#173324;--warn:#ffd27a;--warn-bg:#3b2f14;--bad:#ff9b9b;--bad-bg:#3d1c1f;--code:#262a31}}
*{box-sizing:border-box}
html,body{height:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;display:flex;flex-direction:column}
.skip{position:absolute;left:-999px;top:0;background:var(--card);padding:.5rem;z-index:2}.skip:focus{left:.5rem}
header{display:flex;align-items:center;gap:1rem;padding:.6rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
header h1{font-size:1.05rem;margin:0;flex:1}
header .who{color:var(--muted);font-size:.85rem}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:999px;font-size:.8rem;font-weight:600;background:var(--warn-bg);color:var(--warn);border:1px solid currentColor}
.badge[data-state=ready]{background:var(--ok-bg);color:var(--ok)}
.badge[data-state=closed]{background:var(--bad-bg);color:var(--bad)}
.layout{flex:1;display:grid;grid-template-columns:minmax(11rem,15rem) 1fr;min-height:0}
nav{border-right:1px solid var(--line);padding:.75rem;overflow:auto;background:var(--card)}
nav h2,main h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:.2rem 0 .6rem}
nav ul{list-style:none;margin:0 0 .75rem;padding:0;display:grid;grid-template-columns:minmax(0,1fr);gap:.25rem}
nav ul button{width:100%;text-align:left;padding:.45rem .6rem;border-radius:6px;border:1px solid transparent;background:none;color:inherit;font:inherit;cursor:pointer}
nav ul button:hover{background:var(--bg)}
nav ul button[aria-current=true]{background:var(--accent-bg);border-color:var(--accent);font-weight:600}
.unread{color:var(--accent);font-size:.8rem}
button{font:inherit}
.btn{padding:.45rem .9rem;border-radius:6px;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer;font-weight:600}
.btn.secondary{background:none;color:var(--accent)}
.btn:disabled{opacity:.5;cursor:not-allowed}
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
main{display:flex;flex-direction:column;min-width:0;min-height:0}
main>.title-bar{display:flex;align-items:center;gap:.5rem;padding:.55rem 1rem .45rem;border-bottom:1px solid var(--line)}
main>.title-bar h2{margin:0;flex:1;font-size:1rem;text-transform:none;letter-spacing:0;color:var(--fg);overflow-wrap:anywhere}
.small{font-size:.8rem;padding:.2rem .6rem}
.btn.danger{border-color:var(--bad);color:var(--bad);background:none}
nav ul button .label{display:block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#transcripts{flex:1;display:flex;min-height:0}
.transcript{flex:1;list-style:none;margin:0;padding:.75rem 1rem;overflow:auto;display:flex;flex-direction:column;gap:.55rem}
.msg{max-width:min(46rem,92%);padding:.5rem .75rem;border-radius:10px;background:var(--card);border:1px solid var(--line)}
.msg .who{display:block;font-size:.75rem;font-weight:600;color:var(--muted);margin-bottom:.15rem}
.msg p{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.msg.user{align-self:flex-end;background:var(--accent-bg);border-color:var(--accent)}
.msg.user .status{display:block;font-size:.75rem;color:var(--muted)}.msg.user .status:empty{display:none}
.msg.user.failed{border-color:var(--bad)}
.msg.thinking{background:none;border-style:dashed;color:var(--muted);font-style:italic}
.msg.tool .tool-name{font-weight:700;color:var(--fg)}
pre{margin:.25rem 0 0;padding:.4rem .55rem;background:var(--code);border-radius:6px;font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
.result{margin-top:.4rem;padding-left:.6rem;border-left:3px solid var(--line)}
.result.ok{border-color:var(--ok)}.result.failed{border-color:var(--bad)}.result.waiting{color:var(--muted);font-style:italic}
.msg.answer{border-left:4px solid var(--ok)}
.msg.answer.streaming{border-left-color:var(--accent)}
.msg.answer.interrupted{border-left-color:var(--bad)}
.markdown>:first-child{margin-top:0}.markdown>:last-child{margin-bottom:0}
.markdown p{white-space:normal;margin:0 0 .5rem}.markdown p.plain{white-space:pre-wrap}
.markdown ul,.markdown ol{margin:.25rem 0 .5rem;padding-left:1.4rem}
.markdown code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:.05rem .25rem;border-radius:4px}
.markdown pre code{padding:0;background:none}
.markdown blockquote{margin:0 0 .5rem;padding-left:.6rem;border-left:3px solid var(--line);color:var(--muted)}
.markdown table{border-collapse:collapse;margin:0 0 .5rem}.markdown th,.markdown td{border:1px solid var(--line);padding:.2rem .45rem}
.markdown a{color:var(--accent)}
.markdown h1,.markdown h2,.markdown h3{font-size:1rem;margin:.4rem 0}
.stopped-note{font-size:.8rem;color:var(--warn);margin-top:.3rem !important}
.msg.thinking.streamed{opacity:.75}.msg.thinking summary{cursor:pointer;font-size:.75rem;font-weight:600;font-style:normal}
.older{align-self:center;font-size:.8rem;padding:.2rem .7rem;border-radius:6px;border:1px solid var(--line);background:var(--card);color:inherit;cursor:pointer}
.msg.answer.cancelled{border-left-color:var(--warn)}
.msg.error{background:var(--bad-bg);border-color:var(--bad);color:var(--bad)}
.msg.system{align-self:center;font-size:.85rem;color:var(--muted);background:none}
.divider{align-self:stretch;text-align:center;font-size:.8rem;color:var(--warn);border-top:1px dashed var(--warn);padding-top:.25rem}
.stop{margin-top:.3rem;font-size:.75rem;padding:.1rem .5rem;border-radius:5px;border:1px solid var(--bad);background:none;color:var(--bad);cursor:pointer}
.note{margin:.5rem 1rem 0;padding:.5rem .75rem;border-radius:8px;background:var(--warn-bg);color:var(--warn);border:1px solid currentColor;display:flex;gap:.75rem;align-items:flex-start}
.note p{margin:0;flex:1;overflow-wrap:anywhere}
.note[hidden],[hidden]{display:none !important}
form#composer{display:grid;grid-template-columns:1fr auto;grid-template-rows:auto auto auto;gap:.25rem .6rem;padding:.75rem 1rem;border-top:1px solid var(--line);background:var(--card)}
form#composer label{grid-column:1/3;font-weight:600;font-size:.85rem}
form#composer textarea{resize:vertical;min-height:2.6rem;max-height:12rem;padding:.5rem .6rem;border-radius:6px;border:1px solid var(--line);background:var(--bg);color:inherit;font:inherit}
form#composer .hint{grid-column:1/3;font-size:.75rem;color:var(--muted);margin:0}
#token-form{margin:1rem;padding:1rem;border:1px solid var(--line);border-radius:10px;background:var(--card);display:grid;gap:.5rem;max-width:40rem}
#token-form input{padding:.45rem .6rem;border-radius:6px;border:1px solid var(--line);background:var(--bg);color:inherit;font:13px ui-monospace,monospace}
#token-error{color:var(--bad);margin:0}
@media (max-width:640px){.layout{grid-template-columns:1fr;grid-template-rows:auto 1fr}nav{border-right:0;border-bottom:1px solid var(--line)}nav ul{grid-auto-flow:column;overflow-x:auto}}
`;

/** The page's HTML: landmarks, labelled controls, live regions; the script does the rest. */
export function renderChatPageHtml(config: ChatPageConfig, scriptUrl: string, title: string): string {
  const t = escapeHtml(title);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${t}</title>
<link rel="icon" href="${FAVICON}">
<style>${CSS}</style>
<script type="application/json" id="agentwire-config">${scriptJson(config)}</script>
<script type="module" src="${escapeHtml(scriptUrl)}"></script>
</head>
<body>
<a class="skip" href="#message">Skip to the message box</a>
<header>
  <h1>${t}</h1>
  <span class="who">user <span id="user">…</span></span>
  <span id="connection" class="badge" role="status" aria-live="polite" aria-atomic="true" data-state="idle">Loading…</span>
</header>
<div id="switch-user" class="note" role="alert" hidden>
  <p id="switch-user-text"></p>
  <button type="button" id="switch-user-accept" class="btn secondary">Switch</button>
  <button type="button" id="switch-user-keep" class="btn">Stay</button>
</div>
<div class="layout">
  <nav aria-labelledby="threads-heading">
    <h2 id="threads-heading">Threads</h2>
    <ul id="thread-list"></ul>
    <button type="button" id="new-thread" class="btn secondary">New thread</button>
  </nav>
  <main aria-labelledby="thread-heading">
    <div class="title-bar">
      <h2 id="thread-heading">Chat</h2>
      <button type="button" id="rename-thread" class="btn secondary small">Rename</button>
      <button type="button" id="delete-thread" class="btn danger small">Delete</button>
    </div>
    <form id="token-form" aria-labelledby="token-form-heading" hidden>
      <h3 id="token-form-heading" style="margin:0">Sign in</h3>
      <p id="token-error" role="alert" hidden></p>
      <label for="token">Token (a JWT for your user)</label>
      <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required>
      <button type="submit" class="btn">Connect</button>
    </form>
    <div id="history-note" class="note" role="alert" hidden>
      <p id="history-note-text"></p>
      <button type="button" id="history-note-dismiss" class="btn secondary">Dismiss</button>
    </div>
    <div id="transcripts"></div>
    <form id="composer" aria-label="Send a message">
      <label for="message">Message</label>
      <textarea id="message" name="message" rows="2" maxlength="32768" aria-describedby="message-hint" placeholder="Ask the agent, e.g. what is 2+3*4?"></textarea>
      <button type="submit" id="send" class="btn">Send</button>
      <p id="message-hint" class="hint">Enter sends; Shift+Enter starts a new line.</p>
    </form>
  </main>
</div>
<noscript><p>This page needs JavaScript.</p></noscript>
</body>
</html>
`;
}
