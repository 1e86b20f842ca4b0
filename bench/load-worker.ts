/**
 * Worker-thread entry for bench/load.ts: runs a slice of the connections.
 * Protocol with the parent: -> {type:'ready'}; <- 'go'; -> {type:'result'} or {type:'error'}.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { runThread, type ThreadSpec } from './load.js';

const port = parentPort!;
let go!: () => void;
const goP = new Promise<void>((r) => (go = r));
port.on('message', (m) => {
  if (m === 'go') go();
});

runThread(workerData as ThreadSpec, () => port.postMessage({ type: 'ready' }), goP).then(
  (result) => {
    port.postMessage({ type: 'result', result }, [result.latencies.buffer as ArrayBuffer]);
    port.close();
  },
  (e: unknown) => {
    port.postMessage({ type: 'error', error: e instanceof Error ? e.message : String(e) });
    port.close();
  },
);
