// A text bundle in JavaScript, as a web or Node app runs it: tokenize the golden strings with
// @huggingface/tokenizers reading the bundle's tokenizer.json, compare the ids with the ones the
// bundle records, run them in onnxruntime-node and compare the outputs with the golden vectors.
// Usage: node check_text_golden.mjs BUNDLE_DIR   -> prints one JSON line; exit 0 when every check passes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import * as ort from 'onnxruntime-node';

const bundle = process.argv[2];
const read = (name) => JSON.parse(readFileSync(join(bundle, name), 'utf8'));
const manifest = read('manifest.json');
const text = manifest.text;
const goldenText = read(text.golden_text);
const tokenizer = new Tokenizer(read(text.tokenizer), {});

// tokenizer.json adds [CLS] and [SEP]; past max_length the text is cut and the closing [SEP] kept,
// as the Rust tokenizer's truncation does.
const encode = (s) => {
  const ids = tokenizer.encode(s).ids;
  return ids.length <= text.max_length ? ids : [...ids.slice(0, text.max_length - 1), ids[ids.length - 1]];
};
const ids = goldenText.texts.map(encode);
const idsMatch = ids.filter((row, i) => JSON.stringify(row) === JSON.stringify(goldenText.input_ids[i])).length;

const session = await ort.InferenceSession.create(join(bundle, manifest.model.file));
const output = manifest.outputs[0].name;
const golden = read(manifest.golden.json);
const expected = golden[`output:${output}`];  // one row per string
// The golden vectors were made with each string padded to the longest with a mask of zeros (int8's
// dynamic activation scale sees the padding), so the JavaScript ids are padded the same way.
const width = golden['input:input_ids'][0][0].length;
let maxAbsDiff = 0;
for (const [i, row] of ids.entries()) {
  const tensor = (values) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, width]);
  const padding = Array(Math.max(0, width - row.length)).fill(0);
  const feeds = { input_ids: tensor([...row, ...padding]), attention_mask: tensor([...row.map(() => 1), ...padding]) };
  const got = (await session.run(feeds))[output].data;
  const want = expected[i].flat(Infinity);
  for (let k = 0; k < want.length; k++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[k] - want[k]));
}
const tolerance = manifest.golden.tolerance.atol[output];
const passed = idsMatch === ids.length && maxAbsDiff <= tolerance;
console.log(JSON.stringify({ tokenizer: '@huggingface/tokenizers', runtime: `onnxruntime-node ${ort.env.versions.common}`,
  strings: ids.length, idsMatch, maxAbsDiff, tolerance, passed }));
process.exit(passed ? 0 : 1);
