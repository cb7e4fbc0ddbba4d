// The enum codes lib/ passes to the addon must mean what native/ means by them: the addon exports
// each enum's member names in code order from the X-macro lists that define the C++ enums
// (native/core/enums.h), and every lib/ enum must list the same names at the same codes.
import { describe, expect, it } from "vitest";
import { native } from "../../lib/native/index.js";
import { Reduction } from "../../lib/ops/crossentropy.js";
import { Binary, Unary } from "../../lib/native/enums.js";
import { DTYPE_CODE } from "../../lib/tensor/dtype.js";

/** A TypeScript numeric enum's member names in code order. */
const namesByCode = (e: Record<string, string | number>) =>
  Object.entries(e)
    .filter(([, code]) => typeof code === "number")
    .sort(([, a], [, b]) => (a as number) - (b as number))
    .map(([name]) => name);

describe("enum codes shared with the addon", () => {
  const enums = native().enums();

  it("elementwise BinaryOp and UnaryOp", () => {
    expect(namesByCode(Binary)).toEqual(enums.BinaryOp);
    expect(namesByCode(Unary)).toEqual(enums.UnaryOp);
  });

  it("crossentropy Reduction", () => {
    expect(namesByCode(Reduction)).toEqual(enums.Reduction);
  });

  it("DType (lib/ names them as PyTorch does: float32, bfloat16, int32)", () => {
    const cppName = { float32: "F32", bfloat16: "BF16", int32: "I32" } as const;
    const codes = Object.entries(DTYPE_CODE).map(([name, code]) => [code, cppName[name as keyof typeof cppName]] as const);
    expect(codes.sort(([a], [b]) => a - b).map(([, n]) => n)).toEqual(enums.DType);
  });

  it("a code outside an enum is refused with the op and the field named", () => {
    expect(() => native().fill({ dst: { storage: new (native().Storage)(0, 0, 16), offset: 0 }, dtype: enums.DType.length, n: 4, value: 0 })).toThrow(
      /fill: argument 'dtype' is not a known code \(got 3\)/,
    );
  });
});
