// The layer check (npm run check:layers, run by .ci/run): lib/ imports only downward through the
// layers below, and has no import cycle, type-only imports included. ARCHITECTURE.md draws the
// layers. A file in lib/ that no layer claims fails the check too: place a new folder in the table.
//
// Layers from the bottom up; a layer may import itself and any layer listed before it.
const LAYERS = [
  ["native", "^lib/(native/|(env|profile)\\.ts$)"], // the addon: loader, typed surface, enum codes; env checks, profiler
  ["linalg", "^lib/linalg/"], // plain-JS dense linear algebra (SVD, QR) for the analysis tools
  ["tensor", "^lib/tensor/"], // Tensor, storage, devices, dtypes, tidy scopes, the tape
  ["runtime", "^lib/runtime\\.ts$"], // build info, threads, synchronize, device memory
  ["autograd", "^lib/autograd/"], // the backward engine, registered on Tensor
  ["ops", "^lib/ops/"], // differentiable op families over the native kernels
  ["io", "^lib/io/"], // files: safetensors, JSON, atomic writes
  ["plot", "^lib/plot/"], // charts as SVG and PNG
  ["nn", "^lib/nn/"], // Module and the layers
  ["optim", "^lib/optim/"], // optimizers, clipping, schedules
  ["models", "^lib/models/"], // GPT-2 and its tokenizer
  ["peft", "^lib/peft/"], // LoRA/DoRA adapters in PEFT's format
  ["train", "^lib/train/"], // data, Trainer, checkpoints, metrics
  ["analysis", "^lib/analysis/"], // parameter counts, adapter spectra, sweeps
  ["cli", "^lib/cli/"], // the lowrank command
  ["index", "^lib/index\\.ts$"], // the public entry point
];

const anyOf = (patterns) => `(${patterns.join("|")})`;

module.exports = {
  forbidden: [
    {
      name: "no-circular",
      comment: "An import cycle (type-only imports count): break it by moving the shared part down a layer.",
      severity: "error",
      from: { path: "^lib/" },
      to: { circular: true },
    },
    ...LAYERS.slice(0, -1).map(([name, path], i) => ({
      name: `${name}-imports-upward`,
      comment: `lib/ layer "${name}" may import only ${LAYERS.slice(0, i + 1).map(([n]) => n).join(", ")} (see ARCHITECTURE.md).`,
      severity: "error",
      from: { path },
      to: { path: anyOf(LAYERS.slice(i + 1).map(([, p]) => p)) },
    })),
    {
      name: "not-in-a-layer",
      comment: "A file in lib/ that no layer of .dependency-cruiser.cjs claims: add its folder to LAYERS.",
      severity: "error",
      from: { path: "^lib/", pathNot: anyOf(LAYERS.map(([, p]) => p)) },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    // Type-only imports are dependencies too: a cycle through types still knots the layers.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
