import { parseArgs, type ParseArgsConfig } from 'node:util';
import { didYouMean } from '../config/didYouMean.js';

type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/** A subcommand's name, its `--help` text and its options (`--help` / `-h` is added to every command). */
export interface CommandSpec {
  readonly name: string;
  readonly help: string;
  readonly options: OptionSpec;
}

export type ParsedCommand =
  { kind: 'args'; values: Record<string, string | boolean | undefined>; positionals: string[] } | { kind: 'help' } | { kind: 'error'; message: string };

const HELP_OPTION: OptionSpec = { help: { type: 'boolean', short: 'h' } };

/**
 * Parses a subcommand's arguments with node's parseArgs. `--help` anywhere (before `--`) asks
 * for the help; an unknown option becomes one line naming it, with the closest known option
 * when there is one (`--thred` -> did you mean --thread?). Pure.
 */
export function parseCommandArgs(spec: CommandSpec, argv: string[]): ParsedCommand {
  const options = { ...spec.options, ...HELP_OPTION };
  // A lenient pass first, to see every option as typed: parseArgs' strict errors name only the
  // first problem, and an unknown option deserves a suggestion.
  let tokens;
  try {
    ({ tokens } = parseArgs({ args: argv, options, allowPositionals: true, strict: false, tokens: true }));
  } catch (error) {
    return { kind: 'error', message: `agentwire ${spec.name}: ${(error as Error).message}` };
  }
  const optionTokens = tokens.filter((token) => token.kind === 'option');
  if (optionTokens.some((token) => token.name === 'help')) return { kind: 'help' };
  const unknown = optionTokens.find((token) => !Object.hasOwn(options, token.name));
  if (unknown) {
    const known = didYouMean(unknown.name, Object.keys(options));
    const hint = known === null ? '' : ` (did you mean --${known}?)`;
    return { kind: 'error', message: `agentwire ${spec.name}: unknown option ${unknown.rawName}${hint}` };
  }
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { kind: 'args', values: values as Record<string, string | boolean | undefined>, positionals };
  } catch (error) {
    return { kind: 'error', message: `agentwire ${spec.name}: ${(error as Error).message}` };
  }
}

/**
 * The subcommand's arguments, or the exit code once `--help` was printed (0) or a usage
 * error was (2).
 */
export function commandArgs(spec: CommandSpec, argv: string[]): { values: Record<string, string | boolean | undefined>; positionals: string[] } | number {
  const parsed = parseCommandArgs(spec, argv);
  if (parsed.kind === 'args') return parsed;
  if (parsed.kind === 'help') {
    process.stdout.write(spec.help);
    return 0;
  }
  return usageError(spec.name, parsed.message);
}

/** Prints a usage problem and where the help is; returns exit code 2. */
export function usageError(command: string, message: string): number {
  process.stderr.write(`${message}\n(see agentwire ${command} --help)\n`);
  return 2;
}
