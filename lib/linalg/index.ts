// Dense float64 linear algebra on the CPU (pure TypeScript): SVD, QR and symmetric
// eigendecomposition for `lowrank svd`, PiSSA/OLoRA initialization and add_weighted_adapter's
// "svd" combination.
export { matrix, transpose, matmul, submatrix, type Matrix } from "./matrix.js";
export { qr } from "./qr.js";
export { symmetricEigen, type SymmetricEigen } from "./eigen.js";
export { svd, singularValues, type SVD, type SvdOptions } from "./svd.js";
export { lowRankSingularValues, lowRankSvd } from "./lowrank.js";
export { energyCaptured, rankForEnergy, effectiveRank } from "./spectrum.js";
export { pissaFactors, oloraFactors, svdMergeFactors, quantileClamp, type LoraFactors, type WeightedAdapter } from "./peft.js";
