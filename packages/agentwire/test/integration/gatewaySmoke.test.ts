import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { seqProblem } from '../helpers/wsClient.js';

let env: TestGateway;
afterEach(async () => env?.stop());

describe('gateway end to end', () => {
  it('connects, runs the demo agent and delivers all five event kinds in seq order', async () => {
    env = await startGateway();
    const client = await env.ready('alice');
    const ack = await client.message('m1', 't1', 'what is 2+3*4?');
    expect(ack).toMatchObject({ type: 'ack', status: 'started', thread_id: 't1' });
    const events = await client.runEvents(ack.run_id);
    expect(events.map((e) => e.type)).toEqual(demoRunTypes('what is 2+3*4?'));
    expect(seqProblem(events, 0)).toBeNull();
    expect(events.at(-1)!.text).toContain('14');
    expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
  });
});
