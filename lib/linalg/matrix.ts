// Dense row-major float64 matrices: the common currency of the CPU linear algebra in lib/linalg.
// Tensors convert with `matrix(rows, cols, tensor.dataSync())`; results go back with
// `tensor(result.data, [rows, cols])` after rounding to float32.
import { gemmNT } from "./kernels.js";

export interface Matrix {
  readonly rows: number;
  readonly cols: number;
  /** rows·cols values, row-major: entry (i, j) at i·cols + j. */
  readonly data: Float64Array;
}

/** A rows×cols matrix over a copy of `data` (e.g. a tensor's dataSync()), or of zeros. */
export function matrix(rows: number, cols: number, data?: ArrayLike<number>): Matrix {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new Error(`matrix: dimensions must be non-negative integers, got ${rows}×${cols}`);
  }
  const out = new Float64Array(rows * cols);
  if (data !== undefined) {
    if (data.length !== rows * cols) {
      throw new Error(`matrix: ${rows}×${cols} needs ${rows * cols} values, got ${data.length}`);
    }
    out.set(data);
  }
  return { rows, cols, data: out };
}

export function transpose(a: Matrix): Matrix {
  const { rows, cols, data } = a;
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j]!;
  }
  return { rows: cols, cols: rows, data: out };
}

/** a·b. */
export function matmul(a: Matrix, b: Matrix): Matrix {
  if (a.cols !== b.rows) throw new Error(`matmul: ${a.rows}×${a.cols} · ${b.rows}×${b.cols}: inner dimensions differ`);
  const out = new Float64Array(a.rows * b.cols);
  gemmNT(a.rows, b.cols, a.cols, 1, a.data, 0, a.cols, transpose(b).data, 0, a.cols, out, 0, b.cols);
  return { rows: a.rows, cols: b.cols, data: out };
}

/** Rows [r0, r1) and columns [c0, c1) of a, copied. */
export function submatrix(a: Matrix, r0: number, r1: number, c0: number, c1: number): Matrix {
  if (!(0 <= r0 && r0 <= r1 && r1 <= a.rows && 0 <= c0 && c0 <= c1 && c1 <= a.cols)) {
    throw new Error(`submatrix: rows [${r0}, ${r1}) and columns [${c0}, ${c1}) are outside ${a.rows}×${a.cols}`);
  }
  const cols = c1 - c0;
  const out = new Float64Array((r1 - r0) * cols);
  for (let i = r0; i < r1; i++) out.set(a.data.subarray(i * a.cols + c0, i * a.cols + c1), (i - r0) * cols);
  return { rows: r1 - r0, cols, data: out };
}

/** Throws unless every entry is finite: the iterative solvers would never converge on NaN or ±Inf. */
export function checkFinite(op: string, a: Matrix): void {
  for (let i = 0; i < a.data.length; i++) {
    if (!Number.isFinite(a.data[i]!)) {
      throw new Error(`${op}: entry (${Math.floor(i / a.cols)}, ${i % a.cols}) of the ${a.rows}×${a.cols} input is ${a.data[i]}`);
    }
  }
}
