import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { findWeightFiles, loadComponent } from './diffusers-folder.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';
import type { AnyTensor } from './tensor.js';

const root = await mkdtemp(join(tmpdir(), 'folder-test-'));
after(() => rm(root, { recursive: true, force: true }));
const VAE = fixture('sdxl-tiny', 'vae');

async function vaeFolder(
  name: string,
  edit?: (t: Record<string, AnyTensor>) => void,
  file = 'diffusion_pytorch_model.safetensors',
) {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  await copyFile(join(VAE, 'config.json'), join(dir, 'config.json'));
  const tensors = await readSafetensors(join(VAE, 'diffusion_pytorch_model.safetensors'));
  edit?.(tensors);
  await writeSafetensors(join(dir, file), tensors);
  return dir;
}

test('variants: .fp16.safetensors is found by variant, and used when it is the only file', {
  skip: skipWithoutFixtures,
}, async () => {
  const dir = await vaeFolder('fp16', undefined, 'diffusion_pytorch_model.fp16.safetensors');
  assert.deepEqual(await findWeightFiles(dir, 'fp16'), [
    join(dir, 'diffusion_pytorch_model.fp16.safetensors'),
  ]);
  assert.deepEqual(await findWeightFiles(dir), [join(dir, 'diffusion_pytorch_model.fp16.safetensors')]);
  await assert.rejects(
    findWeightFiles(dir, 'bf16'),
    /no safetensors weights found \(looked for diffusion_pytorch_model\.bf16\.safetensors/,
  );
  const vae = await AutoencoderKL.fromPretrained(dir, { variant: 'fp16', threads: 1 });
  await vae.dispose();
});

test('sharded checkpoints load through their index', { skip: skipWithoutFixtures }, async () => {
  const dir = join(root, 'sharded');
  await mkdir(dir, { recursive: true });
  await copyFile(join(VAE, 'config.json'), join(dir, 'config.json'));
  const all = await readSafetensors(join(VAE, 'diffusion_pytorch_model.safetensors'));
  const names = Object.keys(all).sort();
  const halves = [names.slice(0, names.length / 2), names.slice(names.length / 2)];
  const weightMap: Record<string, string> = {};
  for (const [i, part] of halves.entries()) {
    const file = `diffusion_pytorch_model-0000${i + 1}-of-00002.safetensors`;
    await writeSafetensors(join(dir, file), Object.fromEntries(part.map((n) => [n, all[n]!])));
    for (const n of part) weightMap[n] = file;
  }
  await writeFile(
    join(dir, 'diffusion_pytorch_model.safetensors.index.json'),
    JSON.stringify({ weight_map: weightMap }),
  );
  const comp = await loadComponent(dir);
  assert.equal(comp.weights.keys().length, names.length);
  const vae = await AutoencoderKL.fromPretrained(dir, { threads: 1 });
  const out = await vae.decode({ data: new Float32Array(4 * 2 * 3).fill(0.1), shape: [1, 4, 2, 3] });
  assert.ok(out.data.every(Number.isFinite));
  await vae.dispose();
});

test('a missing tensor, a shape that contradicts config.json, an unsupported dtype and unused keys are named', {
  skip: skipWithoutFixtures,
}, async () => {
  const missing = await vaeFolder('missing', (t) => delete t['decoder.conv_in.weight']);
  await assert.rejects(
    AutoencoderKL.fromPretrained(missing),
    /missing tensor 'decoder\.conv_in\.weight' \(expected shape \[32, 4, 3, 3\] from config\.json\)/,
  );
  const shape = await vaeFolder('shape', (t) => {
    t['decoder.conv_in.bias'] = { data: new Float32Array(31), shape: [31] };
  });
  await assert.rejects(
    AutoencoderKL.fromPretrained(shape),
    /tensor 'decoder\.conv_in\.bias' has shape \[31\], but config\.json implies \[32\]/,
  );
  const dtype = await vaeFolder('dtype', (t) => {
    t['decoder.conv_in.bias'] = { data: new BigInt64Array(32), shape: [32] };
  });
  await assert.rejects(
    AutoencoderKL.fromPretrained(dtype),
    /tensor 'decoder\.conv_in\.bias' has unsupported dtype I64; expected F32, F16 or BF16/,
  );
  const extra = await vaeFolder('extra', (t) => {
    t['decoder.surplus.weight'] = { data: new Float32Array(2), shape: [2] };
  });
  await assert.rejects(
    AutoencoderKL.fromPretrained(extra),
    /1 tensor\(s\) not used by AutoencoderKL .*decoder\.surplus\.weight/,
  );
  const config = JSON.parse(await readFile(join(VAE, 'config.json'), 'utf8'));
  const bad = await vaeFolder('badconfig');
  await writeFile(join(bad, 'config.json'), JSON.stringify({ ...config, act_fn: 'relu' }));
  await assert.rejects(
    AutoencoderKL.fromPretrained(bad),
    /config\.json: unsupported "act_fn" "relu"; supported: silu/,
  );
  await assert.rejects(loadComponent(join(root, 'nope')), /nope\/config\.json: cannot read \(ENOENT\)/);
});

test('legacy attention names (query/key/value/proj_attn) are renamed on load', {
  skip: skipWithoutFixtures,
}, async () => {
  const dir = await vaeFolder('legacy', (t) => {
    for (const k of Object.keys(t)) {
      const m = /^(.*mid_block\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(k);
      if (!m) continue;
      const old = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' }[m[2] as 'to_q'];
      t[`${m[1]}.${old}.${m[3]}`] = t[k]!;
      delete t[k];
    }
  });
  const vae = await AutoencoderKL.fromPretrained(dir, { threads: 1 });
  await vae.dispose();
});
