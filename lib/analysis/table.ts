// Plain-text tables for the terminal: columns padded to their widest cell, numbers right-aligned
// so their digits line up, a rule under the header.

export interface Column {
  header: string;
  /** "right" for numbers (default "left"). */
  align?: "left" | "right";
}

/** The table as lines (no trailing newline); every row must have one cell per column. */
export function formatTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  for (const [i, row] of rows.entries()) {
    if (row.length !== columns.length) throw new Error(`formatTable: row ${i} has ${row.length} cells for ${columns.length} columns`);
  }
  const widths = columns.map((c, j) => Math.max(c.header.length, ...rows.map((r) => r[j]!.length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, j) => (columns[j]!.align === "right" ? cell.padStart(widths[j]!) : cell.padEnd(widths[j]!))).join("  ").trimEnd();
  return [line(columns.map((c) => c.header)), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
