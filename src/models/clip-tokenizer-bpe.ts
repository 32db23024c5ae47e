// Byte-level BPE of CLIP: the byte → character table, the vocabulary rebuilt from the merges the way
// openai/CLIP's SimpleTokenizer does it, and the merge loop of tokenization_clip.py's `bpe`.

export const BOS_TOKEN = '<|startoftext|>';
export const EOS_TOKEN = '<|endoftext|>';
/** The merges CLIP uses: `merges.txt` lines 1 … 49152 − 256 − 2 (line 0 is the `#version` header). */
export const CLIP_MERGE_COUNT = 49152 - 256 - 2;

/**
 * GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 … in
 * byte order, so no BPE symbol is whitespace or a control character. Indexed by byte.
 */
export function bytesToUnicode(): string[] {
  const table = new Array<string>(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable(b) ? b : 256 + n++);
  return table;
}

/** bytes_to_unicode's values in its own order (printable bytes first, then the remapped ones). */
function byteSymbolsInOrder(table: readonly string[]): string[] {
  const symbols = table.filter((s) => s.codePointAt(0)! < 256);
  return [...symbols, ...table.filter((s) => s.codePointAt(0)! >= 256)];
}

/** Parses merges.txt like transformers: header line dropped, at most CLIP_MERGE_COUNT pairs kept. */
export function parseMerges(text: string): [string, string][] {
  const lines = text.trim().split('\n').slice(1, CLIP_MERGE_COUNT + 1);
  return lines.map((line) => {
    const parts = line.trim().split(/\s+/);
    // A malformed line keeps its rank slot but can never match a pair, as in transformers.
    return parts.length === 2 ? [parts[0]!, parts[1]!] : ['', ''];
  });
}

/**
 * SimpleTokenizer's vocabulary: the 256 byte symbols, the same with `</w>`, one entry per merge (the two
 * halves joined), then `<|startoftext|>` and `<|endoftext|>`. This is exactly the vocab.json of the
 * SD / SDXL tokenizer folders (49408 entries).
 */
export function vocabFromMerges(merges: readonly [string, string][]): Map<string, number> {
  const symbols = byteSymbolsInOrder(bytesToUnicode());
  const tokens = [...symbols, ...symbols.map((s) => `${s}</w>`), ...merges.map(([a, b]) => a + b)];
  tokens.push(BOS_TOKEN, EOS_TOKEN);
  const vocab = new Map<string, number>();
  tokens.forEach((t, i) => vocab.set(t, i));
  return vocab;
}

/** Merge rank lookup keyed by `first + " " + second` (BPE symbols never contain a space). */
export function mergeRanks(merges: readonly [string, string][]): Map<string, number> {
  const ranks = new Map<string, number>();
  merges.forEach(([a, b], i) => {
    const key = `${a} ${b}`;
    // Python's dict(zip(...)) keeps the last rank of a duplicated pair.
    if (a !== '') ranks.set(key, i);
  });
  return ranks;
}

// Bounded so a long-running server does not grow without limit; transformers' cache is unbounded, which
// only matters for memory, never for the result.
const CACHE_LIMIT = 50_000;

/** tokenization_clip.py's `bpe`: repeatedly merge the lowest-ranked adjacent pair, all occurrences at once. */
export class BytePairEncoder {
  private readonly cache = new Map<string, string[]>([
    [BOS_TOKEN, [BOS_TOKEN]],
    [EOS_TOKEN, [EOS_TOKEN]],
  ]);

  constructor(private readonly ranks: ReadonlyMap<string, number>) {}

  /** `word` is already byte-encoded; the last symbol carries the `</w>` end-of-word marker. */
  encode(word: string): string[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    const chars = [...word];
    let symbols = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`];
    while (symbols.length > 1) {
      let best = Number.POSITIVE_INFINITY;
      let first = '';
      let second = '';
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < best) {
          best = rank;
          first = symbols[i]!;
          second = symbols[i + 1]!;
        }
      }
      if (best === Number.POSITIVE_INFINITY) break;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === first && i + 1 < symbols.length && symbols[i + 1] === second) {
          merged.push(first + second);
          i++;
        } else {
          merged.push(symbols[i]!);
        }
      }
      symbols = merged;
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, symbols);
    return symbols;
  }
}
