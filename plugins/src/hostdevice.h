// FRCNN_HD marks the algorithm functions that compile for both the CPU and the GPU:
// nvcc sees __host__ __device__, a plain C++ compiler sees nothing.
#pragma once

#if defined(__CUDACC__)
#define FRCNN_HD __host__ __device__
#else
#define FRCNN_HD
#endif
