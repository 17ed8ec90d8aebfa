/**
 * The one error type configuration problems raise. Its message is a single line,
 * `<SETTING>: <reason>`, so `agentwire serve` can print it as is and exit.
 */
export class ConfigError extends Error {
  constructor(
    readonly setting: string,
    reason: string,
  ) {
    super(`${setting}: ${oneLine(reason)}`);
    this.name = 'ConfigError';
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ');
}
