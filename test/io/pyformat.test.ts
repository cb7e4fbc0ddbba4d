// Python's f-string number formats (lib/io/pyformat.ts).
import { describe, expect, it } from "vitest";
import { formatFixed, formatThousands } from "../../lib/io/pyformat.js";

describe("Python number formatting", () => {
  it("rounds exactly in formatFixed and formats thousands", () => {
    expect(formatFixed(2.5, 0)).toBe("2");
    expect(formatFixed(3.5, 0)).toBe("4");
    expect(formatFixed(0.125, 2)).toBe("0.12");
    expect(formatFixed(1e22, 1)).toBe("10000000000000000000000.0");
    expect(formatFixed(5e-324, 4)).toBe("0.0000");
    expect(formatFixed(-0.00001, 4)).toBe("-0.0000");
    expect(formatFixed(NaN, 4)).toBe("nan");
    expect(formatThousands(1234567)).toBe("1,234,567");
    expect(formatThousands(999)).toBe("999");
  });
});
