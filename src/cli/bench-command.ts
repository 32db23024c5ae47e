// `distrifusion bench unet`, `bench patch`, `bench vae` and `bench profile`: tables on stdout, progress on
// stderr, JSON on request.
import { mkdir, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { WeightOptions } from '../bench/bench-models.js';
import { profileTable, readProfiles } from '../bench/ort-profile.js';
import { patchTable, runPatchBench } from '../bench/patch-bench.js';
import { isPresetName } from '../bench/presets.js';
import { parseIntList, parseNameList } from '../bench/table.js';
import { runUnetBench, unetTable } from '../bench/unet-bench.js';
import { runVaeBench, vaeTable } from '../bench/vae-bench.js';
import { PARALLELISMS, SYNC_MODES } from '../parallel/config.js';
import { mebibytesToBytes } from './generate-args.js';

const OPTIMIZATION_LEVELS = ['disabled', 'basic', 'extended', 'all'] as const;

interface CommonFlags {
  dtype: string;
  seed: string;
  weightsCache?: string;
  isolate: boolean;
  json?: string;
  height?: string;
  width?: string;
}

interface UnetFlags extends CommonFlags {
  models: string;
  threads: string;
  repeats: string;
  batch?: string;
  convReference: boolean;
  prepacking: boolean;
  weightLoading: string;
  optimization: string;
}

/** The flags addModelAndRanks adds. */
interface ModelAndRanksFlags {
  model?: string;
  config?: string;
  preset?: string;
  ranks: string;
  threadsPerRank: string;
}

interface PatchFlags extends CommonFlags, ModelAndRanksFlags {
  parallelism: string;
  syncMode: string;
  splitBatch: string;
  lowMemory: string;
  steps: string;
  warmupSteps: string;
  prime: boolean;
  timeoutMs: string;
  rounds: string;
  ortProfile?: string;
  shareWeights: string;
  nchwcWeights: string;
  packedGemm: string;
  baselines: boolean;
}

interface VaeFlags extends CommonFlags, ModelAndRanksFlags {
  batch: string;
  repeats: string;
  timeoutMs: string;
  baselines: boolean;
}

/** --model, --config or --preset (at most one; sd15 by default). */
function modelSpec(command: string, f: ModelAndRanksFlags): string {
  const given = [f.model, f.config, f.preset].filter((v) => v !== undefined);
  if (given.length > 1) throw new Error(`bench ${command}: give one of --model, --config and --preset`);
  if (f.preset !== undefined && !isPresetName(f.preset))
    throw new Error(`--preset: expected sd15 or sdxl, got '${f.preset}'`);
  return f.model ?? f.config ?? f.preset ?? 'sd15';
}

function int(flag: string, value: string | undefined, min = 1): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${flag}: expected an integer >= ${min}, got '${value}'`);
  return n;
}

/** --low-memory: off, on (the default segment size) or a segment size in MiB, one row each. */
function parseLowMemoryList(value: string): Array<false | number | undefined> {
  return value.split(',').map((raw) => {
    const s = raw.trim();
    if (s === 'off') return false;
    if (s === 'on') return undefined;
    const bytes = mebibytesToBytes(s);
    if (bytes === undefined) throw new Error(`--low-memory: '${s}' is not off, on or a size in MiB (>= 0)`);
    return bytes;
  });
}

function weightOptions(f: CommonFlags): WeightOptions {
  const dtype = f.dtype.toUpperCase();
  if (dtype !== 'F32' && dtype !== 'F16') throw new Error(`--dtype: expected f32 or f16, got '${f.dtype}'`);
  return { dtype, seed: int('--seed', f.seed, 0)!, ...(f.weightsCache ? { cacheDir: f.weightsCache } : {}) };
}

function size(f: CommonFlags): { height?: number; width?: number } {
  const height = int('--height', f.height);
  const width = int('--width', f.width);
  return { ...(height ? { height } : {}), ...(width ? { width } : {}) };
}

/** Where the command writes: the table to `out`, progress to `err` (tests capture both). */
export interface BenchIO {
  out(text: string): void;
  err(text: string): void;
}

const STDIO: BenchIO = { out: (t) => void process.stdout.write(t), err: (t) => void process.stderr.write(t) };

function progressTo(io: BenchIO): (message: string) => void {
  const started = Date.now();
  return (message) => io.err(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${message}\n`);
}

async function finish(
  io: BenchIO,
  table: string,
  report: { rows: Array<{ ok: boolean }> },
  json: string | undefined,
): Promise<void> {
  io.out(`\n${table}\n`);
  if (json) {
    await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
    io.err(`wrote ${json}\n`);
  }
  if (report.rows.some((r) => !r.ok)) process.exitCode = 1;
}

/** The model (--model, --config or --preset) and the ranks of `bench patch` and `bench vae`. */
function addModelAndRanks(c: Command, what: 'UNet' | 'VAE'): Command {
  return c
    .option('--model <dir>', `a diffusers ${what} folder (its own weights)`)
    .option('--config <file>', `a ${what} config.json (random weights)`)
    .option(
      '--preset <name>',
      `sd15 or sdxl (random weights for the real ${what} config; the default is sd15)`,
    )
    .option('--ranks <list>', 'rank counts', '1,2')
    .option('--threads-per-rank <n>', 'intra-op threads of each rank', '1');
}

function addCommon(c: Command): Command {
  return c
    .option(
      '--height <px>',
      "image height in pixels (default: the model's size: a UNet's sample_size × 8, a VAE's sample_size)",
    )
    .option('--width <px>', 'image width in pixels')
    .option('--dtype <dtype>', 'storage dtype of random weights: f32 (no Cast at load) or f16', 'f32')
    .option('--seed <n>', 'seed of the random weights', '0')
    .option('--weights-cache <dir>', 'keep random weights in this folder and reuse them (default: temporary)')
    .option('--no-isolate', 'run every row in this process (peak RSS then accumulates over rows)')
    .option('--json <file>', 'also write the report as JSON');
}

/** Registers `distrifusion bench unet`, `bench patch`, `bench vae` and `bench profile`. */
export function registerBenchCommand(program: Command, io: BenchIO = STDIO): void {
  const bench = program
    .command('bench')
    .description(
      'benchmarks: whole-UNet FLOP rate (unet), DistriFusion splits (patch), the split VAE decode (vae), ORT profiles by operator (profile)',
    );

  addCommon(
    bench
      .command('unet')
      .description(
        'ms per UNet forward, counted FLOPs and GFLOP/s per thread count, against one large 3x3 conv',
      )
      .option('--models <list>', 'sd15, sdxl, UNet config.json paths or UNet folders', 'sd15,sdxl')
      .option('--threads <list>', 'intra-op thread counts, one row each', '1,2')
      .option('--repeats <n>', 'timed forwards after one warm-up (the median is reported)', '3')
      .option('--batch <n>', 'UNet batch (default: 2 for sd15, 1 for sdxl and configs)')
      .option('--no-conv-reference', 'skip the reference conv')
      .option('--no-prepacking', 'disable ORT weight prepacking')
      .option('--optimization <level>', `ORT graph optimisation: ${OPTIMIZATION_LEVELS.join(', ')}`, 'all')
      .option(
        '--weight-loading <mode>',
        'mmap (sessions map the safetensors file) or memory (buffers ORT copies)',
        'mmap',
      ),
  ).action(async (f: UnetFlags) => {
    const progress = progressTo(io);
    const batch = int('--batch', f.batch);
    const report = await runUnetBench(
      {
        models: f.models.split(',').map((s) => s.trim()),
        threads: parseIntList('--threads', f.threads),
        repeats: int('--repeats', f.repeats)!,
        ...size(f),
        ...(batch ? { batch } : {}),
        weights: weightOptions(f),
        isolate: f.isolate,
        convReference: f.convReference,
        prepacking: f.prepacking,
        optimization: parseNameList('--optimization', f.optimization, OPTIMIZATION_LEVELS)[0]!,
        weightLoading: parseNameList('--weight-loading', f.weightLoading, ['mmap', 'memory'] as const)[0]!,
      },
      progress,
    );
    await finish(io, unetTable(report), report, f.json);
  });

  addCommon(
    addModelAndRanks(
      bench
        .command('patch')
        .description(
          'DistriFusion on worker-thread ranks against one rank: step times, speedups, exchange, RSS',
        ),
      'UNet',
    )
      .option('--parallelism <list>', `of ${PARALLELISMS.join(', ')}`, 'patch,naive_patch')
      .option('--sync-mode <list>', `GroupNorm sync modes, of ${SYNC_MODES.join(', ')}`, 'corrected_async_gn')
      .option('--split-batch <list>', 'split the CFG batch across rank groups: off, on or on,off', 'off')
      .option(
        '--low-memory <list>',
        'cut the asynchronous graph at self-attentions (DistriConfig.lowMemory), a list of off, on, or the MiB of K/V a segment may hold (lowMemorySegmentBytes; 0: a cut at every self-attention)',
        'off',
      )
      .option('--steps <n>', 'timed denoising steps per configuration', '4')
      .option('--warmup-steps <n>', 'synchronous steps before the async ones (warmup + 1 of them)', '1')
      .option('--no-prime', 'do not run each graph once before timing')
      .option('--no-baselines', 'skip the 1 rank × 1 thread and 1 rank × N threads rows (no speedups then)')
      .option(
        '--share-weights <mode>',
        'ranks map one shared float32 weight copy: auto (several CPU ranks), on or off',
        'auto',
      )
      .option(
        '--nchwc-weights <on|off>',
        "shared conv filters are stored reordered for ORT's NCHWc kernel, where the CPU has it",
        'on',
      )
      .option(
        '--packed-gemm <on|off>',
        "shared linear weights come with ORT's packed GEMM copies (packed once, mapped by every rank)",
        'on',
      )
      .option(
        '--rounds <n>',
        'run the whole list of rows this many times in turn; each row is summarised over all its steps',
        '1',
      )
      .option(
        '--ort-profile <dir>',
        "write ORT's per-node profile of every session here (see bench profile); ORT holds each session's events in memory until it ends, GBs for rows of many segments (synchronous steps, --low-memory 0), which then run short of memory and slow down",
      )
      .option('--timeout-ms <ms>', 'longest wait for a rank', '1800000'),
  ).action(async (f: PatchFlags) => {
    const progress = progressTo(io);
    const model = modelSpec('patch', f);
    const steps = int('--steps', f.steps)!;
    const warmupSteps = int('--warmup-steps', f.warmupSteps, 0)!;
    if (steps <= warmupSteps + 1)
      throw new Error(
        `--steps ${steps} with --warmup-steps ${warmupSteps} times no asynchronous step (steps 0…${warmupSteps} are synchronous): give --steps >= ${warmupSteps + 2}`,
      );
    if (f.ortProfile) await mkdir(f.ortProfile, { recursive: true });
    const report = await runPatchBench(
      {
        model,
        ranks: parseIntList('--ranks', f.ranks),
        threadsPerRank: int('--threads-per-rank', f.threadsPerRank)!,
        parallelism: parseNameList('--parallelism', f.parallelism, PARALLELISMS),
        modes: parseNameList('--sync-mode', f.syncMode, SYNC_MODES),
        splitBatch: parseNameList('--split-batch', f.splitBatch, ['on', 'off'] as const).map(
          (v) => v === 'on',
        ),
        lowMemory: parseLowMemoryList(f.lowMemory),
        ...size(f),
        steps,
        warmupSteps,
        prime: f.prime,
        timeoutMs: int('--timeout-ms', f.timeoutMs)!,
        baselines: f.baselines,
        shareWeights: parseNameList('--share-weights', f.shareWeights, ['auto', 'on', 'off'] as const)[0]!,
        nchwcWeights: parseNameList('--nchwc-weights', f.nchwcWeights, ['on', 'off'] as const)[0] === 'on',
        packedGemm: parseNameList('--packed-gemm', f.packedGemm, ['on', 'off'] as const)[0] === 'on',
        weights: weightOptions(f),
        isolate: f.isolate,
        rounds: int('--rounds', f.rounds)!,
        ...(f.ortProfile ? { ortProfileDir: f.ortProfile } : {}),
      },
      progress,
    );
    io.out(
      `\n${report.model} ${report.height}x${report.width}, batch 2 (CFG), ${(report.flopsPerStep / 1e9).toFixed(1)} GFLOP per step${
        (report.options.rounds ?? 1) > 1 ? `, ${report.options.rounds} rounds of every row` : ''
      }\n`,
    );
    await finish(io, patchTable(report), report, f.json);
  });

  addCommon(
    addModelAndRanks(
      bench
        .command('vae')
        .description(
          'the VAE decode split in row bands across ranks (splitVaeDecode) against one rank: ms per decode, speedups, exchange, RSS',
        ),
      'VAE',
    )
      .option('--batch <n>', 'images decoded at once', '1')
      .option('--repeats <n>', 'timed decodes after one untimed (the median is reported)', '3')
      .option('--no-baselines', 'skip the 1 rank × 1 thread and 1 rank × N threads rows (no speedups then)')
      .option('--timeout-ms <ms>', 'longest wait for a rank', '1800000'),
  ).action(async (f: VaeFlags) => {
    const progress = progressTo(io);
    const report = await runVaeBench(
      {
        model: modelSpec('vae', f),
        ranks: parseIntList('--ranks', f.ranks),
        threadsPerRank: int('--threads-per-rank', f.threadsPerRank)!,
        ...size(f),
        batch: int('--batch', f.batch)!,
        repeats: int('--repeats', f.repeats)!,
        timeoutMs: int('--timeout-ms', f.timeoutMs)!,
        baselines: f.baselines,
        weights: weightOptions(f),
        isolate: f.isolate,
      },
      progress,
    );
    io.out(`\n${report.model} VAE decode, ${report.height}x${report.width}, batch ${report.options.batch}\n`);
    await finish(io, vaeTable(report), report, f.json);
  });

  bench
    .command('profile')
    .description(
      "sum ORT profiles (bench patch --ort-profile) by operator over each session's last run, one column per graph",
    )
    .argument('<files...>', 'profile JSON files; segments of one graph (-sNNN) are added up')
    .option('--top <n>', 'operators to list', '24')
    .action(async (files: string[], f: { top: string }) => {
      io.out(`${profileTable(await readProfiles(files), int('--top', f.top))}\n`);
    });
}
