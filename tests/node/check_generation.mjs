// A generator bundle in JavaScript, as a web or Node app runs it (docs/app-integration.md):
// tokenize each golden prompt with @huggingface/tokenizers reading the bundle's tokenizer.json,
// decode greedily with the KV cache in onnxruntime-node, and compare the ids with the bundle's.
// Usage: node check_generation.mjs BUNDLE_DIR   -> prints one JSON line; exit 0 when every check passes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import * as ort from 'onnxruntime-node';

const bundle = process.argv[2];
const read = (name) => JSON.parse(readFileSync(join(bundle, name), 'utf8'));
const manifest = read('manifest.json');
const golden = read(manifest.golden.json);
const tokenizer = new Tokenizer(read(manifest.generation.tokenizer), {});
const session = await ort.InferenceSession.create(join(bundle, manifest.model.file));

// The cache's shape, read off the manifest's inputs: past_key_values.{i}.key is batch x heads x past x size.
const pastNames = manifest.inputs.map((t) => t.name).filter((n) => n.startsWith('past_key_values.'));
const [, heads, , size] = manifest.inputs.find((t) => t.name === pastNames[0]).shape;
const int64 = (values) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, values.length]);

async function greedy(prompt, newTokens) {
  let past = Object.fromEntries(pastNames.map((n) => [n, new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, size])]));
  let fed = prompt;
  let total = 0;
  const tokens = [];
  for (let step = 0; step < newTokens; step++) {
    const positions = fed.map((_, i) => total + i);
    total += fed.length;
    const out = await session.run({ input_ids: int64(fed), attention_mask: int64(Array(total).fill(1)),
      position_ids: int64(positions), ...past });
    const vocab = out.logits.dims[2];
    const last = out.logits.data.subarray((fed.length - 1) * vocab, fed.length * vocab);
    let best = 0;
    for (let k = 1; k < vocab; k++) if (last[k] > last[best]) best = k;
    tokens.push(best);
    past = Object.fromEntries(pastNames.map((n) => [n, out[n.replace('past_key_values.', 'present.')]]));
    fed = [best];
  }
  return tokens;
}

let idsMatch = 0;
let generationMatch = 0;
const count = manifest.golden.prompts.length;
for (const [i, text] of manifest.golden.prompts.entries()) {
  const ids = tokenizer.encode(text).ids;
  const stored = golden.prompt_ids[i].slice(0, golden.prompt_lengths[i]);
  if (JSON.stringify(ids) === JSON.stringify(stored)) idsMatch++;
  const tokens = await greedy(ids, golden.greedy_ids[i].length);
  if (JSON.stringify(tokens) === JSON.stringify(golden.greedy_ids[i])) generationMatch++;
}
const passed = idsMatch === count && generationMatch === count;
console.log(JSON.stringify({ runtime: `onnxruntime-node ${ort.env.versions.common}`, prompts: count, idsMatch,
  generationMatch, passed }));
process.exit(passed ? 0 : 1);
