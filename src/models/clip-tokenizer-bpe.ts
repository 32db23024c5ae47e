// Byte-level BPE of CLIP: the byte → character table, the vocabulary (from vocab.json, or rebuilt from the
// merges the way openai/CLIP's SimpleTokenizer does it), and the merge loop of tokenization_clip.py's `bpe`.

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
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable(b) ? b : 256 + n++);
  return table;
}

/** The first 512 tokens of SimpleTokenizer's vocabulary: byte symbols in bytes_to_unicode's dict order, then with `</w>`. */
function byteTokens(): string[] {
  const table = bytesToUnicode();
  const symbols = [
    ...table.filter((s) => s.codePointAt(0)! < 256),
    ...table.filter((s) => s.codePointAt(0)! >= 256),
  ];
  return [...symbols, ...symbols.map((s) => `${s}</w>`)];
}

/**
 * Parses merges.txt like transformers (`text.strip().split("\n")[1:48895]`, each line split on whitespace)
 * into canonical `"first second"` strings, one per rank. A malformed line keeps its rank slot as `""`,
 * which never matches a pair (transformers keeps a tuple that never matches either).
 */
export function parseMerges(text: string): string[] {
  const lines = text.trim().split('\n');
  const count = Math.max(Math.min(lines.length - 1, CLIP_MERGE_COUNT), 0);
  // One scan of the whole file decides whether every line can take the fast "a b" path.
  const onlySpaces = !/[^\S \n]/u.test(text);
  const merges = new Array<string>(count);
  for (let i = 0; i < count; i++) {
    const line = lines[i + 1]!;
    const sp = line.indexOf(' ');
    if (onlySpaces && sp > 0 && sp < line.length - 1 && line.indexOf(' ', sp + 1) < 0) {
      merges[i] = line;
    } else {
      const parts = line.trim().split(/\s+/u);
      merges[i] = parts.length === 2 ? `${parts[0]} ${parts[1]}` : '';
    }
  }
  return merges;
}

/** Merge rank lookup keyed by the canonical `"first second"` line (BPE symbols never contain a space). */
export function mergeRanks(merges: readonly string[]): Map<string, number> {
  const ranks = new Map<string, number>();
  // Python's dict(zip(...)) keeps the last rank of a duplicated pair; Map.set does the same.
  merges.forEach((m, i) => {
    if (m !== '') ranks.set(m, i);
  });
  return ranks;
}

/**
 * SimpleTokenizer's vocabulary: the 256 byte symbols, the same with `</w>`, one entry per merge (the two
 * halves joined), then `<|startoftext|>` and `<|endoftext|>`. This is exactly the vocab.json of the
 * SD / SDXL tokenizer folders (49408 entries).
 */
export function vocabFromMerges(merges: readonly string[]): Map<string, number> {
  const vocab = new Map<string, number>();
  // Ids are positions: a duplicated token keeps its last position, as dict(zip(vocab, range(n))) does.
  let id = 0;
  for (const t of byteTokens()) vocab.set(t, id++);
  for (const m of merges) vocab.set(m.replace(' ', ''), id++);
  vocab.set(BOS_TOKEN, id++);
  vocab.set(EOS_TOKEN, id++);
  return vocab;
}

/** Token → id, plus the merge ranks BPE needs. */
export interface Vocabulary {
  readonly ranks: ReadonlyMap<string, number>;
  /** Id of any token string; undefined when it is not in the vocabulary. */
  idOf(token: string): number | undefined;
  /** Id of a BPE output symbol made by merge `rank` (−1: an unmerged byte symbol). */
  idOfSymbol(token: string, rank: number): number | undefined;
}

/** A vocab.json next to its merges.txt (any CLIP-style tokenizer folder). */
export class JsonVocabulary implements Vocabulary {
  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    readonly ranks: ReadonlyMap<string, number>,
  ) {}
  idOf(token: string): number | undefined {
    return this.vocab.get(token);
  }
  idOfSymbol(token: string): number | undefined {
    return this.vocab.get(token);
  }
}

/**
 * SimpleTokenizer's vocabulary, kept implicit: a symbol made by merge r has id 512 + r, so no 49k-entry map
 * is built on the hot path of `CLIPTokenizer.default()` (it would double the load time). The full map is
 * only built if an arbitrary token string is looked up.
 */
export class MergesVocabulary implements Vocabulary {
  readonly ranks: ReadonlyMap<string, number>;
  private readonly bytes = new Map<string, number>(byteTokens().map((t, i) => [t, i]));
  private full: Map<string, number> | undefined;

  constructor(private readonly merges: readonly string[]) {
    this.ranks = mergeRanks(merges);
    // Only the packaged merges come here; their joined tokens are distinct (the tests rebuild vocab.json).
    if (this.ranks.size !== merges.length) {
      throw new Error('CLIP merges: duplicate or malformed merge lines; ids would not follow the ranks');
    }
  }
  idOf(token: string): number | undefined {
    const id = this.bytes.get(token);
    if (id !== undefined) return id;
    this.full ??= vocabFromMerges(this.merges);
    return this.full.get(token);
  }
  idOfSymbol(token: string, rank: number): number | undefined {
    return rank >= 0 ? this.bytes.size + rank : this.bytes.get(token);
  }
}

/** BPE symbols of one word and the rank of the merge that made each (−1 for an unmerged byte symbol). */
export interface BpeWord {
  readonly tokens: readonly string[];
  readonly ranks: readonly number[];
}

// Bounded so a long-running server does not grow without limit; transformers' cache is unbounded, which
// only matters for memory, never for the result.
const CACHE_LIMIT = 50_000;

/** tokenization_clip.py's `bpe`: repeatedly merge the lowest-ranked adjacent pair, all occurrences at once. */
export class BytePairEncoder {
  private readonly cache = new Map<string, BpeWord>();

  constructor(private readonly ranks: ReadonlyMap<string, number>) {}

  /** `word` is already byte-encoded; the last symbol gets the `</w>` end-of-word marker. */
  encode(word: string): BpeWord {
    // transformers seeds its cache with these two, so a matched special token is never split or suffixed.
    if (word === BOS_TOKEN || word === EOS_TOKEN) return { tokens: [word], ranks: [-1] };
    const hit = this.cache.get(word);
    if (hit) return hit;
    const chars = [...word];
    if (chars.length === 0) return { tokens: [], ranks: [] };
    let symbols = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`];
    let made = symbols.map(() => -1);
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
      const mergedRanks: number[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === first && i + 1 < symbols.length && symbols[i + 1] === second) {
          merged.push(first + second);
          mergedRanks.push(best);
          i++;
        } else {
          merged.push(symbols[i]!);
          mergedRanks.push(made[i]!);
        }
      }
      symbols = merged;
      made = mergedRanks;
    }
    const result = { tokens: symbols, ranks: made };
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, result);
    return result;
  }
}
