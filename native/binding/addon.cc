// The addon's entry point: runs every binding file's LR_EXPORTS block.
#include "common.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (auto init : lowrank::binding::registry()) init(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(lowrank, Init)
