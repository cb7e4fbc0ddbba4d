#!/usr/bin/env bash
# CI step (called by .ci/run, or alone): installs the packed package the way users get it.
#  1. A machine without CMake, a C++ compiler or nvcc: the tarball is installed into a fresh project
#     with a PATH that holds node, npm and sh only; the install must compile nothing, the addon must
#     load from prebuilds/, and the demo runs. The prebuilt addon's glibc needs are checked first
#     (scripts/check-glibc.mjs: no GLIBCXX, glibc no newer than the README states).
#  2. A machine with a compiler but no CMake, building from source (LOWRANK_BUILD_FROM_SOURCE=1):
#     the install falls back to node-gyp, and the addon loads from build/Release.
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

# node, npm and sh (npm runs scripts with it); which command -v must find or not find on $1
link_node_npm() {
  for tool in node npm npx sh; do ln -sf "$(readlink -f "$(command -v "$tool")")" "$1/$tool"; done
}
expect_tools() { # dir, "present"|"absent", tools...
  local dir=$1 want=$2
  shift 2
  for tool in "$@"; do
    if PATH="$dir" command -v "$tool" >/dev/null; then [ "$want" = present ] || { echo "PATH $dir still has $tool" >&2; exit 1; }
    else [ "$want" = absent ] || { echo "PATH $dir lacks $tool" >&2; exit 1; }; fi
  done
}
# installs the tarball into a fresh project $1 with PATH $2 (and the environment given after it)
install_into() {
  local project=$1 path=$2
  shift 2
  mkdir "$project"
  echo '{"name": "install-check", "private": true}' > "$project/package.json"
  if ! (cd "$project" && env PATH="$path" "$@" npm install --prefer-offline --no-audit --no-fund --foreground-scripts "$tarball" >install.log 2>&1); then
    cat "$project/install.log" >&2
    exit 1
  fi
  grep -E "^lowrank:|^added" "$project/install.log"
}
loaded_addon() { # project, PATH
  (cd "$1" && PATH="$2" npx --no-install lowrank info --json) | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).addon))'
}

echo "-- without CMake, a compiler or nvcc"
bin="$work/bin"
mkdir "$bin"
link_node_npm "$bin"
expect_tools "$bin" absent cmake c++ g++ gcc cc clang++ make nvcc
project="$work/no-compiler"
install_into "$project" "$bin"
installed="$project/node_modules/lowrank"
[ -f "$installed/$prebuilt" ] || { echo "the tarball has no $prebuilt" >&2; exit 1; }
[ ! -e "$installed/build" ] || { echo "the install compiled something: $installed/build exists" >&2; exit 1; }
addon=$(loaded_addon "$project" "$bin")
[ "$addon" = "$installed/$prebuilt" ] || { echo "lowrank loaded $addon, not the prebuilt addon" >&2; exit 1; }
(cd "$project" && PATH="$bin" npx --no-install lowrank demo --steps 2 --eval-count 2 --quiet --out demo-output | tail -2)
[ -f "$project/demo-output/adapter/adapter_model.safetensors" ] || { echo "the demo wrote no adapter" >&2; exit 1; }
echo "installed without a compiler and ran the demo from $addon ($((SECONDS - start)) s so far)"

echo "-- with a compiler but no CMake, building from source"
cbin="$work/cbin"
mkdir "$cbin"
for f in /usr/bin/*; do
  case "$(basename "$f")" in cmake | ccmake | cpack | ctest | nvcc) ;; *) ln -s "$f" "$cbin/" ;; esac
done
link_node_npm "$cbin"
expect_tools "$cbin" absent cmake nvcc
expect_tools "$cbin" present c++ make python3
project="$work/no-cmake"
install_into "$project" "$cbin" LOWRANK_BUILD_FROM_SOURCE=1
installed="$project/node_modules/lowrank"
addon=$(loaded_addon "$project" "$cbin")
[ "$addon" = "$installed/build/Release/lowrank.node" ] || { echo "lowrank loaded $addon, not the node-gyp build" >&2; exit 1; }
echo "built with node-gyp without CMake and loaded $addon ($((SECONDS - start)) s in all)"
