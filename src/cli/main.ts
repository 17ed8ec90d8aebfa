import { runChat } from './chat.js';
import { runServe } from './serve.js';
import { runStormCommand } from './storm.js';
import { runToken } from './token.js';

const USAGE = `agentwire — a race-free WebSocket gateway for agent chat

Usage:
  agentwire serve [flags]                 start a gateway (see: agentwire serve --help)
  agentwire chat [--url U] [--token T] [--thread ID] [--json] "text"
                                          send one message and print the run's events
  agentwire chat [--url U] [--token T] [--thread ID] [--json] [--interactive]
                                          no text: a prompt; each line is sent on one thread
  agentwire token --secret S [--user U] [--ttl-s N]
                                          mint an HS256 token for a user
  agentwire storm --url U --connections N --users U (--token-secret S | --bypass-key K) [--report DIR]
                                          load and race probe of any agentwire.v1 server (see --help)
`;

/** Entry point of the `agentwire` command; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return runServe(rest);
    case 'chat':
      return runChat(rest);
    case 'token':
      return runToken(rest);
    case 'storm':
      return runStormCommand(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`agentwire: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}
