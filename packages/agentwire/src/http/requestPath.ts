import type { IncomingMessage } from 'node:http';

/** The path of a request's URL, without its query: what every route and the upgrade match on. */
export function requestPath(req: IncomingMessage): string {
  return (req.url ?? '/').split('?', 1)[0]!;
}
