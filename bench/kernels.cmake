# CPU kernel and memory-bandwidth benchmarks (programs, not tests).
#   build/bin/stream_bench   STREAM-style bandwidth, 1 and 2 threads
#   build/bin/matmul_bench   GEMV/GEMM on the 0.66B Llama shapes
add_executable(stream_bench ${CMAKE_CURRENT_LIST_DIR}/stream_bench.cpp)
target_link_libraries(stream_bench PRIVATE tandem_common)
add_executable(matmul_bench ${CMAKE_CURRENT_LIST_DIR}/matmul_bench.cpp)
target_link_libraries(matmul_bench PRIVATE tandem_cpu)
# CUDA decode GEMV on the Llama-3-8B shapes (CUDA builds only).
#   build/bin/cuda_gemv_bench
# CUDA decode attention on the Llama-3-8B attention shape (CUDA builds only).
#   build/bin/cuda_attention_bench
# cuBLAS's GEMM choice against cuBLASLt's algorithms on the 8B shapes.
#   build/bin/cuda_gemm_bench
if(TANDEM_CUDA)
  add_executable(cuda_gemv_bench ${CMAKE_CURRENT_LIST_DIR}/cuda_gemv_bench.cu)
  target_link_libraries(cuda_gemv_bench PRIVATE tandem_cuda)
  add_executable(cuda_attention_bench ${CMAKE_CURRENT_LIST_DIR}/cuda_attention_bench.cu)
  target_link_libraries(cuda_attention_bench PRIVATE tandem_cuda)
  add_executable(cuda_gemm_bench ${CMAKE_CURRENT_LIST_DIR}/cuda_gemm_bench.cu)
  target_link_libraries(cuda_gemm_bench PRIVATE tandem_cuda)
  # A kernel timeline of any CUDA program (CUPTI), loaded through
  # CUDA_INJECTION64_PATH: build/bench/libtandem_kernel_timeline.so
  if(TARGET CUDA::cupti)
    add_library(tandem_kernel_timeline SHARED ${CMAKE_CURRENT_LIST_DIR}/kernel_timeline.cpp)
    target_link_libraries(tandem_kernel_timeline PRIVATE CUDA::cupti)
  endif()
  if(TARGET tandem_nccl)
    add_executable(nccl_reduce_bench ${CMAKE_CURRENT_LIST_DIR}/nccl_reduce_bench.cu)
    target_link_libraries(nccl_reduce_bench PRIVATE tandem_nccl)
  endif()
endif()
