// Python's str.strip/lstrip/rstrip and Jinja's trim filter, which @huggingface/jinja 0.5.13 gets
// wrong: its strip methods ignore the `chars` argument (Qwen3's template strips "\n" only, with
// content.lstrip('\n'), and keeps leading spaces) and strip JavaScript's whitespace set, not
// Python's. chat-template.ts's compile() rewrites those calls in the parsed template (withPythonStrip)
// into calls of these functions, which renderChatTemplate passes as template variables.
const PY_WHITESPACE = new Set("\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000");
const STRIP_SIDES = { strip: [true, true], lstrip: [true, false], rstrip: [false, true] } as const;
type StripName = keyof typeof STRIP_SIDES;

function pyStrip(name: StripName, s: unknown, chars?: unknown): string {
  if (typeof s !== "string") throw new Error(`${name}() is a string method, called on ${s === null ? "none" : typeof s}`);
  if (chars !== undefined && chars !== null && typeof chars !== "string") throw new Error(`${name}() takes a string of characters, got ${typeof chars}`);
  const strip = typeof chars === "string" ? new Set(chars) : PY_WHITESPACE;
  const [left, right] = STRIP_SIDES[name];
  const cps = [...s];
  let start = 0, end = cps.length;
  if (left) while (start < end && strip.has(cps[start]!)) start++;
  if (right) while (end > start && strip.has(cps[end - 1]!)) end--;
  return cps.slice(start, end).join("");
}

/** The template variables that the rewritten strip calls use. */
export const PY_STRIP_FUNCTIONS = Object.fromEntries(
  (Object.keys(STRIP_SIDES) as StripName[]).map((name) => [`__lowrank_py_${name}`, (s: unknown, chars?: unknown) => pyStrip(name, s, chars)]),
);

/** A parsed template node (@huggingface/jinja's AST: classes told apart by their `type`). */
export type TemplateNode = { type: string; [field: string]: unknown };
type Node = TemplateNode;
const isNode = (v: unknown): v is Node => typeof v === "object" && v !== null && typeof (v as Node).type === "string";
const callOf = (name: StripName, args: unknown[]): Node => ({ type: "CallExpression", callee: { type: "Identifier", value: `__lowrank_py_${name}` }, args });

/** `node` with x.strip(...), x.lstrip(...), x.rstrip(...) and x|trim(...) calling PY_STRIP_FUNCTIONS, children first. */
export function withPythonStrip(node: Node): Node {
  for (const [key, value] of Object.entries(node)) {
    if (Array.isArray(value)) value.forEach((v, i) => isNode(v) && (value[i] = withPythonStrip(v)));
    else if (isNode(value)) node[key] = withPythonStrip(value);
  }
  const callee = node.callee as Node | undefined;
  if (node.type === "CallExpression" && callee?.type === "MemberExpression" && !callee.computed) {
    const name = (callee.property as Node).value as string;
    if ((callee.property as Node).type === "Identifier" && Object.hasOwn(STRIP_SIDES, name)) return callOf(name as StripName, [callee.object, ...(node.args as unknown[])]);
  }
  if (node.type === "FilterExpression") {
    const filter = node.filter as Node;
    if (filter.type === "Identifier" && filter.value === "trim") return callOf("strip", [node.operand]);
    const fn = filter.callee as Node | undefined;
    if (filter.type === "CallExpression" && fn?.type === "Identifier" && fn.value === "trim") return callOf("strip", [node.operand, ...(filter.args as unknown[])]);
  }
  return node;
}
