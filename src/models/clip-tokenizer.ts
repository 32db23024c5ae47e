// CLIP's byte-level BPE tokenizer, matching transformers' slow CLIPTokenizer (4.36) without ftfy installed,
// which is what a default diffusers install runs for SD 1.x / SD 2.x / SDXL.
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  BOS_TOKEN,
  BytePairEncoder,
  bytesToUnicode,
  EOS_TOKEN,
  JsonVocabulary,
  MergesVocabulary,
  mergeRanks,
  parseMerges,
  type Vocabulary,
} from './clip-tokenizer-bpe.js';
import { basicClean, splitOnSpecialTokens, splitWords } from './clip-tokenizer-text.js';

export interface EncodeOptions {
  /** Length to truncate and pad to. Default: the tokenizer's modelMaxLength (77 for every CLIP folder). */
  maxLength?: number;
  /**
   * Token whose id fills the padding. Default: the tokenizer's own pad token. This only picks the padding id:
   * which tokens are split out of the text as special is fixed when the tokenizer is made (as in
   * transformers), so for SDXL's tokenizer_2 use `CLIPTokenizer.default({ padToken: '!' })`.
   */
  padToken?: '<|endoftext|>' | '!' | string;
  /** Keep bos + the first maxLength − 2 tokens + eos. Default true. */
  truncation?: boolean;
  /** Pad up to maxLength (never shortens). Default true. */
  padding?: boolean;
}

/** The tokenizer folders' defaults (CLIPTokenizer.__init__ and its max_model_input_sizes). */
const DEFAULT_PAD = EOS_TOKEN;
const DEFAULT_MAX_LENGTH = 77;
/** Refuses transformers' "no limit" sentinel (1e30): padding to it would never finish. */
const MAX_SANE_LENGTH = 1 << 20;

const ASSET_MERGES = new URL('../../assets/clip/merges.txt.gz', import.meta.url);

interface SpecialTokens {
  bos: string;
  eos: string;
  unk: string;
  pad: string;
  /** tokenizer_config.json's added_tokens_decoder (content → id), if the folder has one. */
  added: ReadonlyMap<string, number>;
  /** Where the pad token came from, for error messages. */
  source: string;
}

let embedded: Vocabulary | undefined;

/** The packaged vocabulary: merges.txt of openai/clip-vit-large-patch14, vocab rebuilt from it. */
function embeddedVocabulary(): Vocabulary {
  if (!embedded) {
    let text: string;
    try {
      text = gunzipSync(readFileSync(ASSET_MERGES)).toString('utf8');
    } catch (e) {
      throw new Error(
        `${ASSET_MERGES.pathname}: cannot read the embedded CLIP merges (${(e as Error).message})`,
      );
    }
    embedded = new MergesVocabulary(parseMerges(text));
  }
  return embedded;
}

export class CLIPTokenizer {
  readonly padToken: string;
  readonly padTokenId: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly modelMaxLength: number;

  private readonly vocab: Vocabulary;
  /** Added tokens (special ones included) → id; these win over the vocabulary, as in transformers. */
  private readonly addedIds: ReadonlyMap<string, number>;
  private readonly addedTokens: readonly string[];
  private readonly unkTokenId: number;
  private readonly bpe: BytePairEncoder;
  private readonly byteSymbols = bytesToUnicode();
  private readonly utf8 = new TextEncoder();

  private constructor(vocabulary: Vocabulary, special: SpecialTokens, modelMaxLength: number) {
    this.vocab = vocabulary;
    this.bpe = new BytePairEncoder(vocabulary.ranks);
    this.modelMaxLength = modelMaxLength;
    const added = new Map(special.added);
    for (const token of [special.bos, special.eos, special.unk, special.pad]) {
      if (added.has(token)) continue;
      const id = this.vocab.idOf(token);
      // transformers would append an id past the embedding table; no CLIP text encoder could use it.
      if (id === undefined) {
        throw new Error(`${special.source}: special token ${JSON.stringify(token)} is not in the vocabulary`);
      }
      added.set(token, id);
    }
    this.addedIds = added;
    this.addedTokens = [...added.keys()];
    this.padToken = special.pad;
    this.padTokenId = added.get(special.pad)!;
    this.bosTokenId = added.get(special.bos)!;
    this.eosTokenId = added.get(special.eos)!;
    this.unkTokenId = added.get(special.unk)!;
  }

  /**
   * Loads a diffusers / transformers tokenizer folder: vocab.json and merges.txt (required), pad, bos, eos,
   * unk and model_max_length from tokenizer_config.json and special_tokens_map.json (optional; the latter
   * wins, as in transformers).
   */
  static async fromPretrained(dir: string): Promise<CLIPTokenizer> {
    const vocabPath = join(dir, 'vocab.json');
    const [vocabText, mergesText] = await readRequired(dir, ['vocab.json', 'merges.txt']);
    const vocabulary = new JsonVocabulary(
      parseVocab(vocabPath, vocabText),
      mergeRanks(parseMerges(mergesText)),
    );
    const configPath = join(dir, 'tokenizer_config.json');
    const mapPath = join(dir, 'special_tokens_map.json');
    const config = await readOptionalJson(configPath);
    const map = await readOptionalJson(mapPath);
    const pick = (key: string, fallback: string): string =>
      tokenContent(mapPath, key, map?.[key]) ?? tokenContent(configPath, key, config?.[key]) ?? fallback;
    const special: SpecialTokens = {
      bos: pick('bos_token', BOS_TOKEN),
      eos: pick('eos_token', EOS_TOKEN),
      unk: pick('unk_token', EOS_TOKEN),
      pad: pick('pad_token', DEFAULT_PAD),
      added: addedTokensDecoder(configPath, config?.added_tokens_decoder),
      source: dir,
    };
    return new CLIPTokenizer(vocabulary, special, maxLengthOf(configPath, config?.model_max_length));
  }

  /** The real CLIP vocabulary shipped in the package (no files needed). Pad `'!'` gives SDXL's tokenizer_2. */
  static default(options: { padToken?: string } = {}): CLIPTokenizer {
    const special: SpecialTokens = {
      bos: BOS_TOKEN,
      eos: EOS_TOKEN,
      unk: EOS_TOKEN,
      pad: options.padToken ?? DEFAULT_PAD,
      added: new Map(),
      source: 'CLIPTokenizer.default()',
    };
    return new CLIPTokenizer(embeddedVocabulary(), special, DEFAULT_MAX_LENGTH);
  }

  /** BPE tokens of `text`, without bos / eos, like `tokenizer.tokenize(text)`. */
  tokenize(text: string): string[] {
    const tokens: string[] = [];
    this.run(text, (token) => tokens.push(token));
    return tokens;
  }

  /** `tokenizer(text, padding="max_length", max_length, truncation=True).input_ids` by default. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const maxLength = options.maxLength ?? this.modelMaxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new RangeError(
        `encode: maxLength must be an integer >= 2 (room for bos and eos), got ${maxLength}`,
      );
    }
    let ids: number[] = [];
    this.run(text, (_, id) => ids.push(id));
    if (options.truncation !== false && ids.length > maxLength - 2) ids = ids.slice(0, maxLength - 2);
    const out = [this.bosTokenId, ...ids, this.eosTokenId];
    if (options.padding !== false && out.length < maxLength) {
      const padId = options.padToken === undefined ? this.padTokenId : this.tokenId(options.padToken);
      while (out.length < maxLength) out.push(padId);
    }
    return out;
  }

  /**
   * The slow tokenizer's `tokenize` + `convert_tokens_to_ids`: split out the added tokens (case-sensitive,
   * before any cleanup), clean and split the rest, byte-encode and BPE each word.
   */
  private run(text: string, emit: (token: string, id: number) => void): void {
    for (const piece of splitOnSpecialTokens(text, this.addedTokens)) {
      if (piece.special) {
        emit(piece.text, this.addedIds.get(piece.text)!);
        continue;
      }
      for (const word of splitWords(basicClean(piece.text))) {
        let encoded = '';
        for (const byte of this.utf8.encode(word)) encoded += this.byteSymbols[byte];
        const { tokens, ranks } = this.bpe.encode(encoded);
        tokens.forEach((t, i) => {
          // Added tokens win over the vocabulary; an unknown token becomes unk, as in transformers.
          emit(t, this.addedIds.get(t) ?? this.vocab.idOfSymbol(t, ranks[i]!) ?? this.unkTokenId);
        });
      }
    }
  }

  private tokenId(token: string): number {
    const id = this.addedIds.get(token) ?? this.vocab.idOf(token);
    if (id === undefined)
      throw new Error(`encode: pad token ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  }
}

/** The files' texts, in order; one error names every file that is missing or unreadable. */
async function readRequired<const N extends readonly string[]>(
  dir: string,
  names: N,
): Promise<{ [K in keyof N]: string }> {
  // Settled, not raced: with several files missing, the error must not depend on which read fails first.
  const results = await Promise.allSettled(names.map((n) => readFile(join(dir, n), 'utf8')));
  const problems = results.flatMap((r, i) => {
    if (r.status === 'fulfilled') return [];
    const code = (r.reason as NodeJS.ErrnoException).code;
    const what = code === 'ENOENT' ? 'is missing' : `cannot be read (${code ?? (r.reason as Error).message})`;
    return [{ code, text: `${names[i]} ${what}` }];
  });
  if (problems.some((p) => p.code === 'ENOENT') && !existsSync(dir)) {
    throw new Error(`${dir}: tokenizer folder not found`);
  }
  if (problems.length > 0) {
    throw new Error(`${dir}: not a CLIP tokenizer folder: ${problems.map((p) => p.text).join(', ')}`);
  }
  return results.map((r) => (r as PromiseFulfilledResult<string>).value) as { [K in keyof N]: string };
}

async function readOptionalJson(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`${path}: cannot read (${(e as Error).message})`);
  }
  const value = parseJson(path, text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`${path}: expected a JSON object`);
  }
  return value as Record<string, unknown>;
}

function parseJson(path: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

function parseVocab(path: string, text: string): Map<string, number> {
  const value = parseJson(path, text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`${path}: expected a JSON object of token → id`);
  }
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(value)) {
    if (!Number.isInteger(id))
      throw new Error(`${path}: id of ${JSON.stringify(token)} should be an integer, got ${id}`);
    vocab.set(token, id as number);
  }
  return vocab;
}

/** A special-token entry is a string or an AddedToken object `{ content, ... }`. */
function tokenContent(path: string, key: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  throw new Error(`${path}: "${key}" should be a string or {"content": ...}, got ${JSON.stringify(value)}`);
}

function addedTokensDecoder(path: string, value: unknown): Map<string, number> {
  const added = new Map<string, number>();
  if (value === undefined || value === null) return added;
  if (typeof value !== 'object' || Array.isArray(value))
    throw new Error(`${path}: "added_tokens_decoder" should be an object`);
  for (const [id, token] of Object.entries(value)) {
    const content = tokenContent(path, `added_tokens_decoder.${id}`, token);
    if (content === undefined || !/^\d+$/.test(id)) {
      throw new Error(`${path}: "added_tokens_decoder" entry ${id} should map an integer id to a token`);
    }
    added.set(content, Number(id));
  }
  return added;
}

function maxLengthOf(path: string, value: unknown): number {
  if (value === undefined || value === null) return DEFAULT_MAX_LENGTH;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 2 && value <= MAX_SANE_LENGTH)
    return value;
  throw new Error(
    `${path}: "model_max_length" should be an integer in [2, ${MAX_SANE_LENGTH}], got ${JSON.stringify(value)}`,
  );
}
