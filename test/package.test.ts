// The public API works from the built package: `import … from 'distrifusion'` resolves to dist/ through
// package.json "exports" (npm ci builds it through the prepare script).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { repoRoot } from './helpers/fixtures.js';

const built = existsSync(join(repoRoot, 'dist', 'index.js'));

test('the built package exports the public API', {
  skip: built ? false : 'dist/ not built (run npm run build)',
}, async () => {
  const script = `
    const m = await import('distrifusion');
    const names = ['Tensor', 'readSafetensors', 'writeSafetensors', 'UNet2DConditionModel', 'AutoencoderKL',
      'CLIPTextModel', 'CLIPTextModelWithProjection', 'CLIPTokenizer', 'StableDiffusionXLPipeline',
      'StableDiffusionPipeline', 'DistriSDXLPipeline', 'DistriSDPipeline', 'createScheduler', 'Generator'];
    const missing = names.filter((n) => n !== 'Tensor' && !(n in m));
    const tok = m.CLIPTokenizer.default();
    console.log(JSON.stringify({ missing, ids: tok.encode('a red fox', { padding: false }) }));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: repoRoot,
  });
  const r = JSON.parse(stdout) as { missing: string[]; ids: number[] };
  assert.deepEqual(r.missing, []);
  assert.deepEqual(r.ids, [49406, 320, 736, 3240, 49407]);
});
