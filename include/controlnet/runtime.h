#pragma once
// Process-wide settings every controlnet.cpp program applies once at start-up.

namespace cn {

// Keeps freed memory mapped (glibc malloc): under the default policy LibTorch's
// large activation buffers are returned to the kernel after each op and page-
// faulted back on the next one, which made a denoising step several times slower.
// Also sets the number of intra-op threads: `threads`, or the number of
// physical cores when 0, keeps BLAS calls on the calling thread (see
// set_blas_threads) and lets ATen use AVX-512 (prefer_avx512_kernels).
void init_runtime(int threads = 0);

// Sets ATEN_CPU_CAPABILITY=avx512 for this process when the CPU has AVX-512
// (F, VL, BW, DQ) and the variable is unset, so that ATen's element-wise
// kernels use it (see runtime.cpp for why LibTorch's own choice is not
// kept). Takes effect only before the first tensor operation; init_runtime
// calls it first. True if it set the variable.
bool prefer_avx512_kernels();

// Threads OpenBLAS may use per call. False when LibTorch's BLAS is not
// OpenBLAS (nothing to set). init_runtime sets 1: OpenBLAS's own thread pool
// and LibTorch's OpenMP pool would otherwise compete for the same cores.
bool set_blas_threads(int threads);

// Physical cores of this machine (hardware threads of one core count once).
int physical_cores();

}  // namespace cn
