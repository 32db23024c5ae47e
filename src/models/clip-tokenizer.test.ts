import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { CLIPTokenizer } from './clip-tokenizer.js';
import { CLIP_MERGE_COUNT, MergesVocabulary, parseMerges, vocabFromMerges } from './clip-tokenizer-bpe.js';

interface Prompt {
  index: number;
  text: string;
  tokens: string[];
  ids_untruncated: number[];
  input_ids_pad_eos: number[];
  tokens_2: string[];
  ids_untruncated_2: number[];
  input_ids_pad_excl: number[];
}

async function prompts(): Promise<Prompt[]> {
  const json = JSON.parse(await readFile(fixture('tokenizer', 'prompts.json'), 'utf8')) as {
    prompts: Prompt[];
  };
  return json.prompts;
}

const ASSET = new URL('../../assets/clip/merges.txt.gz', import.meta.url);

/** Compares every prompt with the transformers reference; `second` selects tokenizer_2's fields. */
async function checkAgainstReference(tok: CLIPTokenizer, second: boolean): Promise<number> {
  const list = await prompts();
  assert.equal(list.length, 45);
  for (const p of list) {
    const where = `prompt ${p.index} ${JSON.stringify(p.text.slice(0, 60))}`;
    assert.deepEqual(tok.tokenize(p.text), second ? p.tokens_2 : p.tokens, `${where}: tokens`);
    assert.deepEqual(
      tok.encode(p.text, { truncation: false, padding: false }),
      second ? p.ids_untruncated_2 : p.ids_untruncated,
      `${where}: untruncated ids`,
    );
    assert.deepEqual(
      tok.encode(p.text),
      second ? p.input_ids_pad_excl : p.input_ids_pad_eos,
      `${where}: padded ids`,
    );
  }
  return list.length;
}

describe('CLIPTokenizer against transformers (fixtures/tokenizer/prompts.json)', {
  skip: skipWithoutFixtures,
}, () => {
  test('fromPretrained sdxl-tiny/tokenizer (pad <|endoftext|>): all prompts', async () => {
    const tok = await CLIPTokenizer.fromPretrained(fixture('sdxl-tiny', 'tokenizer'));
    assert.equal(tok.padToken, '<|endoftext|>');
    assert.deepEqual(
      [tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.modelMaxLength],
      [49406, 49407, 49407, 77],
    );
    assert.equal(await checkAgainstReference(tok, false), 45);
  });

  test('fromPretrained sdxl-tiny/tokenizer_2 (pad "!", a special token): all prompts', async () => {
    const tok = await CLIPTokenizer.fromPretrained(fixture('sdxl-tiny', 'tokenizer_2'));
    assert.equal(tok.padToken, '!');
    assert.deepEqual(
      [tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.modelMaxLength],
      [49406, 49407, 0, 77],
    );
    assert.equal(await checkAgainstReference(tok, true), 45);
  });

  test('default(): all prompts', async () => {
    const tok = CLIPTokenizer.default();
    assert.deepEqual(
      [tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.modelMaxLength],
      [49406, 49407, 49407, 77],
    );
    assert.equal(await checkAgainstReference(tok, false), 45);
  });

  test("default({ padToken: '!' }): all prompts as tokenizer_2", async () => {
    const tok = CLIPTokenizer.default({ padToken: '!' });
    assert.equal(tok.padTokenId, 0);
    assert.equal(await checkAgainstReference(tok, true), 45);
  });

  test('the per-call padToken only changes the padding id', async () => {
    const tok = CLIPTokenizer.default();
    const p = (await prompts()).find((q) => q.text === '!');
    assert.ok(p);
    // '!' stays '!</w>' (256) in the text, as with tokenizer/, but the padding becomes id 0.
    const ids = tok.encode('!', { padToken: '!' });
    assert.deepEqual(ids, [
      ...p.ids_untruncated,
      ...new Array<number>(77 - p.ids_untruncated.length).fill(0),
    ]);
    assert.notDeepEqual(ids, p.input_ids_pad_excl);
  });
});

describe('embedded vocabulary (assets/clip)', { skip: skipWithoutFixtures }, () => {
  test('merges.txt.gz is transformers merges.txt byte for byte', async () => {
    const shipped = gunzipSync(await readFile(ASSET));
    assert.ok(shipped.equals(await readFile(fixture('tokenizer', 'merges.txt'))));
  });

  test("its merges are lines 1..48894 of openai/CLIP's bpe_simple_vocab_16e6.txt.gz", async () => {
    const original = gunzipSync(
      await readFile(fixture('tokenizer', 'bpe_simple_vocab_16e6.txt.gz')),
    ).toString('utf8');
    const simple = original.split('\n').slice(1, CLIP_MERGE_COUNT + 1);
    const shipped = parseMerges(gunzipSync(await readFile(ASSET)).toString('utf8'));
    assert.equal(shipped.length, 48894);
    assert.deepEqual(shipped, simple);
  });

  test("the vocabulary rebuilt SimpleTokenizer's way equals vocab.json", async () => {
    const reference = JSON.parse(await readFile(fixture('tokenizer', 'vocab.json'), 'utf8')) as Record<
      string,
      number
    >;
    const merges = parseMerges(gunzipSync(await readFile(ASSET)).toString('utf8'));
    const rebuilt = vocabFromMerges(merges);
    assert.equal(rebuilt.size, 49408);
    assert.deepEqual(Object.fromEntries(rebuilt), reference);
    // default() never builds that map: merged tokens take id 512 + rank. Check that shortcut for every entry.
    const implicit = new MergesVocabulary(merges);
    merges.forEach((m, rank) => {
      assert.equal(implicit.idOfSymbol(m.replace(' ', ''), rank), reference[m.replace(' ', '')], m);
    });
    for (const [token, id] of Object.entries(reference)) {
      if (id < 512) assert.equal(implicit.idOfSymbol(token, -1), id, token);
      assert.equal(implicit.idOf(token), id, token);
    }
  });
});

describe('CLIPTokenizer edge cases', () => {
  // Expected tokens: transformers' no-ftfy code path (BasicTokenizer + regex + bpe + added-token split)
  // run under Python 3.11 (unicodedata 14.0.0) with the `regex` package; not part of the fixture set.
  const cases: [string, string[], string[]][] = [
    // U+0345 folds to a Greek letter: Python's regex matches it with nothing and skips it.
    ['a\u0345b \u1fbc', ['a</w>', 'b</w>', 'á', '¾', '³</w>'], ['a</w>', 'b</w>', 'á', '¾', '³</w>']],
    // U+1FA77 (Unicode 15) is unassigned for Python 3.11 and dropped; U+1FAE0 (Unicode 14) is kept.
    [
      'pink heart \u{1fa77} melting \u{1fae0}',
      ['pink</w>', 'heart</w>', 'melting</w>', 'ðŁ', '«', 'ł</w>'],
      ['pink</w>', 'heart</w>', 'melting</w>', 'ðŁ', '«', 'ł</w>'],
    ],
    ['line\u2028sep\u2029para', ['line</w>', 'sep</w>', 'para</w>'], ['line</w>', 'sep</w>', 'para</w>']],
    ['lone\ud800surrogate', ['lon', 'esur', 'ro', 'gate</w>'], ['lon', 'esur', 'ro', 'gate</w>']],
    ['\ufeffbom\u00ad', ['bom</w>'], ['bom</w>']],
    ['a <|ENDOFTEXT|> b', ['a</w>', '<|endoftext|>', 'b</w>'], ['a</w>', '<|endoftext|>', 'b</w>']],
    [
      'wow!!<|endoftext|>!!',
      ['wow</w>', '!!</w>', '<|endoftext|>', '!!</w>'],
      ['wow</w>', '!', '!', '<|endoftext|>', '!', '!'],
    ],
    // Upper case is not an added token: it reaches the regex, which glues "!!<|" together.
    [
      'wow!!<|ENDOFTEXT|>!!',
      ['wow</w>', '!!', '<', '|</w>', 'endof', 'text</w>', '|', '>', '!!</w>'],
      ['wow</w>', '!', '!', '<|endoftext|>', '!', '!'],
    ],
    [
      "'S '\u017f K\u212a \u0130stanbul",
      ["'s</w>", "'", 'Å', '¿</w>', 'kk</w>', 'i</w>', 'Ìĩ</w>', 'stanbul</w>'],
      ["'s</w>", "'", 'Å', '¿</w>', 'kk</w>', 'i</w>', 'Ìĩ</w>', 'stanbul</w>'],
    ],
  ];
  for (const [text, expected, expected2] of cases) {
    test(`tokenize ${JSON.stringify(text)}`, () => {
      assert.deepEqual(CLIPTokenizer.default().tokenize(text), expected);
      assert.deepEqual(CLIPTokenizer.default({ padToken: '!' }).tokenize(text), expected2);
    });
  }

  test('truncation, padding and maxLength', () => {
    const tok = CLIPTokenizer.default();
    const long = Array.from({ length: 100 }, () => 'a').join(' ');
    const full = tok.encode(long, { truncation: false, padding: false });
    assert.equal(full.length, 102);
    assert.deepEqual(tok.encode(long), [...full.slice(0, 76), 49407]);
    // padding never shortens; truncation off keeps everything
    assert.deepEqual(tok.encode(long, { truncation: false }), full);
    assert.deepEqual(tok.encode('a', { maxLength: 5 }), [49406, 320, 49407, 49407, 49407]);
    assert.deepEqual(tok.encode('a a a a', { maxLength: 4 }), [49406, 320, 320, 49407]);
    assert.deepEqual(tok.encode('a', { maxLength: 5, padding: false }), [49406, 320, 49407]);
    assert.deepEqual(tok.encode('', { maxLength: 2 }), [49406, 49407]);
    assert.throws(() => tok.encode('a', { maxLength: 1 }), /maxLength must be an integer >= 2/);
    assert.throws(() => tok.encode('a', { padToken: '<pad>' }), /pad token "<pad>" is not in the vocabulary/);
    assert.throws(() => CLIPTokenizer.default({ padToken: '<pad>' }), /"<pad>" is not in the vocabulary/);
  });
});

describe('CLIPTokenizer.fromPretrained errors', () => {
  test('names the folder and every missing file, whichever read fails first', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clip-tok-'));
    try {
      await assert.rejects(CLIPTokenizer.fromPretrained(dir), (e: Error) => {
        assert.ok(e.message.includes(dir), e.message);
        assert.match(e.message, /vocab\.json is missing, merges\.txt is missing$/);
        return true;
      });
      await writeFile(join(dir, 'vocab.json'), '{"a": 0}');
      await assert.rejects(CLIPTokenizer.fromPretrained(dir), (e: Error) => {
        assert.ok(e.message.includes(dir), e.message);
        assert.match(e.message, /folder: merges\.txt is missing$/);
        return true;
      });
      await assert.rejects(
        CLIPTokenizer.fromPretrained(join(dir, 'nope')),
        /nope: tokenizer folder not found/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('rejects a special token missing from vocab.json and a bad model_max_length', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clip-tok-'));
    try {
      await writeFile(join(dir, 'vocab.json'), '{"a</w>": 0, "<|startoftext|>": 1}');
      await writeFile(join(dir, 'merges.txt'), '#version: 0.2\n');
      await assert.rejects(CLIPTokenizer.fromPretrained(dir), /"<\|endoftext\|>" is not in the vocabulary/);
      await writeFile(join(dir, 'vocab.json'), '{"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}');
      await writeFile(join(dir, 'tokenizer_config.json'), '{"model_max_length": 1e30}');
      await assert.rejects(
        CLIPTokenizer.fromPretrained(dir),
        /tokenizer_config\.json: "model_max_length" should be/,
      );
      await writeFile(join(dir, 'tokenizer_config.json'), '{"model_max_length": 8, "pad_token": "a</w>"}');
      const tok = await CLIPTokenizer.fromPretrained(dir);
      assert.deepEqual([tok.padTokenId, tok.modelMaxLength], [0, 8]);
      // special_tokens_map.json wins over tokenizer_config.json, as in transformers
      await writeFile(join(dir, 'special_tokens_map.json'), '{"pad_token": {"content": "<|startoftext|>"}}');
      assert.equal((await CLIPTokenizer.fromPretrained(dir)).padTokenId, 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
