#pragma once
// Process-wide settings every controlnet.cpp program applies once at start-up.

namespace cn {

// Keeps freed memory mapped (glibc malloc): under the default policy LibTorch's
// large activation buffers are returned to the kernel after each op and page-
// faulted back on the next one, which made a denoising step several times slower.
// Also sets the number of intra-op threads: `threads`, or the number of
// physical cores when 0, and keeps BLAS calls on the calling thread (see
// set_blas_threads).
void init_runtime(int threads = 0);

// Threads OpenBLAS may use per call. False when LibTorch's BLAS is not
// OpenBLAS (nothing to set). init_runtime sets 1: OpenBLAS's own thread pool
// and LibTorch's OpenMP pool would otherwise compete for the same cores.
bool set_blas_threads(int threads);

// Physical cores of this machine (hardware threads of one core count once).
int physical_cores();

}  // namespace cn
