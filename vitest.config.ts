import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const source = (path: string) => fileURLToPath(new URL(`./packages/${path}`, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run the workspace packages from their sources (as tsconfig.json's paths do for the
    // type check); processes the tests spawn run the built dist/ like an installed package.
    alias: [
      { find: /^@agentwire\/protocol$/, replacement: source('protocol/src/index.ts') },
      { find: /^@agentwire\/client$/, replacement: source('client/src/index.ts') },
      { find: /^@agentwire\/client\/node$/, replacement: source('client/src/node.ts') },
      { find: /^@agentwire\/chat-page$/, replacement: source('chat-page/src/index.ts') },
      { find: /^@agentwire\/storm$/, replacement: source('storm/src/index.ts') },
    ],
  },
  test: {
    include: ['packages/*/test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
