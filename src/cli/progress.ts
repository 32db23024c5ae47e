// Progress of the denoising loop on stderr: a cli-progress bar on a terminal, one line per step otherwise
// (logs and pipes), and the per-rank step times of a distributed run.
import cliProgress from 'cli-progress';
import type { StepStats } from '../parallel/rank-pool.js';

export interface StepReporter {
  /** After step `step` (0-based) of `steps` took `ms`. */
  step(step: number, steps: number, ms: number): void;
  stop(): void;
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(3);
}

export function stepReporter(stream: NodeJS.WriteStream, total: number): StepReporter {
  const times: number[] = [];
  if (!stream.isTTY) {
    return {
      step(step, steps, ms) {
        times.push(ms);
        const mean = times.reduce((a, b) => a + b, 0) / times.length;
        const eta = (mean * (steps - step - 1)) / 1000;
        stream.write(`step ${step + 1}/${steps}  ${seconds(ms)} s/step  ETA ${eta.toFixed(1)} s\n`);
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: 'denoise |{bar}| {value}/{total} steps | {perStep} s/step | ETA {eta_formatted}',
      hideCursor: true,
      etaBuffer: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { perStep: '-' });
  return {
    step(step, _steps, ms) {
      bar.update(step + 1, { perStep: seconds(ms) });
    },
    stop() {
      bar.stop();
    },
  };
}

/** Mean of the values, or undefined for none. */
function mean(xs: number[]): number | undefined {
  return xs.length === 0 ? undefined : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** A short table: per rank, mean step time over synchronous and asynchronous steps, mean wait, data sent. */
/** One split VAE decode: its time, and each rank's time, waits and bytes sent. */
export function splitDecodeLine(s: StepStats): string {
  const per = s.perRank
    .map(
      (r) =>
        `rank ${r.rank} ${(r.ms / 1000).toFixed(2)} s (wait ${(r.waitMs / 1000).toFixed(2)} s, sent ${(r.bytesPublished / 1e6).toFixed(1)} MB)`,
    )
    .join(', ');
  return `VAE decode split across ${s.perRank.length} ranks: ${(s.ms / 1000).toFixed(2)} s; ${per}`;
}

export function rankTable(stats: readonly StepStats[]): string {
  const ranks = new Map<number, { sync: number[]; async: number[]; wait: number[]; bytes: number }>();
  for (const s of stats) {
    for (const r of s.perRank) {
      const e = ranks.get(r.rank) ?? { sync: [], async: [], wait: [], bytes: 0 };
      (s.sync ? e.sync : e.async).push(r.ms);
      e.wait.push(r.waitMs);
      e.bytes += r.bytesPublished;
      ranks.set(r.rank, e);
    }
  }
  const ms = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(1));
  const head = ['rank', 'sync step ms', 'async step ms', 'wait ms', 'sent MB'];
  const rows = [...ranks.entries()]
    .sort(([a], [b]) => a - b)
    .map(([rank, e]) => [
      String(rank),
      ms(mean(e.sync)),
      ms(mean(e.async)),
      ms(mean(e.wait)),
      (e.bytes / 1e6).toFixed(2),
    ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => c.padStart(widths[i]!)).join('  ');
  return [fmt(head), ...rows.map(fmt)].join('\n');
}
