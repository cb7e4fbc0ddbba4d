// Op codes the addon's element-wise kernels take (native/ops/elementwise.h), declared with the
// addon's surface rather than with the ops: the element-wise ops, the reductions and the autograd
// engine's gradient sums (which sits below the ops) all pass them. test/native/enums.test.ts checks
// them against the names the addon exports.

export enum Binary { Add = 0, Sub = 1, Mul = 2, Div = 3 }
export enum Unary {
  Neg = 0, Exp = 1, Log = 2, Sqrt = 3, Tanh = 4, Relu = 5, Sigmoid = 6, Square = 7,
  Scale = 8, AddScalar = 9, PowScalar = 10, Gelu = 11, Abs = 12, Silu = 13, GeluErf = 14,
}
