# Tokenizer speed benchmark (a program, not a test).
#   build/bin/tokenizer_bench [MEGABYTES] [TOKENIZER_PATH...]
# Encodes MEGABYTES (default 10) of mixed text with each tokenizer and prints
# MB/s and tokens/s, single-threaded.
add_executable(tokenizer_bench ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bench.cpp)
target_link_libraries(tokenizer_bench PRIVATE tandem_tokenizer)
target_compile_definitions(tokenizer_bench PRIVATE TANDEM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
