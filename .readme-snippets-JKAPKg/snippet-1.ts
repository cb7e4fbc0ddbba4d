import { fineTune } from "/work/main/lib/index.ts";

const run = await fineTune({
  model: "data/demo/model", data: "data/demo/train.jsonl", out: "runs/lib",   // what train's --model, --data, --out take
  steps: 300, r: 8, alpha: 16, target: ["c_attn", "c_proj", "c_fc"], batchSize: 16, lr: 2e-3, warmup: 20,
  onStart: ({ model, template }) => console.log(model.trainableParametersLine(), template.source),
});
console.log(run.status, run.history.at(-1)?.loss, run.adapterDir); // "completed", the last loss, "runs/lib"
run.model.dispose();                                                 // the trained model is yours: free it when done
