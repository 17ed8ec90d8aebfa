// Asks the gateway of embed.mjs one question, prints the run's events and exits.
// Run: AGENTWIRE_JWT_SECRET=<the gateway's secret> node client.mjs   (AGENTWIRE_URL: default ws://127.0.0.1:3000/ws)
import { signToken } from 'agentwire';
import { createClient } from '@agentwire/client';

// Your server issues tokens; here one is signed with the gateway's secret for user "alice".
const { token } = await signToken(process.env.AGENTWIRE_JWT_SECRET, { sub: 'alice', ttlSec: 600 });
const client = createClient({ url: process.env.AGENTWIRE_URL ?? 'ws://127.0.0.1:3000/ws', token });
client.on('state', ({ state }) => console.log(`[${state}]`));  // idle | connecting | ready | reconnecting | closed
await client.connect();
const { events } = client.ask('thread-1', 'hello');
for await (const event of events) {                       // this run's events, in seq order, once each
  console.log(`#${event.seq} ${event.type}${event.text ? `: ${event.text}` : ''}`);
}
client.close();
