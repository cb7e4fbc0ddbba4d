// Float32 re-statements of torch's single-tensor AdamW and SGD updates in JS (every operation
// rounded with Math.fround, scalars prepared in double as torch's Python code does), for inputs
// the PyTorch fixture does not cover: large tensors, several groups, Nesterov, weight decay.
const f = Math.fround;

export interface AdamWHyper { lr: number; beta1: number; beta2: number; eps: number; wd: number; step: number }

/** One AdamW step on flat arrays, in place. */
export function adamwRef(p: Float32Array, g: ArrayLike<number>, m: Float32Array, v: Float32Array, h: AdamWHyper): void {
  const decay = f(1 - h.lr * h.wd), w = f(1 - h.beta1), b2 = f(h.beta2), omb2 = f(1 - h.beta2);
  const bc2Sqrt = f((1 - h.beta2 ** h.step) ** 0.5), eps = f(h.eps), negStep = f(-(h.lr / (1 - h.beta1 ** h.step)));
  for (let i = 0; i < p.length; i++) {
    const gi = g[i]!;
    const pi = f(p[i]! * decay);
    m[i] = w < 0.5 ? f(m[i]! + f(w * f(gi - m[i]!))) : f(gi - f(f(gi - m[i]!) * f(1 - w)));
    v[i] = f(f(v[i]! * b2) + f(f(omb2 * gi) * gi));
    const denom = f(f(f(Math.sqrt(v[i]!)) / bc2Sqrt) + eps);
    p[i] = f(pi + f(f(negStep * m[i]!) / denom));
  }
}

export interface SGDHyper { lr: number; momentum: number; dampening: number; wd: number; nesterov: boolean }

/** One SGD step on flat arrays, in place; `buf` is null on the first step and is returned. */
export function sgdRef(p: Float32Array, g: ArrayLike<number>, buf: Float32Array | null, h: SGDHyper): Float32Array | null {
  const wd = f(h.wd), mom = f(h.momentum), omd = f(1 - h.dampening), negLr = f(-h.lr);
  const out = h.momentum !== 0 ? (buf ?? new Float32Array(p.length)) : null;
  for (let i = 0; i < p.length; i++) {
    let gi = g[i]!;
    if (h.wd !== 0) gi = f(gi + f(wd * p[i]!));
    if (out) {
      out[i] = buf ? f(f(out[i]! * mom) + f(omd * gi)) : gi;
      gi = h.nesterov ? f(gi + f(mom * out[i]!)) : out[i]!;
    }
    p[i] = f(p[i]! + f(negLr * gi));
  }
  return out;
}
