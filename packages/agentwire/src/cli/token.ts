import { signToken } from '../auth/index.js';
import { commandArgs, usageError, type CommandSpec } from './args.js';

const TOKEN_COMMAND: CommandSpec = {
  name: 'token',
  help: `agentwire token — mint an HS256 token (JWT) for a user

Usage:
  agentwire token --secret S [--user U] [--ttl-s N] [--issuer I] [--audience A]

  --secret S      the gateway's AGENTWIRE_JWT_SECRET (default $AGENTWIRE_JWT_SECRET)
  --user U        the token's sub, the user id (default demo)
  --ttl-s N       seconds until it expires (default 3600)
  --issuer I      iss claim (match the gateway's AGENTWIRE_JWT_ISSUER)
  --audience A    aud claim (match the gateway's AGENTWIRE_JWT_AUDIENCE)
  -h, --help      this help

Prints the token on stdout. Exit status: 0 printed, 2 bad usage.
`,
  options: {
    secret: { type: 'string' },
    user: { type: 'string', default: 'demo' },
    'ttl-s': { type: 'string', default: '3600' },
    issuer: { type: 'string' },
    audience: { type: 'string' },
  },
};

/** `agentwire token`: see TOKEN_COMMAND.help. */
export async function runToken(argv: string[]): Promise<number> {
  const parsed = commandArgs(TOKEN_COMMAND, argv);
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  if (positionals.length > 0) return usageError('token', `agentwire token: unexpected argument "${positionals[0]}"`);
  const secret = (values.secret as string | undefined) ?? process.env.AGENTWIRE_JWT_SECRET;
  if (!secret) return usageError('token', 'agentwire token: --secret (or AGENTWIRE_JWT_SECRET) is required');
  const ttl = Number(values['ttl-s']);
  if (!Number.isInteger(ttl) || ttl < 1) {
    return usageError('token', `agentwire token: --ttl-s must be a positive integer (got "${values['ttl-s']}")`);
  }
  const { token } = await signToken(secret, {
    sub: values.user as string,
    ttlSec: ttl,
    ...(values.issuer ? { issuer: values.issuer as string } : {}),
    ...(values.audience ? { audience: values.audience as string } : {}),
  });
  process.stdout.write(`${token}\n`);
  return 0;
}
