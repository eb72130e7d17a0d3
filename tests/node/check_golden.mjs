// Loads a bundle in onnxruntime-node and checks its golden vectors with the manifest's tolerance,
// feeding the raw golden samples through the manifest's documented preprocessing, as an app would.
// Usage: node check_golden.mjs BUNDLE_DIR   -> prints one JSON line; exit 0 when every check passes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';

const bundle = process.argv[2];
const manifest = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8'));
const golden = JSON.parse(readFileSync(join(bundle, manifest.golden.json), 'utf8'));
const session = await ort.InferenceSession.create(join(bundle, manifest.model.file));

const inputSpec = manifest.inputs[0];
const outputName = manifest.outputs[0].name;
const shape = manifest.golden.arrays.inputs.shape;        // [N, C, H, W]
// The app's path: raw pixels through the manifest's documented preprocessing, not the stored inputs.
const pre = manifest.preprocessing;
const perChannel = shape.slice(2).reduce((a, b) => a * b, 1);
const raw = golden.raw_inputs.flat(Infinity);
const fed = Float32Array.from(raw, (value, i) => {
  const c = Math.floor(i / perChannel) % shape[1];
  return (value * pre.pixel_scale - pre.mean[c]) / pre.std[c];
});
const stored = golden.inputs.flat(Infinity);
const preprocessingDiff = Math.max(...Array.from(fed, (v, i) => Math.abs(v - stored[i])));
const input = new ort.Tensor('float32', fed, shape);
const logits = (await session.run({ [inputSpec.name]: input }))[outputName];

const classes = logits.dims[1];
const expected = golden.logits.flat();
let maxAbsDiff = 0;
let top1Matches = 0;
for (let i = 0; i < logits.dims[0]; i++) {
  let best = 0;
  for (let k = 0; k < classes; k++) {
    const value = logits.data[i * classes + k];
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(value - expected[i * classes + k]));
    if (value > logits.data[i * classes + best]) best = k;
  }
  if (best === golden.top1[i]) top1Matches++;
}
const tolerance = manifest.golden.tolerance.logits_atol;
const passed = maxAbsDiff <= tolerance && top1Matches === golden.top1.length && preprocessingDiff <= 1e-3;
console.log(JSON.stringify({ runtime: `onnxruntime-node ${ort.env.versions.common}`, samples: golden.top1.length,
  preprocessingDiff, maxAbsDiff, tolerance, top1Matches, passed }));
process.exit(passed ? 0 : 1);
