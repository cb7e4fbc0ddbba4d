// The LoRA update as one differentiable op: out = y + s·(drop(x)·Aᵀ)·Bᵀ, where y is the frozen
// layer's output. x [.., k], A [r, k], B [d, r], y [.., d]; N = the rows of x.
//
// Forward: u = drop(x)·Aᵀ (N×r, kept for backward), then out = y + s·u·Bᵀ, accumulated onto a copy
// of y, or onto y itself when the caller hands y over (consumeY) and nothing else shares its
// storage. Backward, with v = g·B (N×r):
//   gy = g                 gB = s·gᵀ·u                gA = s·vᵀ·drop(x)
//   gx = s·(v·A) ⊙ mask/(1-p)
// The dropout mask is never stored: drop(x) and the masked gx are recomputed from the Philox
// (seed, offset) the forward drew (see ./dropout.ts), and with p = 0 there is no copy of x. Frozen
// operands cost nothing in backward.
//
// On the CPU (float32) both directions are one native call each (native/cpu/lora.cc): blocks of
// rows run all their products while their rows sit in cache, and one Philox evaluation masks both
// x and gx. On CUDA they are composed here from GEMMs and the dropout kernel, one N×k buffer
// serving for drop(x) (for gA) and then for gx.
import { native } from "../native/index.js";
import { defaultGenerator, type Generator } from "../tensor/random.js";
import { formatShape, isSoleView, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { gemm2d } from "./matmul.js";
import { checkFloat, newFloat, withContiguous } from "./util.js";

export interface LoraDeltaOptions {
  /** s: alpha / r, or alpha / sqrt(r) with rsLoRA. */
  scaling: number;
  /** Dropout probability on x before A (0 = none). */
  dropout?: number;
  /** Dropout is applied only when training. */
  training?: boolean;
  generator?: Generator;
  /**
   * The caller hands y over and will not read it again (a layer's own base output): out is then
   * written into y's storage when no other view or saved tensor shares it, saving a copy of y.
   */
  consumeY?: boolean;
}

/** y + s·(drop(x)·Aᵀ)·Bᵀ; see the file comment. */
export function loraDelta(y: Tensor, x: Tensor, A: Tensor, B: Tensor, opts: LoraDeltaOptions): Tensor {
  const op = "loraDelta";
  checkFloat(op, y, x, A, B);
  const k = x.shape[x.ndim - 1]!, r = A.shape[0]!, d = y.shape[y.ndim - 1]!;
  if (A.ndim !== 2 || A.shape[1] !== k || B.ndim !== 2 || B.shape[0] !== d || B.shape[1] !== r) {
    throw new Error(
      `${op}: for x ${formatShape(x.shape)} and output ${formatShape(y.shape)}, lora_A must be [r, ${k}] and lora_B [${d}, r]; ` +
        `got A ${formatShape(A.shape)} and B ${formatShape(B.shape)}`,
    );
  }
  const N = shapeSize(x.shape.slice(0, -1));
  if (shapeSize(y.shape.slice(0, -1)) !== N) throw new Error(`${op}: x ${formatShape(x.shape)} and output ${formatShape(y.shape)} have different row counts`);
  const s = opts.scaling;
  const p = opts.training === false ? 0 : opts.dropout ?? 0;
  const { seed, offset } = p > 0 ? (opts.generator ?? defaultGenerator).next(N * k) : { seed: 0n, offset: 0n };
  const maskScale = p >= 1 ? 0 : 1 / (1 - p);
  /** dst = src ⊙ mask/(1-p) over N×k elements (the same mask on every call); dst may be src. */
  const mask = (src: Tensor, dst: Tensor): void =>
    native().dropout({ x: src.nativeView, y: dst.nativeView, n: N * k, p, scale: maskScale, seed, offset });
  /** drop(x2) in a new N×k tensor. */
  const dropped = (x2: Tensor): Tensor => {
    const dst = newFloat([N, k], x2);
    mask(x2, dst);
    return dst;
  };

  const fused = x.deviceInfo.type === "cpu" && [x, A, B, y].every((t) => t.dtype === "float32");
  return withContiguous([x, A, B, y], (xc, Ac, Bc, yc) => {
    const dims = { N, k, r, d, scaling: s, p, maskScale, seed, offset };
    const u = newFloat([N, r], x);
    const inPlace = opts.consumeY === true && y.isContiguous() && isSoleView(y); // y's storage, no other reader: written over
    const out = inPlace ? y.detach() : newFloat(y.shape, y);
    if (fused) {
      native().loraForward({ ...dims, x: xc.nativeView, A: Ac!.nativeView, B: Bc!.nativeView, y: yc!.nativeView, out: out.nativeView, u: u.nativeView });
    } else {
      const x2 = xc.reshape(N, k);
      const xd = p > 0 ? dropped(x2) : x2;
      gemm2d(u, xd, false, Ac!, true, 1, 0); // u = drop(x)·Aᵀ
      if (xd !== x2) xd.dispose();
      x2.dispose();
      if (!inPlace) native().copyBytes({ dst: out.nativeView, src: yc!.nativeView, bytes: N * d * 4 });
      const out2 = out.reshape(N, d);
      gemm2d(out2, u, false, Bc!, true, s, 1); // out += s·u·Bᵀ
      out2.dispose();
    }

    const needX = x.requiresGrad, needA = A.requiresGrad, needB = B.requiresGrad;
    record(
      op, out, [y, x, A, B],
      (g, [xs, As, Bs, us]) => {
        const g2 = withContiguous([g], (gc) => gc.reshape(N, d));
        const gx = needX ? newFloat([...x.shape], g) : null;
        const gA = needA ? newFloat([r, k], g) : null;
        const gB = needB ? newFloat([d, r], g) : null;
        if (fused) {
          native().loraBackward({
            ...dims, g: g2.nativeView, x: xs!.nativeView, A: As!.nativeView, B: Bs!.nativeView, u: us!.nativeView,
            gx: gx?.nativeView ?? null, gA: gA?.nativeView ?? null, gB: gB?.nativeView ?? null,
          });
        } else {
          if (gx || gA) {
            const v = newFloat([N, r], g);
            gemm2d(v, g2, false, Bs!, false, 1, 0); // v = g·B
            let buf: Tensor | null = null; // N×k: drop(x) for gA, then gx
            if (gA) {
              const x2s = xs!.reshape(N, k);
              if (p > 0) buf = dropped(x2s);
              gemm2d(gA, v, true, buf ?? x2s, false, s, 0); // s·vᵀ·drop(x)
              x2s.dispose();
            }
            if (gx) {
              const gx2 = gx.reshape(N, k);
              gemm2d(gx2, v, false, As!, false, s, 0); // s·v·A
              if (p > 0) mask(gx2, gx2);
              gx2.dispose();
            }
            buf?.dispose();
            v.dispose();
          }
          if (gB) gemm2d(gB, g2, true, us!, false, s, 0); // s·gᵀ·u
        }
        g2.dispose();
        return [g.alias(), gx, gA, gB];
      },
      [xc, Ac!, Bc!, u],
    );
    u.dispose();
    return out;
  });
}
