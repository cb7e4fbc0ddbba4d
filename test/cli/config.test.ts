// --config FILE (YAML or JSON) for train, sweep, merge and generate: the keys are the commands' own
// long flags, values go through the flags' parsers, flags on the command line win, and mistakes
// are refused with the file, the line and the key. A run from a config file equals the same run
// from flags.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyConfigFile, configKeys } from "../../lib/cli/config.js";
import { generateCommand } from "../../lib/cli/generate.js";
import { mergeCommand } from "../../lib/cli/merge.js";
import { sweepCommand } from "../../lib/cli/sweep.js";
import { trainCommand } from "../../lib/cli/train.js";
import type { StepRecord } from "../../lib/train/metrics.js";
import { runCli, workspace } from "./helpers.js";

let ws: Awaited<ReturnType<typeof workspace>>;
beforeAll(async () => {
  ws = await workspace("lowrank-cli-config-");
});
afterAll(() => ws?.cleanup());

const file = (name: string, text: string) => {
  const path = join(ws.dir, name);
  writeFileSync(path, text);
  return path;
};

/** A command's option values after parsing `args` (user arguments, no action run). */
function parsed(cmd: Command, args: string[]): Record<string, unknown> {
  cmd.action(() => {});
  cmd.parse(args, { from: "user" });
  return cmd.opts();
}

describe("config files", () => {
  it("accept every long flag of the command as a key, and only those", () => {
    for (const make of [trainCommand, sweepCommand, mergeCommand, generateCommand]) {
      const cmd = make();
      // a negation (generate's --no-chat-template) is no key of its own
      const flags = cmd.options.filter((o) => !o.negate).map((o) => o.long!.slice(2)).filter((k) => k !== "config");
      expect(configKeys(cmd).sort(), cmd.name()).toEqual(flags.sort());
    }
    expect(configKeys(sweepCommand())).toEqual(expect.arrayContaining(["ranks", "alpha-ratio", "lr", "target"]));
    expect(configKeys(sweepCommand())).not.toContain("r");
  });

  it("give typed values (numbers, booleans, lists) the flags' parsed values; flags typed on the command line win, before or after --config", () => {
    const yaml = file("values.yaml", "# a run\nmodel: m\ndata: d.jsonl\nout: o\nlr: 2e-3\nsteps: 6\npacking: true\nrslora: false\ntarget: [c_attn, c_fc]\nschedule: cosine\nresume: true\n");
    expect(parsed(trainCommand(), ["--config", yaml])).toMatchObject({ model: "m", lr: 0.002, steps: 6, packing: true, target: "c_attn,c_fc", schedule: "cosine", resume: true, r: 16 });
    expect(parsed(trainCommand(), ["--config", yaml]).rslora).toBeUndefined(); // false: as if the flag were absent
    expect(parsed(trainCommand(), ["--lr", "1e-4", "--config", yaml, "--steps", "3"])).toMatchObject({ lr: 1e-4, steps: 3, schedule: "cosine" });
    const json = file("values.json", JSON.stringify({ model: "m", adapter: "a", prompt: "hi", "max-new-tokens": 5, temperature: 0.5 }));
    expect(parsed(generateCommand(), ["--config", json, "--temperature", "0"])).toMatchObject({ model: "m", adapter: "a", prompt: "hi", maxNewTokens: 5, temperature: 0 });
    const sweep = file("sweep.yaml", "model: m\ndata: d\nout: o\nranks: [2, 4]\nalpha-ratio: 2\n");
    expect(parsed(sweepCommand(), ["--config", sweep])).toMatchObject({ ranks: [2, 4], alphaRatio: 2 });
    const merge = file("merge.yml", "model: m\nadapter: a\nout: o\nsafe: true\n");
    expect(parsed(mergeCommand(), ["--config", merge])).toMatchObject({ model: "m", adapter: "a", out: "o", safe: true });
  });

  it("refuse unknown keys, the other spelling, bad values and bad files, naming the file, the line and the key", () => {
    const refused = (cmd: Command, name: string, text: string) => {
      const path = file(name, text);
      try {
        applyConfigFile(cmd, path);
      } catch (err) {
        return (err as Error).message.replace(path, name);
      }
      throw new Error(`${name} was accepted`);
    };
    const train = trainCommand();
    const keys = configKeys(train).join(", ");
    expect(refused(train, "a.yaml", "model: m\nlrr: 1\n")).toBe(`a.yaml:2: unknown key "lrr"; did you mean "lr"? (valid keys for lowrank train: ${keys})`);
    expect(refused(train, "b.yaml", "learning-rate: 1\n")).toBe(`b.yaml:1: unknown key "learning-rate" (valid keys for lowrank train: ${keys})`);
    expect(refused(train, "c.yaml", "\n\nbatchSize: 8\n")).toBe('c.yaml:3: unknown key "batchSize": keys are the flag names without "--", in kebab-case: write "batch-size" (--batch-size)');
    expect(refused(train, "d.json", '{"batch_size": 8}')).toBe('d.json: unknown key "batch_size": keys are the flag names without "--", in kebab-case: write "batch-size" (--batch-size)');
    expect(refused(train, "d2.yaml", "--grad-accum: 2\n")).toBe('d2.yaml:1: unknown key "--grad-accum": keys are the flag names without "--", in kebab-case: write "grad-accum" (--grad-accum)');
    expect(refused(train, "e.yaml", "lr: fast\n")).toBe('e.yaml:1: lr: "fast" is invalid: expected a number in (0, Infinity].');
    expect(refused(train, "f.yaml", "steps: 0\n")).toBe("f.yaml:1: steps: 0 is invalid: expected an integer >= 1.");
    expect(refused(train, "g.yaml", "packing: yes please\n")).toBe('g.yaml:1: packing: expected true or false, got "yes please"');
    expect(refused(train, "h.yaml", "lr: [1, 2]\n")).toBe('h.yaml:1: lr: expected a value (a string or number), got a list [1,2]');
    expect(refused(train, "i.yaml", "model:\n")).toBe("i.yaml:1: model: expected a value (a string or number), got no value");
    expect(refused(train, "j.yaml", "schedule: cyclic\n")).toBe('j.yaml:1: schedule: "cyclic" is invalid: expected one of constant, linear, cosine.');
    expect(refused(train, "k.yaml", "steps: 3\nsteps: 4\n")).toBe("k.yaml:2: Map keys must be unique");
    expect(refused(train, "l.yaml", "- 1\n")).toBe('l.yaml: expected flag names and values, one "key: value" per line (e.g. "lr: 0.002")');
    expect(refused(train, "m.yaml", "")).toMatch(/^m\.yaml: the file is empty; /);
    expect(refused(train, "n.json", '{\n  "lr": 1,\n}\n')).toMatch(/^n\.json:3: invalid JSON: /);
    expect(refused(train, "o.yaml", "config: other.yaml\n")).toMatch(/^o\.yaml:1: a config file cannot name another one/);
    expect(refused(train, "p.toml", "lr = 1\n")).toBe("--config p.toml: expected a .yaml, .yml or .json file");
    expect(() => applyConfigFile(train, join(ws.dir, "none.yaml"))).toThrow(`--config ${join(ws.dir, "none.yaml")}: no such file`);
    expect(refused(mergeCommand(), "q.yaml", "lr: 1\n")).toBe('q.yaml:1: unknown key "lr" (valid keys for lowrank merge: model, adapter, out, safe, device, json)');
  });
});

describe("lowrank train --config", () => {
  /** metrics.jsonl without the timings, which differ from run to run. */
  const metrics = (out: string) =>
    readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => {
      const { tokensPerSec: _rate, elapsed: _elapsed, ...rest } = JSON.parse(l) as StepRecord;
      return rest;
    });

  it("a run from a YAML or JSON file equals the same run from flags: same metrics.jsonl", async () => {
    const settings = ["--template", ws.template, "--steps", "5", "--lr", "1e-2", "--r", "4", "--alpha", "8", "--target", "c_attn,c_fc", "--eval-every", "2", "--seed", "7"];
    const byFlags = join(ws.dir, "by-flags"), byYaml = join(ws.dir, "by-yaml"), byJson = join(ws.dir, "by-json");
    const yaml = file("run.yaml", [
      `model: ${ws.model}`, `data: ${ws.data}`, `out: ${byYaml}`, `template: ${ws.template}`,
      "steps: 5", "lr: 1e-2", "r: 4", "alpha: 8", "target: [c_attn, c_fc]", "eval-every: 2", "seed: 7", "quiet: true", "",
    ].join("\n"));
    // the JSON file gives some keys and the command line the rest (and overrides its seed)
    const json = file("run.json", JSON.stringify({ model: ws.model, data: ws.data, template: ws.template, steps: 5, lr: 0.01, r: 4, alpha: 8, target: "c_attn,c_fc", "eval-every": 2, seed: 1 }));
    const [flags, fromYaml, fromJson] = await Promise.all([
      runCli(ws.main, ["train", "--model", ws.model, "--data", ws.data, "--out", byFlags, ...settings, "--quiet"]),
      runCli(ws.main, ["train", "--config", yaml]),
      runCli(ws.main, ["train", "--out", byJson, "--config", json, "--seed", "7", "--quiet"]),
    ]);
    for (const r of [flags, fromYaml, fromJson]) expect(r.code, r.stderr).toBe(0);
    const want = metrics(byFlags);
    expect(want.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
    expect(want.filter((m) => m.evalLoss !== undefined)).toHaveLength(3);
    expect(metrics(byYaml)).toEqual(want);
    expect(metrics(byJson)).toEqual(want);
    expect(readFileSync(join(byYaml, "adapter_model.safetensors"))).toEqual(readFileSync(join(byFlags, "adapter_model.safetensors")));
  });

  it("a bad file is a bad command line: exit 2, one line naming the file, line and key; --help lists --config", async () => {
    const bad = file("bad.yaml", `model: ${ws.model}\nstpes: 3\n`);
    const r = await runCli(ws.main, ["train", "--config", bad, "--data", ws.data, "--out", join(ws.dir, "never")]);
    expect(r.code).toBe(2);
    expect(r.stderr.split("\n")[0]).toBe(`lowrank train: ${bad}:2: unknown key "stpes"; did you mean "steps"? (valid keys for lowrank train: ${configKeys(trainCommand()).join(", ")})`);
    // a required flag missing from both the file and the command line is commander's usual error
    const partial = file("partial.yaml", `model: ${ws.model}\n`);
    const missing = await runCli(ws.main, ["train", "--config", partial, "--out", join(ws.dir, "never")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/error: required option '--data <file>' not specified/);
    for (const command of ["train", "sweep", "merge", "generate"]) {
      const help = await runCli(ws.main, [command, "--help"]);
      expect(help.stdout, command).toMatch(/--config <file> +read flags from a YAML/);
    }
  });
});

describe("the README's config example", () => {
  it("is data/demo/train.yaml, and sets what the README's train command sets by flags", () => {
    const root = join(import.meta.dirname, "../..");
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const block = /^```yaml\n([\s\S]*?)^```/m.exec(readme)?.[1];
    const shipped = readFileSync(join(root, "data/demo/train.yaml"), "utf8");
    expect(block).toBe(shipped.replace(/^#.*\n/gm, ""));
    const command = /^ {4}npx lowrank train (--model data\/demo\/model .*)$/m.exec(readme)![1]!.split(" ");
    const home = process.cwd();
    try {
      process.chdir(root); // the file's paths are relative to the working directory
      const { config, ...fromFile } = parsed(trainCommand(), ["--config", "data/demo/train.yaml", "--out", "runs/demo"]);
      expect(config).toBe("data/demo/train.yaml");
      expect(fromFile).toEqual(parsed(trainCommand(), command));
    } finally {
      process.chdir(home);
    }
  });
});
