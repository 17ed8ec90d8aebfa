import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { GatewayMetrics, MAX_CODE_LABEL_VALUES, OTHER_LABEL, closeCodeLabel, eventTypeLabel } from '../../src/observability/metrics.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * Every metric label takes values from a bounded set (issue 8 item 9): no client, token, agent
 * or engine reply can create series without bound.
 */

const CONTRACT_CLOSE_CODES = [1000, 1008, 1009, 1011, 1012, 1013, 4008, 4401, 4403, 4408, 4429];

async function seriesOf(counter: { get(): Promise<{ values: Array<{ labels: Record<string, unknown>; value: number }> }> }) {
  const series: Record<string, number> = {};
  for (const { labels, value } of (await counter.get()).values) series[Object.values(labels).join(',')] = value;
  return series;
}

describe('label bounds', () => {
  it('close codes: the contract codes and 1000-1015 as themselves, anything else as other', () => {
    for (const code of CONTRACT_CLOSE_CODES) expect(closeCodeLabel(code)).toBe(String(code));
    for (let code = 1000; code <= 1015; code++) expect(closeCodeLabel(String(code))).toBe(String(code));
    for (const code of [0, 999, 1016, 2999, 3000, 4000, 4400, 4999, 65535, -1, 1000.5, Number.NaN]) {
      expect(closeCodeLabel(code)).toBe(OTHER_LABEL);
    }
    for (const text of ['1000 ', '01000', '1e3', 'constructor', '__proto__', '']) {
      expect([OTHER_LABEL, '1000']).toContain(closeCodeLabel(text));
    }
    expect(closeCodeLabel('constructor')).toBe(OTHER_LABEL);
  });

  it('event types: the durable event types as themselves, anything else as other', async () => {
    expect(eventTypeLabel('agent_started')).toBe('agent_started');
    expect(eventTypeLabel('agent_error')).toBe('agent_error');
    for (const type of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'agent_started\n', 'x'.repeat(1000)]) {
      expect(eventTypeLabel(type)).toBe(OTHER_LABEL);
    }
    const metrics = new GatewayMetrics();
    for (let i = 0; i < 500; i++) metrics.eventSent(`forged-${i}` as 'agent_started');
    metrics.eventSent('agent_started');
    expect(await seriesOf(metrics.eventsSent)).toEqual({ other: 500, agent_started: 1 });
  });

  it('labels fed by code are capped at MAX_CODE_LABEL_VALUES distinct values each, then other', async () => {
    const metrics = new GatewayMetrics();
    for (let i = 0; i < 1000; i++) {
      metrics.faults.inc({ context: `context-${i}` });
      metrics.errorsSent.inc({ code: `code-${i}` });
      metrics.auth.inc({ method: 'frame', outcome: `outcome-${i}` });
      metrics.runs.inc({ outcome: `outcome-${i}` });
    }
    for (const counter of [metrics.faults, metrics.errorsSent, metrics.auth, metrics.runs]) {
      const series = await seriesOf(counter);
      expect(Object.keys(series)).toHaveLength(MAX_CODE_LABEL_VALUES + 1);
      expect(Object.values(series).reduce((a, b) => a + b, 0)).toBe(1000);
    }
    // A value admitted before the cap keeps its own series.
    metrics.faults.inc({ context: 'context-0' });
    expect((await seriesOf(metrics.faults))['context-0']).toBe(2);
    // labels() is bounded as well as inc().
    metrics.closes.labels('4321').inc();
    metrics.closes.labels({ code: '4322' }).inc();
    expect(await seriesOf(metrics.closes)).toEqual({ other: 2 });
  });
});

describe('close-code metric over real sockets', () => {
  let env: TestGateway | undefined;
  afterEach(async () => {
    await env?.stop();
    env = undefined;
  });

  it('2,000 clients closing with 2,000 distinct codes make at most 22 series', async () => {
    env = await startGateway();
    const codes = Array.from({ length: 2000 }, (_, i) => 3000 + i);
    const closeWith = (code: number) =>
      new Promise<void>((resolve, reject) => {
        const ws = new WebSocket(env!.url, ['agentwire.v1']);
        ws.once('open', () => ws.close(code));
        ws.once('close', () => resolve());
        ws.once('error', reject);
      });
    for (let i = 0; i < codes.length; i += 200) await Promise.all(codes.slice(i, i + 200).map(closeWith));
    const { gateway } = env;
    await env.stop(); // waits for every server-side close to be counted
    env = undefined;
    const series = await seriesOf(gateway.metrics.closes);
    expect(Object.keys(series).length).toBeLessThanOrEqual(16 + 5 + 1);
    expect(Object.values(series).reduce((a, b) => a + b, 0)).toBe(2000);
    // The contract's codes in 3000..4999 keep their series; the 1,995 others are one.
    expect(series).toEqual({ '4008': 1, '4401': 1, '4403': 1, '4408': 1, '4429': 1, other: 1995 });
  }, 60_000);
});
