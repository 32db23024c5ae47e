// glibc malloc settings for CPU ranks. Segment sessions run without ORT's memory arena (a private arena per
// session would hold every segment's peak at once), so each operator's output is a fresh malloc. glibc
// serves large blocks (above its mmap threshold, at most 32 MiB) and those a worker thread's 64 MiB heap
// cannot hold with a new mmap: zero-filled pages faulted in on every run and unmapped after it. Measured on SDXL 1024², two
// ranks: 25 M minor faults and 4% of the CPU in the kernel over one bench row; with these settings 3.5 M
// and 0.5%. One heap that grows by brk and keeps what is freed serves the next step's same-sized blocks.
// They must be in the environment when the process starts: glibc reads them once, before any code runs.

/**
 * One malloc arena, no mmap-served blocks, never hand freed memory back, grow 64 MiB at a time, and
 * transparent huge pages for the heap (where THP is in 'madvise' mode, as on Debian; glibc >= 2.35, older
 * ones ignore it). A first touch costs about 25 us per 4 KiB page on the VMs we measured: with 2 MiB pages
 * SD 1.5 512² bench rows launched in 5-17 s against 21-37 s, and one SDXL 1024² two-rank run copied its
 * exchange data in half the time.
 */
export const RANK_MALLOC_TUNABLES = [
  'glibc.malloc.arena_max=1',
  'glibc.malloc.mmap_max=0',
  `glibc.malloc.trim_threshold=${2 ** 40}`,
  `glibc.malloc.top_pad=${64 * 2 ** 20}`,
  'glibc.malloc.hugetlb=1',
].join(':');

/** Whether GLIBC_TUNABLES already sets any malloc tunable (the user's choice then stands). */
function hasMallocTunables(env: NodeJS.ProcessEnv): boolean {
  return (env.GLIBC_TUNABLES ?? '').split(':').some((t) => t.startsWith('glibc.malloc.'));
}

/**
 * `env` with RANK_MALLOC_TUNABLES added to GLIBC_TUNABLES, or undefined where nothing is to change: not
 * Linux, malloc tunables already set, or DISTRIFUSION_MALLOC_TUNABLES=0.
 */
export function withRankMallocTunables(
  env: NodeJS.ProcessEnv,
  platform: NodeJS.Platform = process.platform,
): NodeJS.ProcessEnv | undefined {
  if (platform !== 'linux' || env.DISTRIFUSION_MALLOC_TUNABLES === '0' || hasMallocTunables(env)) {
    return undefined;
  }
  const tunables = [env.GLIBC_TUNABLES, RANK_MALLOC_TUNABLES].filter((t) => t).join(':');
  return { ...env, GLIBC_TUNABLES: tunables };
}
