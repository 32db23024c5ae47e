import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fixture, repoRoot, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { decodePng, imageFromTensor, type RgbImage } from '../io/png.js';
import { readSafetensors } from '../io/safetensors.js';
import { RANK_MALLOC_TUNABLES } from '../parallel/malloc-tunables.js';
import { StableDiffusionPipeline } from '../pipelines/stable-diffusion.js';
import { StableDiffusionXLPipeline } from '../pipelines/stable-diffusion-xl.js';
import { parseGenerateArgs } from './generate-args.js';

let root: string;
let cache: string;
/** The first demo image (seed 1234, 3 steps), reused as the single-device reference. */
let demoImage: string | undefined;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'distrifusion-cli-'));
  cache = join(root, 'cache');
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', ...args],
      {
        cwd: repoRoot,
        env: { ...process.env, DISTRIFUSION_CACHE: cache, DISTRIFUSION_DEBUG: '', ...env },
        timeout: 180_000,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function ok(r: Run, what: string): Run {
  assert.equal(r.code, 0, `${what} failed (exit ${r.code}):\n${r.stderr}`);
  return r;
}

function png(path: string): RgbImage & { text: Record<string, string> } {
  return decodePng(readFileSync(path));
}

/** Pixels that differ, and by how much at most. */
function pixelDiff(a: RgbImage, b: RgbImage): { count: number; max: number } {
  assert.deepEqual([a.width, a.height], [b.width, b.height]);
  let count = 0;
  let max = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i]! - b.data[i]!);
    if (d > 0) count++;
    max = Math.max(max, d);
  }
  return { count, max };
}

const demo = (out: string, ...extra: string[]) => [
  'generate',
  '--prompt',
  'a lighthouse at dusk',
  '--steps',
  '3',
  '--seed',
  '1234',
  '--out',
  out,
  ...extra,
];

test('--help lists the generate flags; --version prints the package version', async () => {
  const help = ok(await cli(['generate', '--help']), 'generate --help');
  for (const flag of [
    '--prompt',
    '--model',
    '--negative-prompt',
    '--steps',
    '--guidance-scale',
    '--scheduler',
    '--height',
    '--width',
    '--seed',
    '--num-images',
    '--threads',
    '--device',
    '--variant',
    '--out',
    '--ranks',
    '--threads-per-rank',
    '--warmup-steps',
    '--sync-mode',
    '--parallelism',
    '--no-split-batch',
    '--split-vae-decode',
    '--split-scheme',
    '--output-type',
  ]) {
    assert.ok(help.stdout.includes(`${flag} `), `--help does not list ${flag}:\n${help.stdout}`);
  }
  assert.match(help.stdout, /corrected_async_gn\|stale_gn/);
  const top = ok(await cli(['--help']), '--help');
  assert.match(top.stdout, /generate/);
  assert.match(top.stdout, /bench/);
  const version = ok(await cli(['--version']), '--version');
  const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8'));
  assert.equal(version.stdout.trim(), pkg.version);
});

test("the README's CLI section shows `generate --help` as the command prints it", async () => {
  const help = ok(await cli(['generate', '--help']), 'generate --help').stdout.trim();
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  const start = readme.indexOf('Usage: distrifusion generate');
  assert.ok(start >= 0, 'README.md has no `generate --help` block');
  assert.equal(readme.slice(start, readme.indexOf('```', start)).trim(), help);
});

test("the README's `npx distrifusion` runs the built command (npm ci builds it; the bin must be executable)", async () => {
  const run = await new Promise<Run>((resolve) => {
    execFile('npx', ['--no-install', 'distrifusion', '--version'], { cwd: repoRoot }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
  const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8'));
  assert.equal(run.code, 0, `npx distrifusion --version failed (run npm run build first):\n${run.stderr}`);
  assert.equal(run.stdout.trim(), pkg.version);
});

test("on Linux the command runs again with the ranks' malloc tunables, once, unless told not to", {
  skip: process.platform !== 'linux',
}, async () => {
  const env = { GLIBC_TUNABLES: '', DISTRIFUSION_DEBUG: '1' };
  const relaunched = ok(await cli(['--version'], env), '--version');
  assert.equal(relaunched.stderr, `distrifusion: relaunching with GLIBC_TUNABLES=${RANK_MALLOC_TUNABLES}\n`);
  assert.equal(relaunched.stdout.trim().split('\n').length, 1);
  const usage = await cli(['generate'], env);
  assert.equal(usage.code, 1, 'the exit code of the relaunched command');
  const off = ok(await cli(['--version'], { ...env, DISTRIFUSION_MALLOC_TUNABLES: '0' }), '--version');
  assert.equal(off.stderr, '');
});

test('the demo model: a PNG with the A1111 parameters; the same seed gives the same pixels', async () => {
  const a = join(root, 'a.png');
  const r = ok(await cli(demo(a)), 'demo generation');
  assert.match(r.stderr, /demo model/);
  assert.match(r.stderr, /--model/);
  assert.match(r.stderr, /stable-diffusion-xl-base-1\.0/);
  assert.equal(r.stdout.trim(), a);
  const img = png(a);
  demoImage = a;
  assert.deepEqual([img.width, img.height], [256, 256]);
  const p = img.text.parameters!;
  assert.ok(p.startsWith('a lighthouse at dusk\n'), p);
  assert.match(
    p,
    /Steps: 3, Sampler: Euler, CFG scale: 5, Seed: 1234, Size: 256x256, Model: distrifusion-demo-sdxl-v1/,
  );
  const pixels = new Set(img.data);
  assert.ok(pixels.size > 50, `only ${pixels.size} distinct byte values: a flat image`);

  const b = join(root, 'b.png');
  ok(await cli(demo(b)), 'second demo generation');
  assert.deepEqual(pixelDiff(img, png(b)), { count: 0, max: 0 });

  // Another seed, two images, a smaller size: other pixels, numbered files, batch fields.
  const c = join(root, 'c.png');
  const multi = ok(
    await cli([...demo(c, '--num-images', '2', '--height', '128', '--width', '96'), '--seed', '99']),
    'two images',
  );
  const [c0, c1] = [png(join(root, 'c-0.png')), png(join(root, 'c-1.png'))];
  assert.equal(existsSync(c), false);
  assert.deepEqual(multi.stdout.trim().split('\n'), [join(root, 'c-0.png'), join(root, 'c-1.png')]);
  assert.deepEqual([c0.width, c0.height], [96, 128]);
  assert.ok(pixelDiff(c0, c1).count > 0, 'the two images of a batch are identical');
  assert.match(c1.text.parameters!, /Seed: 99, Size: 96x128, .*Batch size: 2, Batch pos: 1/);
});

test('--ranks 2 --sync-mode full_sync gives the single-device pixels', async () => {
  let single = demoImage;
  if (!single) {
    single = join(root, 'single.png');
    ok(await cli(demo(single)), 'single-device run');
  }
  const distributed = join(root, 'ranks2.png');
  const r = ok(await cli(demo(distributed, '--ranks', '2', '--sync-mode', 'full_sync')), 'distributed run');
  assert.match(r.stderr, /rank +sync step ms/);
  const d = pixelDiff(png(single), png(distributed));
  // Float summation order may move a pixel by one step of 1/255; a broken split moves most of them.
  assert.ok(d.max <= 1 && d.count < 100, `distributed pixels differ: ${JSON.stringify(d)}`);
  assert.match(png(distributed).text.parameters!, /DistriFusion: "ranks=2, mode=full_sync, warmup=4"/);
  const splitDecode = join(root, 'ranks2-split-decode.png');
  const rs = ok(
    await cli(demo(splitDecode, '--ranks', '2', '--sync-mode', 'full_sync', '--split-vae-decode')),
    'distributed run with the VAE decode split',
  );
  assert.match(rs.stderr, /VAE decode split across 2 ranks: [\d.]+ s; rank 0 /);
  assert.doesNotMatch(r.stderr, /VAE decode split/);
  const s = pixelDiff(png(single), png(splitDecode));
  assert.ok(s.max <= 1 && s.count < 100, `pixels with the split decode differ: ${JSON.stringify(s)}`);
});

test('patches without the CFG split (--no-split-batch) match too; --output-type latent writes safetensors', async () => {
  const single = join(root, 'single.safetensors');
  const distributed = join(root, 'patches.safetensors');
  const latent = ['--output-type', 'latent', '--height', '128', '--width', '128'];
  ok(await cli(demo(single, ...latent)), 'single-device latents');
  ok(
    await cli(demo(distributed, ...latent, '--ranks', '2', '--sync-mode', 'full_sync', '--no-split-batch')),
    'patch-parallel latents',
  );
  const a = (await readSafetensors(single)).latents!;
  const b = (await readSafetensors(distributed)).latents!;
  assert.deepEqual(a.shape, [1, 4, 16, 16]);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.data.length; i++) {
    num += (Number(a.data[i]) - Number(b.data[i])) ** 2;
    den += Number(a.data[i]) ** 2;
  }
  assert.ok(Math.sqrt(num / den) < 1e-5, `rel L2 ${Math.sqrt(num / den)}`);
});

test('--model sdxl-tiny matches the library pipeline for the same prompt, negative prompt and seed', {
  skip: skipWithoutFixtures,
}, async () => {
  const out = join(root, 'tiny.png');
  const model = fixture('sdxl-tiny');
  const args = [
    '--prompt',
    'a red cube',
    '--negative-prompt',
    'blurry',
    '--steps',
    '2',
    '--seed',
    '7',
    '--threads',
    '1',
  ];
  const r = ok(await cli(['generate', '--model', model, ...args, '--out', out]), 'sdxl-tiny run');
  assert.doesNotMatch(r.stderr, /demo model/);
  const img = png(out);
  assert.match(
    img.text.parameters!,
    /^a red cube\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, CFG scale: 5, Seed: 7, Size: 64x64, Model: sdxl-tiny$/,
  );
  const pipe = await StableDiffusionXLPipeline.fromPretrained(model, { threads: 1 });
  try {
    const ref = await pipe.generate({
      prompt: 'a red cube',
      negativePrompt: 'blurry',
      numInferenceSteps: 2,
      seed: 7,
    });
    assert.deepEqual(pixelDiff(img, imageFromTensor(ref.images!, 0)), { count: 0, max: 0 });
  } finally {
    await pipe.dispose();
  }
});

test("an SD 1.x folder runs DistriSDPipeline (CFG 7.5, the config's PNDM) and matches the library pipeline", {
  skip: skipWithoutFixtures,
}, async () => {
  // SD 1.5's real model_index.json and scheduler config around the tiny SD UNet and the SDXL fixture's VAE,
  // text encoder and tokenizer (the pipeline-sd15-tiny combination).
  const sd = join(root, 'sd15-tiny');
  await mkdir(join(sd, 'scheduler'), { recursive: true });
  const real = fixture('configs', 'stable-diffusion-v1-5');
  await writeFile(join(sd, 'model_index.json'), await readFile(join(real, 'model_index.json')));
  await writeFile(
    join(sd, 'scheduler', 'scheduler_config.json'),
    await readFile(join(real, 'scheduler', 'scheduler_config.json')),
  );
  await symlink(fixture('unet-sd15-tiny', 'unet'), join(sd, 'unet'));
  for (const c of ['vae', 'text_encoder', 'tokenizer']) await symlink(fixture('sdxl-tiny', c), join(sd, c));
  const out = join(root, 'sd.png');
  const args = [
    '--prompt',
    'a red cube',
    '--steps',
    '2',
    '--seed',
    '7',
    '--ranks',
    '2',
    '--sync-mode',
    'full_sync',
  ];
  ok(await cli(['generate', '--model', sd, ...args, '--out', out]), 'SD run');
  const img = png(out);
  assert.match(
    img.text.parameters!,
    /^a red cube\nSteps: 2, Sampler: PLMS, CFG scale: 7\.5, Seed: 7, Size: \d+x\d+, Model: sd15-tiny, DistriFusion: /,
  );
  const pipe = await StableDiffusionPipeline.fromPretrained(sd, { threads: 1 });
  try {
    const ref = await pipe.generate({ prompt: 'a red cube', numInferenceSteps: 2, seed: 7 });
    const d = pixelDiff(img, imageFromTensor(ref.images!, 0));
    assert.ok(d.max <= 1 && d.count < 20, `SD pixels differ from the library pipeline: ${JSON.stringify(d)}`);
  } finally {
    await pipe.dispose();
  }
});

test('bad flags exit non-zero naming the flag, print no stack, and write nothing', async () => {
  const outDir = join(root, 'bad');
  await mkdir(outDir);
  const flux = join(root, 'flux');
  await mkdir(flux);
  await writeFile(join(flux, 'model_index.json'), '{"_class_name": "FluxPipeline"}');
  const badCache = join(root, 'bad-cache');
  const out = join(outDir, 'x.png');
  const cases: Array<[string[], RegExp]> = [
    [['--prompt', 'p', '--steps', '0', '--out', out], /--steps: expected an integer >= 1, got "0"/],
    [
      ['--prompt', 'p', '--sync-mode', 'bogus', '--out', out],
      /--sync-mode: expected one of corrected_async_gn, .*full_sync.*, got "bogus"/,
    ],
    [['--prompt', 'p', '--height', '100', '--out', out], /--height: expected a multiple of 8.*got "100"/],
    [
      ['--prompt', 'p', '--ranks', '2', '--low-memory', 'lots', '--out', out],
      /--low-memory: expected no value, or the MiB of K\/V one segment may hold \(>= 0\), got "lots"/,
    ],
    [['--out', out], /--prompt/],
    [['--prompt', 'p', '--out', join(root, 'missing', 'x.png')], /--out: folder .*missing does not exist/],
    [['--prompt', 'p', '--out', join(outDir, 'x.jpg')], /--out: expected a file name ending in \.png/],
    [
      ['--prompt', 'p', '--model', flux, '--out', out],
      /model_index\.json: _class_name "FluxPipeline" is not supported; expected StableDiffusionXLPipeline or StableDiffusionPipeline/,
    ],
  ];
  const runs = await Promise.all(
    cases.map(([args]) => cli(['generate', ...args], { DISTRIFUSION_CACHE: badCache })),
  );
  runs.forEach((r, i) => {
    const [args, message] = cases[i]!;
    assert.notEqual(r.code, 0, `${args.join(' ')} succeeded`);
    assert.match(r.stderr, /^distrifusion: /, r.stderr);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, `stack trace printed for ${args.join(' ')}`);
    assert.equal(r.stdout, '');
  });
  assert.deepEqual(await readdir(outDir), []);
  assert.equal(existsSync(badCache), false, 'a bad flag still created the model cache');
});

test('--low-memory alone takes the default segment size; --low-memory MIB sets it, in bytes', () => {
  const parse = (extra: Record<string, unknown>) =>
    parseGenerateArgs({ prompt: 'p', ranks: '2', ...extra }).distri!;
  assert.equal(parse({}).lowMemory, false);
  const on = parse({ lowMemory: true });
  assert.equal(on.lowMemory, true);
  assert.equal(on.lowMemorySegmentBytes, undefined);
  assert.equal(parse({ lowMemory: '64' }).lowMemorySegmentBytes, 64 * 2 ** 20);
  assert.equal(parse({ lowMemory: '0' }).lowMemorySegmentBytes, 0);
  assert.equal(parse({ lowMemory: '0.5' }).lowMemorySegmentBytes, 2 ** 19);
  assert.throws(() => parse({ lowMemory: '-1' }), /--low-memory: expected no value, or the MiB/);
  // It asks for ranks' settings even with one rank, as the other rank flags do.
  assert.equal(parseGenerateArgs({ prompt: 'p', lowMemory: true }).distri?.lowMemory, true);
});
