import { configDefaults, defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Native kernels use both cores themselves; running files in parallel only adds contention.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Copies of the tree made for the GPU machine (.devrun) and build outputs are not tests.
    exclude: [...configDefaults.exclude, ".devrun/**", ".devkit/**", "build*/**", "dist*/**"],
  },
});
