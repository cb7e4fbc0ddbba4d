// Element-wise ops with NumPy broadcasting; each backward rule sits beside its forward.
// Kernels: native/ops/elementwise.h (CPU and CUDA twins).
import { Binary, Unary } from "../native/enums.js";
import { native } from "../native/index.js";
import { emptyLike, isSoleView, record, type Tensor } from "../tensor/tensor.js";
import { sumToShape } from "./reduce.js";
import { broadcastShapes, broadcastStrides, checkFloat, newFloat, stridedView, withContiguous } from "./util.js";

function binaryRaw(code: Binary, name: string, a: Tensor, b: Tensor): Tensor {
  checkFloat(name, a, b);
  const shape = broadcastShapes(name, a.shape, b.shape);
  const out = newFloat(shape, a);
  native().binary({ op: code, a: stridedView(a, broadcastStrides(a, shape)), b: stridedView(b, broadcastStrides(b, shape)), out: out.nativeView, shape });
  return out;
}

function unaryRaw(code: Unary, name: string, x: Tensor, alpha = 0): Tensor {
  checkFloat(name, x);
  const out = newFloat(x.shape, x);
  withContiguous([x], (c) => native().unary({ op: code, x: c.nativeView, out: out.nativeView, n: c.size, alpha }));
  return out;
}

/** g * f'(x) for a unary op, computed by the kernel's backward twin (over g when no one else sees it: GradNode.backward). */
export function unaryGrad(code: Unary, x: Tensor, g: Tensor, alpha: number): Tensor {
  const gx = isSoleView(g) ? g.alias() : newFloat(x.shape, x);
  withContiguous([x, g], (xc, gc) =>
    native().unaryBackward({ op: code, x: xc.nativeView, g: gc.nativeView, gx: gx.nativeView, n: xc.size, alpha, gxBf16: false }),
  );
  return gx;
}

/** The same gradient rounded to bfloat16, for a bf16 GEMM that reads it next (not recorded). */
export function unaryGradBf16(code: Unary, x: Tensor, g: Tensor, alpha: number): Tensor {
  const gx = emptyLike(x.shape, "bfloat16", x.deviceInfo);
  withContiguous([x, g], (xc, gc) =>
    native().unaryBackward({ op: code, x: xc.nativeView, g: gc.nativeView, gx: gx.nativeView, n: xc.size, alpha, gxBf16: true }),
  );
  return gx;
}

function unaryOp(code: Unary, name: string, x: Tensor, alpha = 0): Tensor {
  const out = unaryRaw(code, name, x, alpha);
  record(name, out, [x], (g, [xs]) => [unaryGrad(code, xs!, g, alpha)], [x]);
  return out;
}

// ---- binary ---------------------------------------------------------------------------------------

/** a + b (b may be a number). */
export function add(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return addScalar(a, b);
  const out = binaryRaw(Binary.Add, "add", a, b);
  record("add", out, [a, b], (g) => [sumToShape(g, a.shape), sumToShape(g, b.shape)]);
  return out;
}

/** a - b (b may be a number). */
export function sub(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return addScalar(a, -b);
  const out = binaryRaw(Binary.Sub, "sub", a, b);
  record("sub", out, [a, b], (g) => {
    const ng = neg(g);
    const gb = sumToShape(ng, b.shape);
    ng.dispose();
    return [sumToShape(g, a.shape), gb];
  });
  return out;
}

/** a * b (b may be a number). */
export function mul(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return scale(a, b);
  const out = binaryRaw(Binary.Mul, "mul", a, b);
  record(
    "mul", out, [a, b],
    (g, [as, bs]) => [
      a.requiresGrad ? reduceProduct(g, bs!, a.shape) : null,
      b.requiresGrad ? reduceProduct(g, as!, b.shape) : null,
    ],
    [a, b],
  );
  return out;
}

/** a / b (b may be a number). */
export function div(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return scale(a, 1 / b);
  const out = binaryRaw(Binary.Div, "div", a, b);
  record(
    "div", out, [a, b],
    (g, [bs, o]) => {
      // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b
      const ga = a.requiresGrad ? reduceQuotient(g, bs!, a.shape) : null;
      let gb: Tensor | null = null;
      if (b.requiresGrad) {
        const t = binaryRaw(Binary.Mul, "div", g, o!);
        const q = binaryRaw(Binary.Div, "div", t, bs!);
        t.dispose();
        const nq = unaryRaw(Unary.Neg, "div", q);
        q.dispose();
        gb = sumToShape(nq, b.shape);
        nq.dispose();
      }
      return [ga, gb];
    },
    [b, out],
  );
  return out;
}

/** sumToShape(g * x) without keeping the full-size product. */
function reduceProduct(g: Tensor, x: Tensor, shape: readonly number[]): Tensor {
  const p = binaryRaw(Binary.Mul, "mul", g, x);
  const r = sumToShape(p, shape);
  p.dispose();
  return r;
}

function reduceQuotient(g: Tensor, x: Tensor, shape: readonly number[]): Tensor {
  const p = binaryRaw(Binary.Div, "div", g, x);
  const r = sumToShape(p, shape);
  p.dispose();
  return r;
}

// ---- scalar and unary -----------------------------------------------------------------------------

/** alpha * x. */
export function scale(x: Tensor, alpha: number): Tensor {
  const out = unaryRaw(Unary.Scale, "scale", x, alpha);
  record("scale", out, [x], (g) => [unaryRaw(Unary.Scale, "scale", g, alpha)]);
  return out;
}

/** x + alpha. */
export function addScalar(x: Tensor, alpha: number): Tensor {
  const out = unaryRaw(Unary.AddScalar, "addScalar", x, alpha);
  record("addScalar", out, [x], (g) => [g.alias()]);
  return out;
}

export const neg = (x: Tensor): Tensor => unaryOp(Unary.Neg, "neg", x);
export const exp = (x: Tensor): Tensor => unaryOp(Unary.Exp, "exp", x);
export const log = (x: Tensor): Tensor => unaryOp(Unary.Log, "log", x);
export const sqrt = (x: Tensor): Tensor => unaryOp(Unary.Sqrt, "sqrt", x);
export const tanh = (x: Tensor): Tensor => unaryOp(Unary.Tanh, "tanh", x);
export const relu = (x: Tensor): Tensor => unaryOp(Unary.Relu, "relu", x);
export const sigmoid = (x: Tensor): Tensor => unaryOp(Unary.Sigmoid, "sigmoid", x);
export const square = (x: Tensor): Tensor => unaryOp(Unary.Square, "square", x);
export const abs = (x: Tensor): Tensor => unaryOp(Unary.Abs, "abs", x);
/** x ** p for a scalar exponent. */
export const pow = (x: Tensor, p: number): Tensor => unaryOp(Unary.PowScalar, "pow", x, p);
/**
 * GELU. approximate "tanh" (the default: GPT-2's "gelu_new"): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)));
 * "none": the exact x·Φ(x) = 0.5·x·(1 + erf(x/√2)) (PyTorch's default, transformers' "gelu").
 */
export function gelu(x: Tensor, opts: { approximate?: "tanh" | "none" } = {}): Tensor {
  const approximate = opts.approximate ?? "tanh";
  if (approximate !== "tanh" && approximate !== "none") throw new Error(`gelu: approximate must be "tanh" or "none", got ${JSON.stringify(approximate)}`);
  return unaryOp(approximate === "tanh" ? Unary.Gelu : Unary.GeluErf, "gelu", x);
}
/** SiLU (swish), x·sigmoid(x): Llama's MLP activation. */
export const silu = (x: Tensor): Tensor => unaryOp(Unary.Silu, "silu", x);

/** dst += src in place (same shape, dst contiguous). Not recorded: for gradient accumulation. */
export function addInPlace(dst: Tensor, src: Tensor): void {
  checkFloat("addInPlace", dst, src);
  if (!dst.isContiguous()) throw new Error("addInPlace: destination must be contiguous");
  const shape = broadcastShapes("addInPlace", dst.shape, src.shape);
  if (shape.length !== dst.ndim || shape.some((s, i) => s !== dst.shape[i])) {
    throw new Error(`addInPlace: source broadcasts to ${shape.join("x")}, larger than the destination`);
  }
  native().binary({ op: Binary.Add, a: dst.nativeView, b: stridedView(src, broadcastStrides(src, shape)), out: dst.nativeView, shape });
}
