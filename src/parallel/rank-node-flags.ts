// V8 flags for processes that run CPU ranks. onnxruntime-node copies every output of every run into a new
// ArrayBuffer (even a preallocated one), and a patch rank's outputs are its fresh K/V and halo pieces: 1.6
// GiB a step for two SDXL ranks at 1024². That external memory triggers about 20 scavenges a step per rank,
// and V8's parallel GC helpers run them on every core, so one rank's collections take CPU from the rank
// computing on the other core. Measured at SDXL 512², two ranks: threads other than the ranks took 4.3% of
// the process's CPU during the patch row's steps, about 1% with single-threaded GC. V8 reads its flags at
// start-up (NODE_OPTIONS refuses this one), so they go on the command line of the process that holds ranks.

/** Collect garbage on the thread that made it, not on V8's helper threads. */
export const RANK_NODE_FLAGS: readonly string[] = ['--single-threaded-gc'];

/** A V8 flag's name without its `--` or `--no-`, spelled with dashes (V8 takes `_` for `-` too). */
function v8FlagName(arg: string): string {
  return arg
    .replace(/^--(no-)?/, '')
    .split('=')[0]!
    .replaceAll('_', '-');
}

/**
 * `execArgv` with RANK_NODE_FLAGS added, or undefined where nothing is to change: each flag already there
 * or negated by the user (`--no-single-threaded-gc`), or DISTRIFUSION_SINGLE_THREADED_GC=0.
 */
export function withRankNodeFlags(execArgv: readonly string[], env: NodeJS.ProcessEnv): string[] | undefined {
  if (env.DISTRIFUSION_SINGLE_THREADED_GC === '0') return undefined;
  const given = new Set(execArgv.filter((a) => a.startsWith('--')).map(v8FlagName));
  const missing = RANK_NODE_FLAGS.filter((f) => !given.has(v8FlagName(f)));
  return missing.length > 0 ? [...execArgv, ...missing] : undefined;
}
