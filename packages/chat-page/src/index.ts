/**
 * @agentwire/chat-page: the browser chat page as built assets. The gateway serves them (its
 * `chatPage` option, `createChatPageHandler`); nothing here runs in the browser except the
 * bundled script.
 */
import { fileURLToPath } from 'node:url';

export type { ChatPageConfig } from './config.js';
export { renderChatPageHtml } from './html.js';

/**
 * The page script as the build bundled it (page.ts with the client SDK, by esbuild, into
 * dist/chat.js). The path holds from dist/index.js and from src/index.ts alike: src/ and dist/
 * sit side by side.
 */
export const chatPageScriptPath: string = fileURLToPath(new URL('../dist/chat.js', import.meta.url));
