/** Element types. bfloat16 holds frozen weights and activations on CUDA; trainable tensors stay float32. */
export type DType = "float32" | "bfloat16" | "int32";

export const DTYPES: readonly DType[] = ["float32", "bfloat16", "int32"];

/** The code the native addon uses for each dtype (native/core/dtype.h). */
export const DTYPE_CODE: Record<DType, number> = { float32: 0, bfloat16: 1, int32: 2 };

export const DTYPE_SIZE: Record<DType, number> = { float32: 4, bfloat16: 2, int32: 4 };

export function checkDType(dtype: string, op: string): DType {
  if (!(DTYPES as readonly string[]).includes(dtype)) {
    throw new Error(`${op}: unknown dtype "${dtype}"; use one of ${DTYPES.join(", ")}`);
  }
  return dtype as DType;
}

/** float32 -> bfloat16 bits, round to nearest even (the same rule as native/core/dtype.h). */
export function f32ToBf16Bits(value: number): number {
  const f = new Float32Array([value]);
  const u = new Uint32Array(f.buffer)[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(bits: number): number {
  return new Float32Array(new Uint32Array([(bits & 0xffff) << 16]).buffer)[0]!;
}
