# Re-runs reference_ids.mjs with the reference tokenizers and checks that the
# committed golden files are exactly what it produces now, so that the oracle
# stays live. Run by ctest (tokenizer_reference_ids_are_current):
#   cmake -DNODE=... -DSOURCE_DIR=... -DOUT_DIR=... -P tokenizer_reference_check.cmake
set(test_dir "${SOURCE_DIR}/tests/tokenizer")
if(NOT EXISTS "${SOURCE_DIR}/tests/reference/node_modules/@huggingface/tokenizers")
  message("SKIPPED: tests/reference/node_modules is missing (run scripts/install-deps.sh)")
  return()
endif()
file(REMOVE_RECURSE "${OUT_DIR}")
file(MAKE_DIRECTORY "${OUT_DIR}")
execute_process(COMMAND "${NODE}" "${test_dir}/reference_ids.mjs" "${OUT_DIR}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "reference_ids.mjs failed (exit ${rc})")
endif()
foreach(name qwen3 llama3 llama2 nfc)
  set(file "tokenizer_reference_${name}.jsonl")
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${OUT_DIR}/${file}" "${test_dir}/${file}"
    RESULT_VARIABLE differs)
  if(differs)
    message(FATAL_ERROR "${file} differs from what the reference produces now; "
      "regenerate with: node tests/tokenizer/reference_ids.mjs")
  endif()
endforeach()
message("golden files match the reference")
