#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "common/error.h"
#include "formats/gguf.h"
#include "models/model_config.h"
#include "models/tensor_names.h"

namespace tandem {
namespace {

nlohmann::json llama_json() {
  return {{"model_type", "llama"},          {"vocab_size", 1000},         {"hidden_size", 256},
          {"intermediate_size", 512},       {"num_hidden_layers", 3},     {"num_attention_heads", 8},
          {"num_key_value_heads", 2},       {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-5},
          {"rope_theta", 500000.0},         {"tie_word_embeddings", false}};
}

TEST(ModelConfig, ParsesHfLlama) {
  const ModelConfig c = config_from_hf(llama_json());
  EXPECT_EQ(c.arch, Architecture::Llama);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.kv_dim(), 64);
  EXPECT_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.style, RopeStyle::HalfSplit);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.layer_kinds.size(), 3u);
}

TEST(ModelConfig, ReadsRopeParametersAndLegacyRopeScaling) {
  nlohmann::json a = llama_json();
  a.erase("rope_theta");
  a["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 10000.0}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 64}};
  nlohmann::json b = llama_json();
  b["rope_theta"] = 10000.0;
  b["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  const ModelConfig ca = config_from_hf(a), cb = config_from_hf(b);
  EXPECT_EQ(ca.rope.scaling, "llama3");
  EXPECT_EQ(ca.rope.theta, 10000.0);
  EXPECT_EQ(rope_inv_freq(ca), rope_inv_freq(cb));
}

TEST(ModelConfig, Llama3ScalingKeepsHighAndDividesLowFrequencies) {
  nlohmann::json j = llama_json();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  ModelConfig c = config_from_hf(j);
  ModelConfig plain = c;
  plain.rope.scaling = "none";
  const auto scaled = rope_inv_freq(c), base = rope_inv_freq(plain);
  // Wavelength below 64/4 = 16 positions: unchanged. Above 64: divided by 8.
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / base[i];
    if (wavelen < 16) EXPECT_DOUBLE_EQ(scaled[i], base[i]);
    if (wavelen > 64) EXPECT_DOUBLE_EQ(scaled[i], base[i] / 8);
    if (wavelen >= 16 && wavelen <= 64) {
      EXPECT_LE(scaled[i], base[i]);
      EXPECT_GE(scaled[i], base[i] / 8);
    }
  }
  // The same scaling expressed as GGUF frequency factors.
  ModelConfig via_factors = plain;
  via_factors.rope.freq_factors = rope_freq_factors(c);
  const auto from_factors = rope_inv_freq(via_factors);
  for (size_t i = 0; i < base.size(); ++i) EXPECT_NEAR(from_factors[i], scaled[i], 1e-6 * scaled[i]);
}

TEST(ModelConfig, RejectsBadHfConfigsNamingTheKey) {
  auto expect_error = [](nlohmann::json j, const std::string& needle) {
    try {
      config_from_hf(j);
      FAIL() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  nlohmann::json j = llama_json();
  j["model_type"] = "gpt_neox";
  expect_error(j, "gpt_neox");
  j = llama_json();
  j.erase("hidden_size");
  expect_error(j, "hidden_size");
  j = llama_json();
  j["num_key_value_heads"] = 3;
  expect_error(j, "num_key_value_heads");
  j = llama_json();
  j["vocab_size"] = "many";
  expect_error(j, "vocab_size");
  j = llama_json();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_error(j, "yarn");
}

TEST(ModelConfig, ArchitectureFlags) {
  nlohmann::json q2 = llama_json();
  q2["model_type"] = "qwen2";
  EXPECT_TRUE(config_from_hf(q2).qkv_bias);
  nlohmann::json q3 = llama_json();
  q3["model_type"] = "qwen3";
  q3["head_dim"] = 48;
  const ModelConfig c3 = config_from_hf(q3);
  EXPECT_TRUE(c3.qk_norm);
  EXPECT_EQ(c3.head_dim, 48);
  EXPECT_EQ(c3.q_dim(), 8 * 48);
}

TEST(TensorNames, MapsHfNamesBothWays) {
  EXPECT_EQ(canonical_name_from_hf("model.layers.12.self_attn.k_proj.bias"), "blk.12.attn_k.bias");
  EXPECT_EQ(canonical_name_from_hf("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(canonical_name_from_hf("lm_head.weight"), "output.weight");
  EXPECT_EQ(canonical_name_from_hf("model.layers.x.mlp.up_proj.weight"), std::nullopt);
  EXPECT_EQ(canonical_name_from_hf("model.rotary_emb.inv_freq"), std::nullopt);
  for (const ExpectedTensor& t : expected_tensors(config_from_hf(llama_json())))
    EXPECT_EQ(canonical_name_from_hf(hf_name_from_canonical(t.name)), t.name);
}

TEST(ModelConfig, GgufRoundTrip) {
  nlohmann::json j = llama_json();
  j["model_type"] = "qwen3";
  j["head_dim"] = 48;
  const ModelConfig c = config_from_hf(j);
  gguf::GgufWriter w;
  write_gguf_config(c, w);
  // config_from_gguf needs the embedding to know the vocabulary.
  std::vector<uint8_t> embd(static_cast<size_t>(c.vocab_size * c.hidden_size * 4));
  std::vector<uint8_t> qn(static_cast<size_t>(c.head_dim * 4));
  w.add_tensor("token_embd.weight", DType::F32, {c.vocab_size, c.hidden_size}, embd.data(), embd.size());
  w.add_tensor("blk.0.attn_q_norm.weight", DType::F32, {c.head_dim}, qn.data(), qn.size());
  const std::string path = testing::TempDir() + "config_roundtrip.gguf";
  w.write(path);
  auto f = gguf::GgufFile::open(path);
  const ModelConfig r = config_from_gguf(*f);
  EXPECT_EQ(r.arch, Architecture::Qwen3);
  EXPECT_EQ(r.head_dim, 48);
  EXPECT_EQ(r.n_kv_heads, 2);
  EXPECT_EQ(r.intermediate_size, 512);
  EXPECT_EQ(r.context_length, 2048);
  EXPECT_FLOAT_EQ(static_cast<float>(r.rope.theta), 500000.0f);
  EXPECT_TRUE(r.qk_norm);
  EXPECT_TRUE(r.tied_embeddings);  // no output.weight
  EXPECT_EQ(r.rope.style, RopeStyle::HalfSplit);
}

}  // namespace
}  // namespace tandem
