import { runChat } from './chat.js';
import { didYouMean } from '../config/didYouMean.js';
import { runServe } from './serve.js';
import { runStormCommand } from './storm.js';
import { runToken } from './token.js';

const USAGE = `agentwire — a race-free WebSocket gateway for agent chat

Usage:
  agentwire serve [flags]                 start a gateway
  agentwire chat [--url U] [--token T] [--thread ID] [--json] "text"
                                          send one message and print the run's events
  agentwire chat [--url U] [--token T] [--thread ID] [--json] [--interactive]
                                          no text: a prompt; each line is sent on one thread
  agentwire token --secret S [--user U] [--ttl-s N]
                                          mint an HS256 token for a user
  agentwire storm --url U --connections N --users U (--token-secret S | --bypass-key K) [--report DIR]
                                          load and race probe of any agentwire.v1 server

Every command takes --help (e.g. agentwire chat --help).
`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  serve: runServe,
  chat: runChat,
  token: runToken,
  storm: runStormCommand,
};

/** Entry point of the `agentwire` command; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== undefined && Object.hasOwn(COMMANDS, command)) return COMMANDS[command]!(rest);
  switch (command) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default: {
      const meant = didYouMean(command, Object.keys(COMMANDS));
      process.stderr.write(`agentwire: unknown command "${command}"${meant ? ` (did you mean ${meant}?)` : ''}\n\n${USAGE}`);
      return 2;
    }
  }
}
