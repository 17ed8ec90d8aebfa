import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseCommandArgs, type CommandSpec } from '../../src/cli/args.js';
import { checkWebSocketUrl } from '../../src/cli/chat.js';
import { didYouMean, editDistance } from '../../src/config/didYouMean.js';
import { fcParams } from '../helpers/fastCheck.js';

/** The pure parts of the CLI's argument handling; the commands themselves run in cli.test.ts. */

const word = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '-'), maxLength: 8 });

describe('editDistance', () => {
  it('is 0 exactly for equal strings, symmetric, at most the longer length, and 1 for one edit', () => {
    fc.assert(
      fc.property(word, word, (a, b) => {
        const d = editDistance(a, b);
        expect(d === 0).toBe(a === b);
        expect(editDistance(b, a)).toBe(d);
        expect(d).toBeLessThanOrEqual(Math.max(a.length, b.length));
        expect(d).toBeGreaterThanOrEqual(Math.abs(a.length - b.length));
      }),
      fcParams(300, 5000),
    );
    expect(editDistance('thred', 'thread')).toBe(1);
    expect(editDistance('chta', 'chat')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
  });
});

describe('didYouMean', () => {
  const FLAGS = ['url', 'token', 'thread', 'json', 'interactive', 'timeout-ms', 'help'];

  it('suggests the known name one typo away (dropped, added, changed or swapped letter), or an abbreviation', () => {
    expect(didYouMean('thred', FLAGS)).toBe('thread');
    expect(didYouMean('threads', FLAGS)).toBe('thread');
    expect(didYouMean('tokne', FLAGS)).toBe('token');
    expect(didYouMean('jsom', FLAGS)).toBe('json');
    expect(didYouMean('inter', FLAGS)).toBe('interactive');
    expect(didYouMean('TOKEN', FLAGS)).toBe('token');
    expect(didYouMean('AGENTWIRE_HEARTBEAT_MSS', ['AGENTWIRE_HEARTBEAT_MS', 'AGENTWIRE_HEARTBEAT_TIMEOUT_MS'])).toBe('AGENTWIRE_HEARTBEAT_MS');
  });

  it('suggests nothing for unrelated names, empty input or absurdly long input', () => {
    expect(didYouMean('zzzzzz', FLAGS)).toBeNull();
    expect(didYouMean('x', FLAGS)).toBeNull();
    expect(didYouMean('', FLAGS)).toBeNull();
    expect(didYouMean('t'.repeat(10_000), ['t'.repeat(10_000)])).toBeNull();
    expect(didYouMean('thred', [])).toBeNull();
  });

  it('returns one of the candidates (or null); one edit away always counts, and nothing farther beats it', () => {
    fc.assert(
      fc.property(word, fc.array(word, { maxLength: 6 }), (input, candidates) => {
        const found = didYouMean(input, candidates);
        const oneEdit = candidates.filter((c) => editDistance(input, c) <= 1);
        if (input.length > 0 && oneEdit.length > 0) {
          expect(found).not.toBeNull();
          expect(editDistance(input, found!)).toBe(Math.min(...oneEdit.map((c) => editDistance(input, c))));
        }
        if (found !== null) expect(candidates).toContain(found);
      }),
      fcParams(300, 5000),
    );
  });
});

describe('parseCommandArgs', () => {
  const spec: CommandSpec = {
    name: 'chat',
    help: 'agentwire chat — help\n',
    options: { thread: { type: 'string' }, json: { type: 'boolean' }, interactive: { type: 'boolean', short: 'i' } },
  };

  it('--help and -h ask for the help, even next to unknown options; -- ends the options', () => {
    expect(parseCommandArgs(spec, ['--help'])).toEqual({ kind: 'help' });
    expect(parseCommandArgs(spec, ['--bogus', '-h'])).toEqual({ kind: 'help' });
    expect(parseCommandArgs(spec, ['--', '--help'])).toMatchObject({ kind: 'args', positionals: ['--help'] });
  });

  it('names an unknown option with the closest known one, long or short', () => {
    expect(parseCommandArgs(spec, ['--thred', 'x'])).toEqual({
      kind: 'error',
      message: 'agentwire chat: unknown option --thred (did you mean --thread?)',
    });
    expect(parseCommandArgs(spec, ['--thred=x'])).toEqual({
      kind: 'error',
      message: 'agentwire chat: unknown option --thred (did you mean --thread?)',
    });
    expect(parseCommandArgs(spec, ['-x'])).toEqual({ kind: 'error', message: 'agentwire chat: unknown option -x' });
    // Own-property lookups: an option named like an Object.prototype member is unknown too.
    expect(parseCommandArgs(spec, ['--constructor'])).toMatchObject({ kind: 'error' });
    expect(parseCommandArgs(spec, ['--__proto__'])).toMatchObject({ kind: 'error' });
  });

  it('passes known options and positionals through, and reports a missing value', () => {
    expect(parseCommandArgs(spec, ['--thread', 't1', '-i', 'hello', 'there'])).toEqual({
      kind: 'args',
      values: { thread: 't1', interactive: true },
      positionals: ['hello', 'there'],
    });
    const missing = parseCommandArgs(spec, ['--thread']);
    expect(missing.kind).toBe('error');
    expect(missing.kind === 'error' && missing.message).toMatch(/^agentwire chat: .*--thread/);
  });
});

describe('checkWebSocketUrl', () => {
  it('takes ws:// and wss://, and refuses http(s):// with the ws URL meant', () => {
    expect(checkWebSocketUrl('ws://127.0.0.1:8080/ws')).toBeNull();
    expect(checkWebSocketUrl('wss://example.com/ws')).toBeNull();
    expect(checkWebSocketUrl('http://127.0.0.1:8080/ws')).toBe('--url is http://…: use ws:// or wss:// (did you mean ws://127.0.0.1:8080/ws?)');
    expect(checkWebSocketUrl('https://example.com/ws')).toBe('--url is https://…: use ws:// or wss:// (did you mean wss://example.com/ws?)');
    expect(checkWebSocketUrl('ftp://example.com/')).toBe('--url is ftp://…: use ws:// or wss://');
    expect(checkWebSocketUrl('127.0.0.1:8080')).toBe('--url is not a URL (got "127.0.0.1:8080"): use ws:// or wss://, e.g. ws://127.0.0.1:8080/ws');
  });
});
