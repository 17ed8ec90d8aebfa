/**
 * Agent answers as markdown, rendered safely: markdown-it with raw HTML off (a `<script>` in an
 * answer stays text), then DOMPurify with an allow-list of tags and attributes as a second
 * wall, so that neither a markdown-it bug nor a later option change can put live markup into
 * the page. Links may only go to http(s) or mailto and open in a new tab without an opener or
 * a referrer; images are off (no pixels fetched on the agent's behalf).
 */
import DOMPurify from 'dompurify';
import MarkdownIt from 'markdown-it';

const SAFE_URL = /^(?:https?:|mailto:)/i;

const markdown = new MarkdownIt({ html: false, linkify: false, typographer: false, breaks: true });
markdown.disable('image');
// Applied by markdown-it to every link destination: an unsafe one is left as plain text.
markdown.validateLink = (url) => SAFE_URL.test(url.trim());

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

/** Replaces `target`'s content with `text` rendered as sanitized markdown. */
export function renderMarkdown(target: HTMLElement, text: string): void {
  const fragment = purifier.sanitize(markdown.render(text).trim(), {
    ALLOWED_TAGS,
    ALLOWED_ATTR: ['href', 'title', 'start'],
    ALLOWED_URI_REGEXP: SAFE_URL,
    RETURN_DOM_FRAGMENT: true,
  });
  target.replaceChildren(fragment);
}
