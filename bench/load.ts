/**
 * The load generator process: a LoadClient driven over IPC by bench/run.ts, so that its CPU
 * and memory never count as the server's.
 */
import { serveIpc, usageNow, type BenchAlgorithm } from './common.js';
import { LoadClient } from './loadCore.js';

if (!process.send) throw new Error('bench/load.ts must be started by bench/run.ts (IPC)');

const client = new LoadClient({
  ...(process.env.BENCH_RS256_PRIVATE_KEY ? { RS256: process.env.BENCH_RS256_PRIVATE_KEY } : {}),
  ...(process.env.BENCH_ES256_PRIVATE_KEY ? { ES256: process.env.BENCH_ES256_PRIVATE_KEY } : {}),
});

serveIpc({
  tokens: (args: { users: string[]; algorithm?: BenchAlgorithm }) => client.prepareTokens(args.users, args.algorithm),
  connect: (args) => client.connectMany(args),
  closeAll: () => client.closeAll(),
  prepareEvents: (args) => client.prepareEvents(args),
  runEvents: (args) => client.runEvents(args),
  runPaced: (args) => client.runPaced(args),
  open: () => client.openCount,
  usage: () => usageNow(client.openCount),
  stop: async () => {
    await client.closeAll(5000);
    setImmediate(() => process.exit(0));
  },
});

process.send({ type: 'ready', pid: process.pid });
