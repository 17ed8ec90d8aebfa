import { describe, expect, it } from 'vitest';
import { withFieldNames } from '../../src/redis/keys.js';

describe('withFieldNames', () => {
  it("writes the schema's field names into a script", () => {
    const script = "redis.call('HSET', KEYS[1], META.seq, 1, RUN.state, STATE.ended, LOG.json, ARGV[1])";
    expect(withFieldNames(script, 'scripts/x.lua')).toBe("redis.call('HSET', KEYS[1], 'seq', 1, 'state', 'ended', 'j', ARGV[1])");
  });

  it('fails the load for a name the schema lacks, rather than sending nil to Redis', () => {
    expect(() => withFieldNames("redis.call('HGET', KEYS[1], RUN.stat)", 'scripts/x.lua')).toThrow(
      'scripts/x.lua: RUN.stat is not in the Redis schema (keys.ts)',
    );
    expect(() => withFieldNames('RUN.toString', 'scripts/x.lua')).toThrow(/RUN.toString is not in the Redis schema/);
  });
});
