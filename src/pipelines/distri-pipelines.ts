// DistriSDXLPipeline / DistriSDPipeline: the single-device pipelines with the UNet split across ranks by
// DistriFusion (or naive patches). Text encoding and the scheduler stay on the calling thread; every UNet
// call goes to the rank pool, and with splitVaeDecode the VAE decode to a second pool of as many ranks.
import { join } from 'node:path';
import type { Tensor } from '../io/tensor.js';
import { type DistriConfig, type DistriConfigInput, distriConfig } from '../parallel/config.js';
import type { RankPool, StepStats } from '../parallel/rank-pool.js';
import type { FaultInjection } from '../parallel/rank-worker.js';
import type { UNetCall, VaeDecodeCall } from './denoise.js';
import type { GenerateOptions, GenerateResult } from './generate-options.js';
import { StableDiffusionPipeline } from './stable-diffusion.js';
import { type PipelineOptions, StableDiffusionXLPipeline } from './stable-diffusion-xl.js';
import { launchUNetPool } from './unet-rank-program.js';
import { launchVaeDecodePool } from './vae-rank-program.js';

type BasePipeline = StableDiffusionXLPipeline | StableDiffusionPipeline;

export interface DistriPipelineOptions extends PipelineOptions {
  /** The VAE's folder, which DistriConfig.splitVaeDecode needs (fromPretrained sets it). */
  vaeDir?: string;
  /** Test hook: make one UNet rank fail. */
  fault?: FaultInjection;
}

abstract class DistriPipeline<P extends BasePipeline> {
  private pool: RankPool | undefined;
  private poolKey = '';
  private vaePool: RankPool | undefined;
  private vaePoolBatch = 0;
  private weights: { shared: boolean; nchwcBlock: number; packedGemm: boolean } | undefined;

  /** `config` already validated (distriConfig): validating it again would lose its per-rank devices. */
  protected constructor(
    readonly base: P,
    readonly config: DistriConfig,
    private readonly unetDir: string,
    private readonly options: DistriPipelineOptions,
  ) {
    if (config.splitVaeDecode && config.ranks > 1 && options.vaeDir === undefined) {
      throw new Error(
        'DistriConfig.splitVaeDecode: the ranks load the VAE from its folder, and none was given (pass options.vaeDir to fromPipeline)',
      );
    }
  }

  /**
   * How the running ranks hold the UNet weights: `shared` (one float32 copy mapped by every rank, CPU
   * ranks), the NCHWc block its conv filters are stored for (0: plain), and whether its linear weights come
   * with ORT's packed GEMM copies, mapped by every rank. Undefined before generate().
   */
  get weightSharing(): { shared: boolean; nchwcBlock: number; packedGemm: boolean } | undefined {
    return this.weights;
  }

  /** Per-step timings and exchange figures of the last generate() (one entry per denoising step). */
  get stats(): readonly StepStats[] {
    return this.pool?.stats ?? [];
  }

  /** The same figures for the split VAE decodes since the decode ranks started (one entry per decode). */
  get decodeStats(): readonly StepStats[] {
    return this.vaePool?.stats ?? [];
  }

  /** The split decode, when the config asks for it (the constructor checked that the VAE's folder is known). */
  private vaeDecodeCall(): VaeDecodeCall | undefined {
    const vaeDir = this.options.vaeDir;
    if (!this.config.splitVaeDecode || this.config.ranks < 2 || vaeDir === undefined) return undefined;
    return async (latents) => {
      const batch = latents.shape[0]!;
      if (!this.vaePool || this.vaePoolBatch !== batch) {
        await this.vaePool?.close();
        this.vaePool = undefined;
        this.vaePool = await launchVaeDecodePool(vaeDir, this.config, batch, {
          ...(this.options.variant ? { variant: this.options.variant } : {}),
        });
        this.vaePoolBatch = batch;
      }
      const out = await this.vaePool.step(this.vaePool.stats.length, { latents });
      return { data: out.data as Float32Array, shape: [...out.shape] } satisfies Tensor;
    };
  }

  private async poolFor(
    batch: number,
    cfg: boolean,
    latentHeight: number,
    latentWidth: number,
  ): Promise<RankPool> {
    const key = `${batch}:${cfg}`;
    if (this.pool && this.poolKey === key) return this.pool;
    await this.pool?.close();
    this.pool = undefined;
    const launched = await launchUNetPool(this.base.components.unet, this.unetDir, {
      config: this.config,
      classifierFreeGuidance: cfg,
      batch,
      latentHeight,
      latentWidth,
      ...(this.options.variant ? { variant: this.options.variant } : {}),
      ...(this.options.fault ? { fault: this.options.fault } : {}),
    });
    this.pool = launched.pool;
    this.poolKey = key;
    this.weights = {
      shared: launched.sharedWeights,
      nchwcBlock: launched.nchwcBlock,
      packedGemm: launched.packedGemm,
    };
    return this.pool;
  }

  /**
   * Generates with the DistriConfig's split. `warmupSteps` may be overridden per call: the compiled rank
   * graphs serve any warmup.
   */
  async generate(options: GenerateOptions & { warmupSteps?: number }): Promise<GenerateResult> {
    const c = this.config;
    const warmup = options.warmupSteps ?? c.warmupSteps;
    if (!Number.isInteger(warmup) || warmup < 0)
      throw new Error(`warmupSteps: expected an integer >= 0, got ${warmup}`);
    for (const k of ['height', 'width'] as const) {
      if (options[k] !== undefined && options[k] !== c[k]) {
        throw new Error(
          `${k}: this pipeline was configured for ${c[k]} px (DistriConfig.${k}); got ${options[k]}`,
        );
      }
    }
    const unet = this.base.components.unet;
    const f = this.base.components.vae.scaleFactor;
    const cfg = (options.guidanceScale ?? this.defaultGuidance) > 1;
    const call: UNetCall = async (step, inputs) => {
      const feeds = unet.feeds(inputs);
      const pool = await this.poolFor(inputs.sample.shape[0]!, cfg, c.height / f, c.width / f);
      if (step === 0) pool.stats.length = 0;
      const out = await pool.step(step, feeds, warmup);
      return { data: out.data as Float32Array, shape: [...out.shape] } satisfies Tensor;
    };
    const vaeDecode = this.vaeDecodeCall();
    return this.base.generate(
      { ...options, height: c.height, width: c.width },
      { unet: call, ...(vaeDecode ? { vaeDecode } : {}) },
    );
  }

  protected abstract get defaultGuidance(): number;

  /** Stops the ranks; the wrapped single-device pipeline stays usable. */
  async close(): Promise<void> {
    const pools = [this.pool, this.vaePool];
    this.pool = undefined;
    this.vaePool = undefined;
    await Promise.all(pools.map((p) => p?.close()));
  }

  async dispose(): Promise<void> {
    await this.close();
    await this.base.dispose();
  }
}

export class DistriSDXLPipeline extends DistriPipeline<StableDiffusionXLPipeline> {
  static async fromPretrained(
    dir: string,
    config: DistriConfigInput,
    options: DistriPipelineOptions = {},
  ): Promise<DistriSDXLPipeline> {
    const { fault: _f, vaeDir: _v, ...load } = options;
    // Checked before loading: a bad config then costs no load, and leaves no loaded model behind.
    const checked = distriConfig(config);
    const base = await StableDiffusionXLPipeline.fromPretrained(dir, load);
    return new DistriSDXLPipeline(base, checked, join(dir, 'unet'), { vaeDir: join(dir, 'vae'), ...options });
  }

  /** Wraps an already loaded pipeline whose UNet lives in `unetDir`. */
  static fromPipeline(
    base: StableDiffusionXLPipeline,
    unetDir: string,
    config: DistriConfigInput,
    options: DistriPipelineOptions = {},
  ) {
    return new DistriSDXLPipeline(base, distriConfig(config), unetDir, options);
  }

  protected get defaultGuidance(): number {
    return 5;
  }
}

export class DistriSDPipeline extends DistriPipeline<StableDiffusionPipeline> {
  static async fromPretrained(
    dir: string,
    config: DistriConfigInput,
    options: DistriPipelineOptions = {},
  ): Promise<DistriSDPipeline> {
    const { fault: _f, vaeDir: _v, ...load } = options;
    // Checked before loading: a bad config then costs no load, and leaves no loaded model behind.
    const checked = distriConfig(config);
    const base = await StableDiffusionPipeline.fromPretrained(dir, load);
    return new DistriSDPipeline(base, checked, join(dir, 'unet'), { vaeDir: join(dir, 'vae'), ...options });
  }

  static fromPipeline(
    base: StableDiffusionPipeline,
    unetDir: string,
    config: DistriConfigInput,
    options: DistriPipelineOptions = {},
  ) {
    return new DistriSDPipeline(base, distriConfig(config), unetDir, options);
  }

  protected get defaultGuidance(): number {
    return 7.5;
  }
}
