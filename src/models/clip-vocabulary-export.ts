// The embedded CLIP vocabulary (assets/clip) as the files of a tokenizer folder: merges.txt as shipped, and
// vocab.json rebuilt from the merges, byte for byte as transformers' CLIPTokenizer.save_vocabulary writes
// them, so a folder made from them loads like the real SD / SDXL tokenizer folders.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { parseMerges, vocabFromMerges } from './clip-tokenizer-bpe.js';

const ASSET_MERGES = new URL('../../assets/clip/merges.txt.gz', import.meta.url);

export interface ClipVocabularyFiles {
  /** vocab.json: token → id, keys sorted, two-space indent, trailing newline. */
  vocabJson: string;
  /** merges.txt: `#version: 0.2` and one merge per line. */
  mergesTxt: string;
}

/** Python's sort_keys order: by code point (JavaScript's default sort compares UTF-16 units). */
function byCodePoint(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i]!.codePointAt(0)! - y[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/**
 * `json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n"`. Written line by line because
 * JSON.stringify of an object would put integer-like keys ("0", "1", …) first.
 */
export function vocabJsonText(vocab: ReadonlyMap<string, number>): string {
  const keys = [...vocab.keys()].sort(byCodePoint);
  const lines = keys.map((k) => `  ${JSON.stringify(k)}: ${vocab.get(k)}`);
  return `{\n${lines.join(',\n')}\n}\n`;
}

export function clipVocabularyFiles(): ClipVocabularyFiles {
  let mergesTxt: string;
  try {
    mergesTxt = gunzipSync(readFileSync(ASSET_MERGES)).toString('utf8');
  } catch (e) {
    throw new Error(
      `${ASSET_MERGES.pathname}: cannot read the embedded CLIP merges (${(e as Error).message})`,
    );
  }
  return { vocabJson: vocabJsonText(vocabFromMerges(parseMerges(mergesTxt))), mergesTxt };
}
