import { signToken } from '../auth/index.js';
import { parseCommandArgs } from './args.js';

export async function runToken(argv: string[]): Promise<number> {
  const parsed = parseCommandArgs('token', argv, {
    secret: { type: 'string' },
    user: { type: 'string', default: 'demo' },
    'ttl-s': { type: 'string', default: '3600' },
    issuer: { type: 'string' },
    audience: { type: 'string' },
  });
  if (typeof parsed === 'string') return fail(parsed);
  const secret = (parsed.values.secret as string | undefined) ?? process.env.AGENTWIRE_JWT_SECRET;
  if (!secret) return fail('agentwire token: --secret (or AGENTWIRE_JWT_SECRET) is required');
  const ttl = Number(parsed.values['ttl-s']);
  if (!Number.isInteger(ttl) || ttl < 1) return fail(`agentwire token: --ttl-s must be a positive integer (got "${parsed.values['ttl-s']}")`);
  const { token } = await signToken(secret, {
    sub: parsed.values.user as string,
    ttlSec: ttl,
    ...(parsed.values.issuer ? { issuer: parsed.values.issuer as string } : {}),
    ...(parsed.values.audience ? { audience: parsed.values.audience as string } : {}),
  });
  process.stdout.write(`${token}\n`);
  return 0;
}

function fail(message: string): number {
  process.stderr.write(`${message}\n`);
  return 2;
}
