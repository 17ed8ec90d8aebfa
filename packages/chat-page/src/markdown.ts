/**
 * Agent answers as markdown, rendered safely: markdown-it with raw HTML off (a `<script>` in an
 * answer stays text), then DOMPurify with an allow-list of tags and attributes as a second
 * wall, so that neither a markdown-it bug nor a later option change can put live markup into
 * the page. Links may only go to http(s) or mailto and open in a new tab without an opener or
 * a referrer; images are off (no pixels fetched on the agent's behalf).
 *
 * The work is bounded too, since the page re-renders a streaming answer every frame: a long
 * answer, or one whose markdown makes many elements, is shown as plain text.
 */
import DOMPurify from 'dompurify';
import MarkdownIt from 'markdown-it';

const SAFE_URL = /^(?:https?:|mailto:)/i;

const markdown = new MarkdownIt({ html: false, linkify: false, typographer: false, breaks: true });
markdown.disable('image');
// Applied by markdown-it to every link destination: an unsafe one is left as plain text.
markdown.validateLink = (url) => SAFE_URL.test(url.trim());

/** Longest answer (UTF-16 units) parsed as markdown: parsing is linear, but runs every frame while it streams. */
const MAX_MARKDOWN_LENGTH = 200_000;
/**
 * Most markdown-it tokens (block and inline; about three per element) an answer may render to.
 * Without a bound a few bytes make many elements: a table row `|` gets as many cells as the
 * header has columns, so 4 KB of table was 66 000 cells and 40 KB froze the tab for seconds.
 */
const MAX_TOKENS = 50_000;

interface RenderEnv {
  overBudget?: boolean;
}

// Tried before every block: once the blocks so far pass the budget, the rest is not parsed (the
// answer becomes plain text), so that parsing stops after one more table however many follow.
markdown.block.ruler.before('table', 'token_budget', (state, _startLine, endLine) => {
  if (state.tokens.length <= MAX_TOKENS) return false;
  (state.env as RenderEnv).overBudget = true;
  state.line = endLine;
  return true;
});

function countTokens(tokens: ReadonlyArray<{ readonly children: unknown[] | null }>): number {
  let count = tokens.length;
  for (const token of tokens) count += token.children?.length ?? 0;
  return count;
}

const ALLOWED_TAGS = [
  'a',
  'blockquote',
  'br',
  'code',
  'del',
  'em',
  'h1',
  'h2',
  'h3',
  'h4',
  'h5',
  'h6',
  'hr',
  'li',
  'ol',
  'p',
  'pre',
  's',
  'strong',
  'table',
  'tbody',
  'td',
  'th',
  'thead',
  'tr',
  'ul',
];

const purifier = DOMPurify(window);
purifier.addHook('afterSanitizeAttributes', (node) => {
  if (node.nodeName !== 'A') return;
  const href = node.getAttribute('href');
  if (href === null || !SAFE_URL.test(href.trim())) node.removeAttribute('href');
  node.setAttribute('rel', 'noopener noreferrer');
  node.setAttribute('target', '_blank');
});

/** Replaces `target`'s content with `text` rendered as sanitized markdown, or as plain text past the bounds above. */
export function renderMarkdown(target: HTMLElement, text: string): void {
  const env: RenderEnv = {};
  const tokens = text.length <= MAX_MARKDOWN_LENGTH ? markdown.parse(text, env) : null;
  if (tokens === null || env.overBudget || countTokens(tokens) > MAX_TOKENS) {
    const plain = document.createElement('p');
    plain.className = 'plain';
    plain.textContent = text;
    target.replaceChildren(plain);
    return;
  }
  const fragment = purifier.sanitize(markdown.renderer.render(tokens, markdown.options, env).trim(), {
    ALLOWED_TAGS,
    ALLOWED_ATTR: ['href', 'title', 'start'],
    ALLOWED_URI_REGEXP: SAFE_URL,
    RETURN_DOM_FRAGMENT: true,
  });
  target.replaceChildren(fragment);
}
