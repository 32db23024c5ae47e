import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { CLIPTokenizer } from '../models/clip-tokenizer.js';
import { DEMO_MODEL_FORMAT, defaultCacheDir, ensureDemoModel } from './demo-model.js';
import { StableDiffusionXLPipeline } from './stable-diffusion-xl.js';

let root: string;
let dir: string;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'distrifusion-demo-'));
  dir = await ensureDemoModel({ cacheDir: join(root, 'a') });
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function listFiles(base: string): Promise<string[]> {
  const entries = await readdir(base, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(base, join(e.parentPath, e.name)))
    .sort();
}

test('the demo model lands in <cache>/<format> in the diffusers layout, with no temporary folders left', async () => {
  assert.equal(dir, join(root, 'a', DEMO_MODEL_FORMAT));
  assert.deepEqual(await readdir(join(root, 'a')), [DEMO_MODEL_FORMAT]);
  const files = await listFiles(dir);
  for (const f of [
    'model_index.json',
    'scheduler/scheduler_config.json',
    'unet/config.json',
    'unet/diffusion_pytorch_model.safetensors',
    'vae/config.json',
    'vae/diffusion_pytorch_model.safetensors',
    'text_encoder/config.json',
    'text_encoder/model.safetensors',
    'text_encoder_2/config.json',
    'text_encoder_2/model.safetensors',
    ...['tokenizer', 'tokenizer_2'].flatMap((t) =>
      ['merges.txt', 'special_tokens_map.json', 'tokenizer_config.json', 'vocab.json'].map(
        (f) => `${t}/${f}`,
      ),
    ),
  ]) {
    assert.ok(files.includes(f), `missing ${f}; have ${files.join(', ')}`);
  }
  const index = JSON.parse(await readFile(join(dir, 'model_index.json'), 'utf8'));
  assert.equal(index._class_name, 'StableDiffusionXLPipeline');
  assert.equal(index.force_zeros_for_empty_prompt, true);
});

test('generating again into another cache gives byte-identical files', async () => {
  const again = await ensureDemoModel({ cacheDir: join(root, 'b') });
  const a = await listFiles(dir);
  assert.deepEqual(await listFiles(again), a);
  for (const f of a) {
    const [x, y] = await Promise.all([readFile(join(dir, f)), readFile(join(again, f))]);
    assert.ok(x.equals(y), `${f} differs between two generations`);
  }
});

test('an existing complete model is reused, not rewritten', async () => {
  const weights = join(dir, 'unet', 'diffusion_pytorch_model.safetensors');
  const before = await stat(weights);
  assert.equal(await ensureDemoModel({ cacheDir: join(root, 'a') }), dir);
  assert.equal((await stat(weights)).mtimeMs, before.mtimeMs);
});

test('concurrent first uses both get a complete model; an incomplete folder is replaced', async () => {
  const cache = join(root, 'race');
  const [x, y] = await Promise.all([
    ensureDemoModel({ cacheDir: cache }),
    ensureDemoModel({ cacheDir: cache }),
  ]);
  assert.equal(x, y);
  assert.deepEqual(await readdir(cache), [DEMO_MODEL_FORMAT]);
  assert.deepEqual(await listFiles(x), await listFiles(dir));

  // A crash of older code, or a user's tinkering, leaves a folder without the completion marker.
  const broken = join(root, 'broken');
  await mkdir(join(broken, DEMO_MODEL_FORMAT, 'unet'), { recursive: true });
  await writeFile(join(broken, DEMO_MODEL_FORMAT, 'unet', 'config.json'), '{');
  const fixed = await ensureDemoModel({ cacheDir: broken });
  assert.deepEqual(await listFiles(fixed), await listFiles(dir));
  assert.deepEqual(await readdir(broken), [DEMO_MODEL_FORMAT]);
});

test('cache folder: DISTRIFUSION_CACHE, then XDG_CACHE_HOME, then ~/.cache', () => {
  assert.equal(defaultCacheDir({ DISTRIFUSION_CACHE: '/c', XDG_CACHE_HOME: '/x' }), '/c');
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/x' }), join('/x', 'distrifusion'));
  assert.match(defaultCacheDir({}), /[/\\]\.cache[/\\]distrifusion$/);
});

test('the tokenizer folders tokenize like the packaged CLIP tokenizer; tokenizer_2 pads with "!"', async () => {
  const prompt = 'A photo of an astronaut riding a horse on Mars!';
  const t1 = await CLIPTokenizer.fromPretrained(join(dir, 'tokenizer'));
  const t2 = await CLIPTokenizer.fromPretrained(join(dir, 'tokenizer_2'));
  assert.deepEqual(t1.encode(prompt), CLIPTokenizer.default().encode(prompt));
  assert.deepEqual(t2.encode(prompt), CLIPTokenizer.default({ padToken: '!' }).encode(prompt));
  assert.equal(t1.padTokenId, 49407);
  assert.equal(t2.padTokenId, 0);
});

test('vocab.json and merges.txt are byte-identical to the real SDXL tokenizer files', {
  skip: skipWithoutFixtures,
}, async () => {
  for (const t of ['tokenizer', 'tokenizer_2']) {
    for (const f of ['vocab.json', 'merges.txt']) {
      const [ours, real] = await Promise.all([
        readFile(join(dir, t, f)),
        readFile(fixture('sdxl-tiny', t, f)),
      ]);
      assert.ok(ours.equals(real), `${t}/${f} differs from the real file`);
    }
  }
});

test('StableDiffusionXLPipeline loads it; a 2-step generation gives finite pixels with variance', async () => {
  const pipe = await StableDiffusionXLPipeline.fromPretrained(dir, { threads: 1 });
  try {
    assert.deepEqual(pipe.defaultSize, [256, 256]);
    assert.equal(pipe.components.vae.scaleFactor, 8);
    assert.equal(pipe.components.unet.config.additionEmbed?.timeEmbedDim, 8);
    const stats = async (prompt: string, seed: number) => {
      const r = await pipe.generate({ prompt, numInferenceSteps: 2, seed, height: 128, width: 128 });
      const d = r.images!.data;
      assert.deepEqual(r.images!.shape, [1, 3, 128, 128]);
      let sum = 0;
      let sq = 0;
      for (const v of d) {
        assert.ok(Number.isFinite(v), 'non-finite pixel');
        sum += v;
        sq += v * v;
      }
      const mean = sum / d.length;
      return { d, mean, variance: sq / d.length - mean * mean };
    };
    const a = await stats('a red bicycle', 7);
    assert.ok(a.variance > 1e-3, `pixel variance ${a.variance}`);
    assert.ok(a.mean > 0.05 && a.mean < 0.95, `pixel mean ${a.mean} (all black or all white?)`);
    // The prompt reaches the image: the text encoders are not degenerate.
    const b = await stats('a blue teapot', 7);
    assert.notDeepEqual(b.d, a.d);
  } finally {
    await pipe.dispose();
  }
});

test('an unwritable cache names the folder and DISTRIFUSION_CACHE', async () => {
  const file = join(root, 'not-a-folder');
  await writeFile(file, 'x');
  await assert.rejects(ensureDemoModel({ cacheDir: join(file, 'sub') }), (e: Error) => {
    assert.match(e.message, /not-a-folder[/\\]sub: cannot write the demo model there/);
    assert.match(e.message, /DISTRIFUSION_CACHE/);
    return true;
  });
  assert.equal(existsSync(join(file, 'sub')), false);
});
