# CPU kernel and memory-bandwidth benchmarks (programs, not tests).
#   build/bin/stream_bench   STREAM-style bandwidth, 1 and 2 threads
#   build/bin/matmul_bench   GEMV/GEMM on the 0.66B Llama shapes
add_executable(stream_bench ${CMAKE_CURRENT_LIST_DIR}/stream_bench.cpp)
target_link_libraries(stream_bench PRIVATE tandem_common)
add_executable(matmul_bench ${CMAKE_CURRENT_LIST_DIR}/matmul_bench.cpp)
target_link_libraries(matmul_bench PRIVATE tandem_cpu)
