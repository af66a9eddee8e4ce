// The tiny fixture models and transformers' reference outputs for them
// (tools/fixtures/make_fixtures.py): shared by the CPU and CUDA numerics tests.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/safetensors.h"

namespace tandem::test_fixtures {

inline const std::filesystem::path kFixtures = std::filesystem::path(TANDEM_SOURCE_DIR) / "tests/models/fixtures";

struct Reference {
  std::vector<int32_t> prompt_a, prompt_b, greedy_a;
  std::vector<float> logits_a, logits_b;  // [T, vocab]
};

template <typename T>
std::vector<T> read_reference_vector(const SafetensorsFile& f, const std::string& name) {
  for (const TensorRef& t : f.tensors()) {
    if (t.name != name) continue;
    std::vector<T> out(static_cast<size_t>(t.n_elements()));
    std::memcpy(out.data(), t.data, out.size() * sizeof(T));
    return out;
  }
  ADD_FAILURE() << "reference tensor " << name << " missing";
  return {};
}

// fixtures/<arch>/reference.safetensors: two prompts, their f32 logits, and
// the 32-token greedy continuation of the first.
inline Reference load_reference(const std::string& arch) {
  auto f = SafetensorsFile::open((kFixtures / arch / "reference.safetensors").string());
  Reference r;
  r.prompt_a = read_reference_vector<int32_t>(*f, "prompt_a");
  r.prompt_b = read_reference_vector<int32_t>(*f, "prompt_b");
  r.greedy_a = read_reference_vector<int32_t>(*f, "greedy_a");
  r.logits_a = read_reference_vector<float>(*f, "logits_a");
  r.logits_b = read_reference_vector<float>(*f, "logits_b");
  return r;
}

}  // namespace tandem::test_fixtures
