import type { Pool, PoolClient } from 'pg';

/**
 * Runs `work` on a connection of its own. A checked-out connection whose socket dies reports it
 * as an `error` event besides failing its query, and pg's pool listens only to idle ones: without
 * this listener a PostgreSQL restart during a transaction would end the process. A connection
 * that failed is closed, not pooled again.
 */
export async function withClient<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  const swallow = () => undefined;
  client.on('error', swallow);
  let failure: Error | undefined;
  try {
    return await work(client);
  } catch (error) {
    failure = error as Error;
    throw error;
  } finally {
    client.removeListener('error', swallow);
    client.release(failure);
  }
}

/** `work` in one transaction: committed when it resolves, rolled back when it throws. */
export function inTransaction<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query('BEGIN');
    try {
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  });
}
