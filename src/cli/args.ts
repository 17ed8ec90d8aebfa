import { parseArgs, type ParseArgsConfig } from 'node:util';

type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/** Parses a subcommand's options with node's parseArgs; a bad option becomes one clear line. */
export function parseCommandArgs(
  command: string,
  argv: string[],
  options: OptionSpec,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } | string {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: values as Record<string, string | boolean | undefined>, positionals };
  } catch (error) {
    return `agentwire ${command}: ${(error as Error).message}`;
  }
}
