// Python `re` patterns read from adapter_config.json (target_modules, exclude_modules,
// rank_pattern keys, layers_pattern, modules_to_save), translated to JS RegExp so lowrank matches
// module names as PEFT does.

/** A Python `re` pattern translated to JS: the source (to embed in a larger pattern) and its flags. */
export interface TranslatedPattern {
  source: string;
  /** JS flags from a leading inline-flag group such as "(?i)"; "" when there is none. */
  flags: string;
}

/**
 * Translates a Python `re` pattern (as adapter_config.json stores them: target_modules,
 * exclude_modules, rank_pattern keys, layers_pattern, modules_to_save) into JS RegExp syntax.
 * Rewritten: (?P<name>…) → (?<name>…), (?P=name) → \k<name>, \A → ^, \Z → $, (?#…) removed,
 * a leading "]" in a class, {,n} → {0,n}, and leading global flags (?i) (?m) (?s) (?a) (?u).
 * Refused with an explanation: verbose (?x), locale (?L), scoped flags (?i:…), atomic groups,
 * possessive quantifiers and conditionals, which JS lacks. Module names are ASCII, so Python's
 * Unicode-aware \w \d \s behave like JS's ASCII ones here.
 */
export function translatePythonRegex(pattern: string, what: string): TranslatedPattern {
  const refuse = (reason: string): never => {
    throw new Error(
      `${what}: the regular expression ${JSON.stringify(pattern)} uses ${reason}, which lowrank cannot ` +
        `translate to JavaScript. Rewrite it without that construct (plain groups, classes and quantifiers work).`,
    );
  };
  let flags = "";
  let i = 0;
  const global = /^\(\?([aiLmsux]+)\)/.exec(pattern);
  if (global) {
    for (const f of global[1]!) {
      if (f === "x") refuse("the verbose flag (?x)");
      if (f === "L") refuse("the locale flag (?L)");
      if ((f === "i" || f === "m" || f === "s") && !flags.includes(f)) flags += f;
    }
    i = global[0].length;
  }
  let out = "";
  let inClass = false;
  while (i < pattern.length) {
    const ch = pattern[i]!;
    if (ch === "\\") {
      const next = pattern[i + 1];
      if (next === undefined) refuse("a trailing backslash");
      if (!inClass && next === "A") out += "^";
      else if (!inClass && next === "Z") out += "$";
      else out += ch + next;
      i += 2;
      continue;
    }
    if (inClass) {
      if (ch === "]") inClass = false;
      out += ch;
      i++;
      continue;
    }
    if (ch === "[") {
      inClass = true;
      out += ch;
      i++;
      if (pattern[i] === "^") {
        out += "^";
        i++;
      }
      // Python reads a "]" right after "[" or "[^" as a literal; JS would close an empty class
      if (pattern[i] === "]") {
        out += "\\]";
        i++;
      }
      continue;
    }
    if (ch === "(" && pattern[i + 1] === "?") {
      const rest = pattern.slice(i + 2);
      if (rest.startsWith("P<")) {
        out += "(?<";
        i += 4;
      } else if (rest.startsWith("P=")) {
        const end = pattern.indexOf(")", i);
        if (end === -1) refuse("an unterminated (?P=name)");
        out += `\\k<${pattern.slice(i + 4, end)}>`;
        i = end + 1;
      } else if (rest.startsWith("#")) {
        const end = pattern.indexOf(")", i);
        if (end === -1) refuse("an unterminated comment (?#");
        i = end + 1;
      } else if (rest.startsWith(">")) {
        refuse("an atomic group (?>…)");
      } else if (rest.startsWith("(")) {
        refuse("a conditional group (?(…)…)");
      } else if (/^[aiLmsux-]+[:)]/.test(rest)) {
        refuse("inline flags that are not at the start of the pattern, or scoped flags (?i:…)");
      } else {
        // (?: (?= (?! (?<= (?<! (?<name> are the same in both
        out += "(?";
        i += 2;
      }
      continue;
    }
    if ((ch === "*" || ch === "+" || ch === "?" || ch === "}") && pattern[i + 1] === "+") {
      refuse("a possessive quantifier");
    }
    if (ch === "{") {
      const m = /^\{,(\d+)\}/.exec(pattern.slice(i));
      if (m) {
        out += `{0,${m[1]}}`;
        i += m[0].length;
        continue;
      }
    }
    out += ch;
    i++;
  }
  if (inClass) refuse("an unterminated character class");
  return { source: out, flags };
}

/**
 * Compiles a translated Python pattern embedded in `template` (which receives the JS source).
 * Callers whose Python code wraps the user's pattern (PEFT's rf"(.*\.)?({key})$") pass
 * `allowFlags: false`: Python rejects global flags that are not at the very start.
 */
export function compilePythonRegex(
  pattern: string,
  what: string,
  template: (source: string) => string,
  allowFlags: boolean,
): RegExp {
  const { source, flags } = translatePythonRegex(pattern, what);
  if (flags && !allowFlags) {
    throw new Error(
      `${what}: ${JSON.stringify(pattern)} starts with inline flags, but PEFT embeds this pattern inside a larger ` +
        `one, where Python refuses global flags ("global flags not at the start of the expression"). Remove them.`,
    );
  }
  try {
    return new RegExp(template(source), flags);
  } catch (err) {
    throw new Error(`${what}: ${JSON.stringify(pattern)} is not a valid regular expression: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
