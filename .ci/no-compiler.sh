#!/usr/bin/env bash
# CI step (called by .ci/run, or alone): a user's machine without CMake, a C++ compiler or nvcc.
# Packs the package (prepack and prepare build the prebuilt addon and dist/), installs the tarball
# into a fresh project with a PATH that holds node and npm only, and runs the CLI from there: the
# install must compile nothing, and the addon must load from prebuilds/. The prebuilt addon's
# glibc needs are checked first (scripts/check-glibc.mjs: no GLIBCXX, glibc no newer than stated).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
platform=$(node -p 'process.platform + "-" + process.arch')
prebuilt="prebuilds/$platform/lowrank.node"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! npm pack --pack-destination "$work" >"$work/pack.log" 2>&1; then
  cat "$work/pack.log" >&2
  exit 1
fi
tarball=$(ls "$work"/lowrank-*.tgz)
echo "packed $(basename "$tarball"): $(du -k "$tarball" | cut -f1) KiB"
[ "$(uname -s)" = Linux ] && node scripts/check-glibc.mjs "$prebuilt"

# node and npm (and sh, which npm runs scripts with), and nothing that compiles
bin="$work/bin"
mkdir "$bin"
for tool in node npm npx sh; do ln -s "$(readlink -f "$(command -v "$tool")")" "$bin/$tool"; done
for tool in cmake c++ g++ gcc cc clang++ make nvcc; do
  if PATH="$bin" command -v "$tool" >/dev/null; then echo "the restricted PATH still has $tool" >&2; exit 1; fi
done

project="$work/project"
mkdir "$project"
cd "$project"
echo '{"name": "no-compiler-check", "private": true}' > package.json
if ! PATH="$bin" npm install --prefer-offline --no-audit --no-fund --foreground-scripts "$tarball" >"$work/install.log" 2>&1; then
  cat "$work/install.log" >&2
  exit 1
fi
grep -E "^lowrank:|^added" "$work/install.log"
installed="$project/node_modules/lowrank"
[ -f "$installed/$prebuilt" ] || { echo "the tarball has no $prebuilt" >&2; exit 1; }
[ ! -e "$installed/build" ] || { echo "the install compiled something: $installed/build exists" >&2; exit 1; }

addon=$(PATH="$bin" npx --no-install lowrank info --json | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).addon))')
[ "$addon" = "$installed/$prebuilt" ] || { echo "lowrank loaded $addon, not the prebuilt addon" >&2; exit 1; }
PATH="$bin" npx --no-install lowrank demo --steps 2 --eval-count 2 --quiet --out "$project/demo-output" | tail -3
[ -f "$project/demo-output/adapter/adapter_model.safetensors" ] || { echo "the demo wrote no adapter" >&2; exit 1; }
echo "installed without a compiler and ran the demo from $addon in $((SECONDS - start)) s"
