// For each case dir: lowrank loads the base and PEFT's adapter, and must give PEFT's logits, the
// merged logits, the loss and every trainable parameter's gradient.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
const L = await import(new URL("../../dist-train-cpu/lib/index.js", import.meta.url).href);
const { AutoModelForCausalLM, PeftModel, generate, readSafetensors, tensor, tidy, toTensor } = L;
const rel = (a, b) => { let n = 0, d = 0; for (let i = 0; i < a.length; i++) { n += (a[i] - b[i]) ** 2; d += b[i] ** 2; } return Math.sqrt(n / Math.max(d, 1e-30)); };
const root = process.argv[2];
let bad = 0;
for (const c of readdirSync(root).sort((a, b) => +a.slice(4) - +b.slice(4))) {
  const d = join(root, c);
  let meta; try { meta = JSON.parse(readFileSync(join(d, "case.json"), "utf8")); } catch { continue; }
  const ref = readSafetensors(join(d, "ref.safetensors"));
  const get = (n) => toTensor(ref.get(n)).dataSync();
  const problems = [];
  try {
    const base = AutoModelForCausalLM.fromPretrainedSync(join(d, "base"));
    const peft = PeftModel.fromPretrainedSync(base, join(d, "adapter"), { isTrainable: true, onWarning: () => {} });
    if (meta.second) {
      peft.loadAdapter(join(d, "adapter", "other"), "other", { isTrainable: true });
      peft.setAdapter(["default", "other"]);
    }
    const ids = tensor(Int32Array.from(meta.ids.flat()), { shape: [meta.ids.length, meta.ids[0].length] });
    peft.eval();
    tidy(() => { const e = rel(peft.forward({ inputIds: ids }).logits.dataSync(), get("logits")); if (!(e < 1e-4)) problems.push(`logits ${e.toExponential(2)}`); });
    if (meta.greedy) {
      const got = generate(peft, meta.ids[0].slice(0, 4), { maxNewTokens: 6, eosTokenId: null });
      const first = got.findIndex((t, i) => t !== meta.greedy[i]);
      if (first >= 0 && meta.gaps[first] > 1e-4) problems.push(`greedy ${got} vs ${meta.greedy} (gap ${meta.gaps[first].toExponential(1)} at ${first})`);
    }
    peft.train();
    const params = peft.namedParameters().filter(([, t]) => t.requiresGrad);
    tidy(() => {
      const loss = peft.forwardLoss({ inputIds: ids, labels: ids });
      const e = Math.abs(loss.item() - get("loss")[0]); if (!(e < 1e-4)) problems.push(`loss ${loss.item()} vs ${get("loss")[0]}`);
      loss.backward();
    });
    const refGrads = ref.names.filter((n) => n.startsWith("grad:")).map((n) => n.slice(5));
    const ours = new Map(params.map(([n, t]) => [n, t]));
    if (ours.size !== refGrads.length) problems.push(`${ours.size} trainable vs PEFT ${refGrads.length}: ours-only ${[...ours.keys()].filter((n) => !refGrads.includes(n)).slice(0, 4)} peft-only ${refGrads.filter((n) => !ours.has(n)).slice(0, 4)}`);
    for (const n of refGrads) {
      const t = ours.get(n); if (!t) continue;
      if (!t.grad) { problems.push(`${n}: no grad`); continue; }
      const e = rel(t.grad.dataSync(), get("grad:" + n)); if (process.env.ALL || !(e < 1e-3)) problems.push(`${n} grad ${e.toExponential(2)}`);
    }
    peft.eval();
    if (!ref.names.includes("merged_logits")) {
      let threw = ""; try { peft.mergeAndUnload(); } catch (e) { threw = e.message; }
      if (!/Impossible to merge/.test(threw)) problems.push(`merge should refuse, got ${threw || "no error"}`);
    } else {
      const merged = peft.mergeAndUnload();
      tidy(() => { const e = rel(merged.forward({ inputIds: ids }).logits.dataSync(), get("merged_logits")); if (!(e < 1e-4)) problems.push(`merged ${e.toExponential(2)}`); });
      merged.dispose();
    }
  } catch (err) { problems.push(`threw: ${String(err.message).slice(0, 300)}`); if (process.env.STACK) console.log(err.stack); }
  if (problems.length) bad++;
  console.log(`${c} ${meta.arch} ${problems.length ? "FAIL " + problems.slice(0, +(process.env.MAX ?? 5)).join(" | ") : "ok"}`);
}
console.log(`${bad} failing`);
