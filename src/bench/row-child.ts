// The child process of runIsolated: runs one row and reports back over IPC, then exits (ORT and worker
// threads would otherwise keep it alive).
import { type ChildMessage, type RowTask, runRowTask } from './isolate.js';
import { peakRssBytes } from './table.js';

function send(m: ChildMessage): Promise<void> {
  return new Promise((resolve) => process.send!(m, () => resolve()));
}

process.once('message', async (task: RowTask) => {
  const progress = (message: string): void => void send({ type: 'progress', message });
  try {
    const result = await runRowTask(task, progress);
    await send({ type: 'result', result, peakRssBytes: peakRssBytes() });
    process.exit(0);
  } catch (e) {
    await send({ type: 'error', message: (e as Error).message, peakRssBytes: peakRssBytes() });
    process.exit(1);
  }
});
