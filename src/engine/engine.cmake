add_library(tandem_engine STATIC
  ${CMAKE_CURRENT_LIST_DIR}/kv_cache.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model_runner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu_model_runner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/generator.cpp
  ${CMAKE_CURRENT_LIST_DIR}/perplexity.cpp
)
target_link_libraries(tandem_engine PUBLIC tandem_models tandem_cpu tandem_parallel tandem_sampling tandem_tokenizer tandem_common)
