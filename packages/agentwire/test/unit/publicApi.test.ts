import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import * as client from '@agentwire/client';
import * as library from '../../src/index.js';

/** Every package's entry points (their package.json "exports"), as sources. */
const ENTRY_POINTS = [
  'packages/agentwire/src/index.ts',
  'packages/client/src/index.ts',
  'packages/client/src/node.ts',
  'packages/protocol/src/index.ts',
  'packages/chat-page/src/index.ts',
  'packages/storm/src/index.ts',
];

/** Every export of `entry` that has no doc comment, as `entry: name`. */
function undocumentedExports(program: ts.Program, entry: string): string[] {
  const checker = program.getTypeChecker();
  const module = checker.getSymbolAtLocation(program.getSourceFile(entry)!)!;
  return checker
    .getExportsOfModule(module)
    .filter((exported) => !aliasChain(checker, exported).some((symbol) => hasDocComment(checker, symbol)))
    .map((exported) => `${entry}: ${exported.name}`);
}

/** The symbol and every symbol it re-exports, down to the declaration. */
function aliasChain(checker: ts.TypeChecker, symbol: ts.Symbol): ts.Symbol[] {
  const chain = [symbol];
  while (chain.at(-1)!.flags & ts.SymbolFlags.Alias && chain.length < 10) {
    const next = checker.getImmediateAliasedSymbol(chain.at(-1)!);
    if (!next) break;
    chain.push(next);
  }
  return chain;
}

/** Documented where declared, or where re-exported (`/** ... *\/ export type { Logger }`, for a dependency's type). */
function hasDocComment(checker: ts.TypeChecker, symbol: ts.Symbol): boolean {
  if (ts.displayPartsToString(symbol.getDocumentationComment(checker)).trim() !== '') return true;
  // Only `export type { X };` of an imported name: an `export ... from` list is not documentation
  // (the first one would take the file's leading comment).
  return (symbol.declarations ?? []).some(
    (d) => ts.isExportSpecifier(d) && !d.parent.parent.moduleSpecifier && ts.getJSDocCommentsAndTags(d.parent.parent).length > 0,
  );
}

describe('public API', () => {
  it('every export of every entry point has a doc comment', () => {
    const program = ts.createProgram(ENTRY_POINTS, {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      strict: true,
      skipLibCheck: true,
      noEmit: true,
    });
    expect(ENTRY_POINTS.flatMap((entry) => undocumentedExports(program, entry))).toEqual([]);
  });

  it('has what an outside engine needs and none of the internals', () => {
    // An engine must throw this very class: the run manager checks it with instanceof.
    expect(library.RunEndedError).toBeTypeOf('function');
    for (const internal of ['ConnectionLifecycle', 'loadConfig', 'bundleChatPage', 'StateTransitionError']) {
      expect(library, internal).not.toHaveProperty(internal);
    }
    for (const internal of ['ClientStateMachine', 'CLIENT_TRANSITIONS', 'backoffDelay', 'decideAfterClose']) {
      expect(client, internal).not.toHaveProperty(internal);
    }
  });
});
