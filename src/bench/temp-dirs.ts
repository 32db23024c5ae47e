// Temporary folders (gigabytes of random weights) that must not outlive the process, even on Ctrl-C.
import { rmSync } from 'node:fs';

const dirs = new Set<string>();
let installed = false;

function removeAll(): void {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

function install(): void {
  if (installed) return;
  installed = true;
  process.once('exit', removeAll);
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => {
      removeAll();
      process.exit(code);
    });
  }
}

/** Removes `dir` when the process exits or is interrupted, unless unregistered first. */
export function registerTempDir(dir: string): void {
  install();
  dirs.add(dir);
}

export function unregisterTempDir(dir: string): void {
  dirs.delete(dir);
}
