add_library(tandem_sampling STATIC
  ${CMAKE_CURRENT_LIST_DIR}/sampler.cpp
  ${CMAKE_CURRENT_LIST_DIR}/row_sampling.cpp
  ${CMAKE_CURRENT_LIST_DIR}/stop_matcher.cpp
)
target_link_libraries(tandem_sampling PUBLIC tandem_common)
# The sampler's per-vocab passes select with float compares (clamp, min-p,
# NaN to -inf). GCC will not turn those into vector blends while it must
# preserve floating-point exception flags, which Tandem never reads; the
# results themselves are unchanged. Clang already defaults to this.
target_compile_options(tandem_sampling PRIVATE $<$<CXX_COMPILER_ID:GNU>:-fno-trapping-math>)
# The row sampling reference and the sampler share exp_lane with the GPU
# (engine/sampling_math.h): no fused multiply-adds, whatever the compiler's
# default (GCC's ISO mode has none; clang contracts unless told).
target_compile_options(tandem_sampling PRIVATE -ffp-contract=off)
