// Temporary folders of gigabytes (shared weight copies, packed GEMM weights, random bench weights). A process
// killed with SIGKILL (out of memory, a closed shell) cannot remove its own, so each folder is named after its
// host and process, and making a new one first removes those whose owner on this host has died.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

/** The prefixes this package makes folders under (mkdtemp adds six characters after the owner). */
const KINDS = [
  'distrifusion-weights',
  'distrifusion-packed',
  'distrifusion-bench',
  '.distrifusion-links',
] as const;
export type TempFolderKind = (typeof KINDS)[number];

const OWNED = new RegExp(
  `^(?:${KINDS.map((k) => k.replace('.', '\\.')).join('|')})-(.+)\\.(\\d+)-[A-Za-z0-9]{6}$`,
);

/** Parents swept by this process: a session makes a link folder each, so sweep once, not per session. */
const swept = new Set<string>();

function hostTag(): string {
  return hostname().replace(/[^A-Za-z0-9_]/g, '_') || 'host';
}

/** Whether a process with this pid exists (one of another user counts). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the folders in `parent` that a process of this host made and left behind when it died; those of
 * live processes, of other hosts (a shared /tmp) and anything else stay. Returns the names removed.
 */
export async function removeOrphanedTempFolders(parent: string): Promise<string[]> {
  const names = await readdir(parent).catch(() => [] as string[]);
  const host = hostTag();
  const removed: string[] = [];
  for (const name of names) {
    const m = OWNED.exec(name);
    if (!m || m[1] !== host || processExists(Number(m[2]))) continue;
    await rm(join(parent, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** A new folder in `parent`, named after this host and process; the first in a parent removes orphaned ones. */
export async function makeTempFolder(parent: string, kind: TempFolderKind): Promise<string> {
  if (!swept.has(parent)) {
    swept.add(parent);
    await removeOrphanedTempFolders(parent);
  }
  return mkdtemp(join(parent, `${kind}-${hostTag()}.${process.pid}-`));
}
