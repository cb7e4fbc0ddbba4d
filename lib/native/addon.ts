// The native addon's whole surface, typed in one place (native/binding/*.cc implement it). Every
// kernel takes one object of named arguments: tensor operands as views (a storage, a byte offset
// and, where the kernel reads strided data, element strides), sizes and options by name. The
// binding checks each field (present, right type, view inside its storage, one device) and names
// the op and the field when one is wrong. Enum codes are the indices of the names the addon
// exports from its own X-macro lists (enums()); test/native/enums.test.ts checks lib/'s enums
// against them.

/** A native buffer on one device. JS tensors are views over it. */
export interface NativeStorage {
  readonly byteLength: number;
  readonly device: string;
  readonly disposed: boolean;
  dispose(): void;
}

/** A tensor operand: its storage, the byte offset of element 0, and (where a kernel reads strided data) element strides. */
export interface View {
  storage: NativeStorage;
  offset: number;
  strides?: readonly number[];
}

export interface NativeInfo {
  version: string;
  simd: string;
  threads: number;
  cudaBuilt: boolean;
  gpus: string[];
  cudaRuntime?: string;
  cublas?: string;
}

export interface NativeMemory {
  device: string;
  bytes: number;
  buffers: number;
  peakBytes: number;
  reservedBytes: number;
}

/** Each enum's member names in code order, from the addon's X-macro lists. */
export interface NativeEnums {
  DType: string[];
  BinaryOp: string[];
  UnaryOp: string[];
  Reduction: string[];
}

// ---- creation and storage moves (binding/creation.cc) ---------------------------------------------

export interface CreationKernels {
  write(a: { dst: View; data: ArrayBufferView }): void;
  read(a: { src: View; bytes: number }): ArrayBuffer;
  /** Like read(), on a worker thread: the event loop runs while the device finishes. */
  readAsync(a: { src: View; bytes: number }): Promise<ArrayBuffer>;
  copyBytes(a: { dst: View; src: View; bytes: number }): void;
  fill(a: { dst: View; dtype: number; n: number; value: number }): void;
  arange(a: { dst: View; dtype: number; n: number; start: number; step: number }): void;
  cast(a: { src: View; srcDtype: number; dst: View; dstDtype: number; n: number }): void;
  /** Both views carry strides; source strides may be 0 (broadcast). */
  copyStrided(a: { src: View; dst: View; shape: readonly number[]; elemSize: number }): void;
  randomUniform(a: { dst: View; n: number; seed: bigint; offset: bigint; low: number; high: number }): void;
  randomNormal(a: { dst: View; n: number; seed: bigint; offset: bigint; mean: number; std: number }): void;
}

// ---- elementwise (binding/elementwise.cc) ----------------------------------------------------------

export interface ElementwiseKernels {
  /** out = a (op) b over `shape`; a and b carry strides (0 broadcasts), out is contiguous. */
  binary(a: { op: number; a: View; b: View; out: View; shape: readonly number[] }): void;
  unary(a: { op: number; x: View; out: View; n: number; alpha: number }): void;
  /** gx = g·f'(x): float32, or rounded to bfloat16 with gxBf16 (the operand of a bf16 GEMM next). */
  unaryBackward(a: { op: number; x: View; g: View; gx: View; n: number; alpha: number; gxBf16: boolean }): void;
  /** out[r] = sum of row r (rows × cols, contiguous), accumulated in double. */
  sumRows(a: { x: View; out: View; rows: number; cols: number }): void;
}

// ---- matmul (binding/matmul.cc) --------------------------------------------------------------------

export interface MatmulKernels {
  /**
   * c = alpha·op(a)·op(b) + beta·c for each of `batch` row-major matrices (leading dimensions ld*);
   * c float32, a and b (`dtypeA`, `dtypeB`, DType codes) both float32, both bfloat16, or float32 a
   * with bfloat16 b: a rounded to bf16 as it is read (the same result as on a bf16 copy of a).
   */
  gemm(a: {
    transA: boolean; transB: boolean; m: number; n: number; k: number; alpha: number;
    a: View; lda: number; strideA: number; b: View; ldb: number; strideB: number;
    beta: number; c: View; ldc: number; strideC: number; batch: number; dtypeA: number; dtypeB: number;
  }): void;
  /**
   * A linear layer's c = op(a)·op(b) + bias ([n], broadcast over rows), then with `pre`: pre = that
   * sum and c = gelu_tanh(pre). One cuBLASLt GEMM with its epilogue on CUDA. a, b as in gemm; c, bias, pre float32.
   */
  gemmEpilogue(a: {
    transA: boolean; transB: boolean; m: number; n: number; k: number; a: View; lda: number; b: View; ldb: number;
    c: View; ldc: number; bias: View | null; pre: View | null; dtypeA: number; dtypeB: number;
  }): void;
}

// ---- embedding (binding/embedding.cc) --------------------------------------------------------------

export interface EmbeddingKernels {
  /** The first position whose id is outside [0, vocab), or -1. */
  embeddingFindBadId(a: { ids: View; n: number; vocab: number }): number;
  /** weight float32 or bfloat16 (`dtype`, a DType code); out float32. */
  embeddingGather(a: { ids: View; n: number; weight: View; vocab: number; dim: number; out: View; dtype: number }): void;
  /** dweight[ids[i]] += grad[i], in order of position. */
  embeddingScatterAdd(a: { ids: View; n: number; grad: View; vocab: number; dim: number; dweight: View }): void;
}

// ---- row-wise families (binding/{layernorm,rmsnorm,softmax,crossentropy,dropout,attention,rope}.cc) ------

export interface LayerNormKernels {
  layerNorm(a: { x: View; weight: View | null; bias: View | null; y: View; mean: View; rstd: View; N: number; C: number; eps: number }): void;
  layerNormBackward(a: {
    x: View; weight: View | null; mean: View; rstd: View; dy: View; dx: View; dweight: View | null; dbias: View | null; N: number; C: number;
  }): void;
}

export interface RmsNormKernels {
  rmsNorm(a: { x: View; weight: View | null; y: View; rstd: View; N: number; C: number; eps: number }): void;
  rmsNormBackward(a: { x: View; weight: View | null; rstd: View; dy: View; dx: View; dweight: View | null; N: number; C: number }): void;
}

export interface SoftmaxKernels {
  softmax(a: { x: View; y: View; rows: number; cols: number; log: boolean }): void;
  softmaxBackward(a: { y: View; dy: View; dx: View; rows: number; cols: number; log: boolean }): void;
}

export interface CrossEntropyKernels {
  /** Returns null, or [row, target] of the first target outside [0, V) that is not ignoreIndex. */
  crossEntropy(a: {
    logits: View; targets: View; lse: View; loss: View; total: View | null; N: number; V: number; ignoreIndex: number; reduction: number;
  }): [number, number] | null;
  crossEntropyBackward(a: {
    logits: View; targets: View; lse: View; dout: View; dlogits: View; N: number; V: number; ignoreIndex: number; reduction: number;
  }): void;
  /** One chunk of linearCrossEntropy: per-row loss and counted flags, the unscaled gradient (float32 or bf16) when grad is given; rows ld >= V apart. */
  crossEntropyRows(a: {
    logits: View; targets: View; loss: View; counted: View; grad: View | null; gradBf16: boolean; firstBad: View; N: number; V: number; ld: number; ignoreIndex: number;
  }): void;
}

export interface DropoutKernels {
  /** y[i] = x[i]·scale where philox_keep(seed, offset, i, p), else 0. */
  dropout(a: { x: View; y: View; n: number; p: number; scale: number; seed: bigint; offset: bigint; residual?: View | null }): void;
}

/** Sizes, scaling and dropout stream of a fused LoRA call (native/ops/lora.h): x [N, k], A [r, k], B [d, r]. */
export interface LoraDims {
  N: number; k: number; r: number; d: number; scaling: number; p: number; maskScale: number; seed: bigint; offset: bigint;
}

export interface LoraKernels {
  /** out = y + s·u·Bᵀ with u = drop(x)·Aᵀ written too; out may be y. */
  loraForward(a: LoraDims & { x: View; A: View; B: View; y: View; out: View; u: View }): void;
  /** gB = s·gᵀ·u, gA = s·(g·B)ᵀ·drop(x), gx = s·(g·B·A) ⊙ mask/(1-p); null ones are not computed. */
  loraBackward(a: LoraDims & { g: View; x: View; A: View; B: View; u: View; gx: View | null; gA: View | null; gB: View | null }): void;
  /**
   * W += s·B·A (W [d, k], nn.Linear) or, transposed, W += s·(B·A)ᵀ (W [k, d]: Conv1D, Embedding), in
   * place, each element of W read and written once; W float32 or bfloat16 (`dtype`, a DType code), A [r, k] and B [d, r] float32.
   */
  loraMerge(a: { W: View; dtype: number; A: View; B: View; rows: number; cols: number; ld: number; r: number; scaling: number; transposed: boolean }): void;
  /** bf16 A, B and the bias into the padding of a frozen weight's augmented buffer (native/ops/lora.h). */
  loraAugPack(a: { W: View; A: View; B: View; bias: View | null; k: number; d: number; r: number; ld: number; transposed: boolean }): void;
  /** u = drop(x)·Fᵀ (F = A [r, K], or B [K, r] given with fTransposed) and xa = [bf16(x) | bf16(tailScale·u) | 1? | 0] [N, ld]. */
  loraDownAug(a: {
    x: View; f: View; u: View; xa: View; N: number; K: number; r: number; ld: number; tailScale: number; ones: boolean; fTransposed: boolean;
    p: number; maskScale: number; seed: bigint; offset: bigint;
  }): void;
  /** gA = s·vᵀ·drop(xa[:, :k]), gB = s·ga[:, :d]ᵀ·u, gx += s·(v·A) ⊙ mask/(1-p); null ones are not computed. */
  loraBackwardAug(a: LoraDims & { v: View; u: View; xa: View; ldx: number; ga: View; ldg: number; A: View; gx: View | null; gA: View | null; gB: View | null }): void;
}

/** [B, H, Tq, Tk, D], the scale, masking and the dropout stream of one attention call. */
export interface AttentionDims {
  dims: readonly [number, number, number, number, number];
  scale: number;
  causal: boolean;
  /** Sliding window, 0 = none (causal only). */
  window: number;
  dropout: number;
  seed: bigint;
  offset: bigint;
  /** The arithmetic, a DType code: float32, or bfloat16 (q, k, v, dout rounded to bf16; native/ops/attention.h). */
  precision: number;
  /** Query heads per key/value head (k, v, dk, dv have H / kvGroup heads); CPU only above 1. */
  kvGroup: number;
  /** With bf16 precision: k and v already hold bf16 values, only q (and dout) are rounded. */
  kvRounded: boolean;
}

export interface AttentionKernels {
  /** q, k, v and out carry [batch, head, time] strides, D contiguous. */
  attentionForward(a: AttentionDims & { q: View; k: View; v: View; keep: View | null; out: View; lse: View }): void;
  attentionBackward(a: AttentionDims & {
    q: View; k: View; v: View; keep: View | null; lse: View; out: View; dout: View; dq: View; dk: View; dv: View;
  }): void;
}

export interface RopeKernels {
  /** y = x·cos + rotate_half(x)·sin over x [rows, T, D] with cos, sin [T, D], all contiguous; transpose: the backward rotation. */
  rope(a: { x: View; cos: View; sin: View; y: View; rows: number; T: number; D: number; transpose: boolean }): void;
}

// ---- optim (binding/optim.cc): one call covers a list of tensors ----------------------------------

export interface OptimKernels {
  /** hyper per tensor: lr, beta1, beta2, eps, weightDecay, step. */
  adamw(a: { params: View[]; grads: View[]; expAvgs: View[]; expAvgSqs: View[]; sizes: Float64Array; hyper: Float64Array }): void;
  /** momentumBuffers[t] is null when momentum is 0. hyper: lr, momentum, dampening, weightDecay, nesterov, firstStep. */
  sgd(a: { params: View[]; grads: View[]; momentumBuffers: (View | null)[]; sizes: Float64Array; hyper: Float64Array }): void;
  /** Per tensor: the sum of |x|^p (p = Infinity: the max of |x|), in double. Waits for the device. */
  sumPow(a: { tensors: View[]; sizes: Float64Array; p: number }): Float64Array;
  /** x *= alpha on every tensor. */
  scaleSpans(a: { tensors: View[]; sizes: Float64Array; alpha: number }): void;
}

// ---- runtime (binding/runtime.cc, storage.cc) ------------------------------------------------------

export interface RuntimeKernels {
  Storage: new (deviceType: number, deviceIndex: number, bytes: number) => NativeStorage;
  info(): NativeInfo;
  enums(): NativeEnums;
  memory(): NativeMemory[];
  synchronize(deviceIndex: number): void;
  setNumThreads(n: number): void;
  /** Records a CUDA event on the device's stream (lib/profile.ts); returns its number. CUDA builds only. */
  profileMark(deviceIndex: number): number;
  /** ms between the marks of each pair [from, to, ...], waiting for them to complete. */
  profileElapsed(marks: Int32Array): Float64Array;
  /** Lets the mark numbers (and their events) be used again. */
  profileResetMarks(): void;
}

// ---- comm (binding/comm.cc): NCCL, for data-parallel training; builds without NCCL throw the reason ----

export interface CommKernels {
  commInfo(): { built: boolean; version?: string };
  /** A fresh NCCL unique id (128 bytes), made once by the launcher and handed to every rank. */
  commUniqueId(): Uint8Array;
  /** Joins the communicator as `rank` of `world` on cuda:`device`; returns its handle. */
  commInit(a: { id: Uint8Array; world: number; rank: number; device: number; timeoutSeconds: number }): number;
  /** buf[0, count) (float32, on the communicator's GPU) = the sum over the ranks, in place; returns when done. */
  commAllReduceSum(a: { comm: number; buf: View; count: number }): void;
  /** abort: at once, without waiting for the peers (after an error); else flushed with them. */
  commDestroy(a: { comm: number; abort: boolean }): void;
}

/** The addon. */
export type NativeAddon = RuntimeKernels & CommKernels & CreationKernels & ElementwiseKernels & MatmulKernels & EmbeddingKernels &
  LayerNormKernels & RmsNormKernels & SoftmaxKernels & CrossEntropyKernels & DropoutKernels & LoraKernels & AttentionKernels & RopeKernels & OptimKernels;
