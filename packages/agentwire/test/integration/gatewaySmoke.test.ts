import { afterEach, describe, expect, it } from 'vitest';
import { createGateway, MemoryEngine, type EventEngine } from '../../src/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { demoRunTypes } from '../helpers/runInvariants.js';
import { seqProblem } from '../helpers/wsClient.js';

let env: TestGateway;
afterEach(async () => env?.stop());

describe('gateway end to end', () => {
  it.each(['turn', 'tick'] as const)(
    'connects, runs the demo agent and delivers all five event kinds in seq order (frames batched per %s)',
    async (frameBatching) => {
      env = await startGateway({ frameBatching });
      expect(env.gateway.frameBatching).toBe(frameBatching);
      const client = await env.ready('alice');
      const second = await env.ready('alice');
      const ack = await client.message('m1', 't1', 'what is 2+3*4?');
      expect(ack).toMatchObject({ type: 'ack', status: 'started', thread_id: 't1' });
      for (const c of [client, second]) {
        const events = await c.runEvents(ack.run_id);
        expect(events.map((e) => e.type)).toEqual(demoRunTypes('what is 2+3*4?'));
        expect(seqProblem(events, 0)).toBeNull();
        expect(events.at(-1)!.text).toContain('14');
      }
      expect(await env.gateway.metrics.invalidTransitionCount()).toBe(0);
    },
  );
});

describe('frameBatching', () => {
  const auth = { secret: 'a-test-secret-of-at-least-32-bytes!!' };

  it("is 'turn' on the in-memory engine and 'tick' on any other, unless set", async () => {
    const memory = new MemoryEngine();
    // Any other engine (what it answers does not matter here: no connection is made).
    const unused = () => Promise.reject(new Error('not used'));
    const shared: EventEngine = { ready: async () => {}, append: unused, subscribe: unused, read: unused, head: unused, close: async () => {} };
    const gateways = [
      createGateway({ auth }),
      createGateway({ auth, engine: memory }),
      createGateway({ auth, engine: shared }),
      createGateway({ auth, engine: shared, frameBatching: 'turn' }),
      createGateway({ auth, engine: memory, frameBatching: 'tick' }),
    ];
    expect(gateways.map((gateway) => gateway.frameBatching)).toEqual(['turn', 'turn', 'tick', 'turn', 'tick']);
    await Promise.all(gateways.map((gateway) => gateway.shutdown()));
    await memory.close();
  });

  it('refuses a value that is neither, naming the option', () => {
    expect(() => createGateway({ auth, frameBatching: 'frame' as 'turn' })).toThrow(/frameBatching must be 'turn' or 'tick', not "frame"/);
  });
});
