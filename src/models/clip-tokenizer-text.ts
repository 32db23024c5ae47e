// Text side of the CLIP tokenizer: what transformers' slow CLIPTokenizer does to a prompt before BPE when
// ftfy is not installed (BasicTokenizer(strip_accents=False, do_split_on_punc=False), then the CLIP regex).

import { isUnassignedInUnicode14 } from './clip-tokenizer-unicode14.js';

/**
 * What Python's str.split() still splits on after cleanText: the other str.isspace() characters are all
 * Cc (removed) or Zs (already turned into spaces), and NFC never produces one.
 */
const PY_WHITESPACE = /[ \u2028\u2029]+/u;

// General category "Other" (Cc, Cf, Cs, Co, Cn): transformers' _is_control is `category.startswith("C")`.
const OTHER = /^\p{C}$/u;
const SPACE_SEPARATOR = /^\p{Zs}$/u;

/**
 * The pre-tokenizer pattern of tokenization_clip.py. It is compiled with re.IGNORECASE there, so the `i`
 * flag stays: under case folding `'ſ` matches `'s` in both engines.
 */
const CLIP_PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/** BasicTokenizer._is_chinese_char: the CJK ideograph blocks (not kana, not Hangul). */
function isCjkIdeograph(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/**
 * BasicTokenizer._clean_text followed by _tokenize_chinese_chars: drops NUL, U+FFFD and every "C*" character
 * except tab / newline / carriage return (lone surrogates included, as Python sees them as Cs; "unassigned"
 * as of the reference's Unicode 14), turns those three and every Zs character into a space, and pads CJK
 * ideographs with spaces.
 */
function cleanText(text: string): string {
  let out = '';
  // for..of walks code points, so astral ideographs and lone surrogates are seen whole, like Python.
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (ch === '\t' || ch === '\n' || ch === '\r' || SPACE_SEPARATOR.test(ch)) out += ' ';
    else if (cp === 0 || cp === 0xfffd || OTHER.test(ch) || isUnassignedInUnicode14(cp)) continue;
    else if (isCjkIdeograph(cp)) out += ` ${ch} `;
    else out += ch;
  }
  return out;
}

/**
 * `" ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text))`: clean, NFC,
 * whitespace split, lower-case each word. No accent stripping and no punctuation split.
 */
export function basicClean(text: string): string {
  return cleanText(text)
    .normalize('NFC')
    .split(PY_WHITESPACE)
    .filter((w) => w.length > 0)
    .map((w) => w.toLowerCase())
    .join(' ');
}

/**
 * `re.findall(self.pat, text)` of tokenization_clip.py. U+0345 (combining ypogegrammeni, Mn) case-folds to
 * a letter: Python's `regex` then matches it with no alternative and skips it, while JavaScript's `iu`
 * matching counts it as a letter. Turning it into a space (which no alternative matches) gives Python's split.
 */
export function splitWords(text: string): string[] {
  return text.replaceAll('\u0345', ' ').match(CLIP_PATTERN) ?? [];
}

export interface TextPiece {
  text: string;
  /** True when the piece is one of the tokenizer's added (special) tokens, kept whole. */
  special: boolean;
}

/**
 * Splits `text` on the added tokens the way the slow tokenizer's `tokens_trie.split` does before any
 * normalisation: leftmost match first, the longest one when several start there. Case-sensitive.
 */
export function splitOnSpecialTokens(text: string, specials: readonly string[]): TextPiece[] {
  const tokens = specials.filter((s) => s.length > 0);
  const pieces: TextPiece[] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    let best = '';
    for (const s of tokens) if (s.length > best.length && text.startsWith(s, i)) best = s;
    if (best === '') {
      i++;
      continue;
    }
    if (i > start) pieces.push({ text: text.slice(start, i), special: false });
    pieces.push({ text: best, special: true });
    i += best.length;
    start = i;
  }
  if (start < text.length) pieces.push({ text: text.slice(start), special: false });
  return pieces;
}
