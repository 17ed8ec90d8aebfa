import { pino, type Logger } from 'pino';

/** pino's logger, the type of `GatewayOptions.logger`. */
export type { Logger };

/** Structured JSON logs. Tokens and credentials are redacted wherever they might appear. */
export function createLogger(level = 'info'): Logger {
  return pino({
    level,
    base: { service: 'agentwire' },
    redact: {
      paths: [
        'token',
        '*.token',
        'authorization',
        '*.authorization',
        'headers.authorization',
        'req.headers.authorization',
        'req.headers["sec-websocket-protocol"]',
      ],
      censor: '[redacted]',
    },
  });
}

export const silentLogger: Logger = pino({ level: 'silent' });
