#include "models/gguf_export.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>

#include "backends/cpu/cpu_kernels.h"
#include "common/error.h"
#include "common/streamed_memory.h"
#include "common/thread_pool.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "models/model_file.h"
#include "models/tensor_encoding.h"
#include "models/tensor_names.h"
#include "tokenizer/chat_template_source.h"
#include "tokenizer/tokenizer.h"

namespace tandem {
namespace {

void check_writable_dtype(DType dtype) {
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::Q8_0,
        "cannot write weights as " + std::string(dtype_name(dtype)) + " (supported: f32, f16, bf16, q8_0)");
}

// Reorders the rows of each head from half-split pairs (i, i + d/2) to
// adjacent pairs (2i, 2i + 1), GGUF's layout for llama q/k projections.
//   m: [n_heads * head_dim, cols]
void permute_for_interleaved_rope(std::vector<float>& m, int64_t n_heads, int64_t head_dim, int64_t cols) {
  const int64_t half = head_dim / 2;
  std::vector<float> head(static_cast<size_t>(head_dim * cols));
  for (int64_t h = 0; h < n_heads; ++h) {
    float* base = m.data() + h * head_dim * cols;
    std::copy(base, base + head_dim * cols, head.begin());
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const float* src = head.data() + (j * half + i) * cols;
        std::copy(src, src + cols, base + (2 * i + j) * cols);
      }
    }
  }
}

void write_tokenizer(const std::string& tokenizer_path, gguf::GgufWriter& w) {
  std::unique_ptr<Tokenizer> tok = Tokenizer::load(tokenizer_path);
  tok->write_gguf_metadata(w);
  // The chat template travels with the tokenizer when there is one.
  const std::string tmpl = chat_template_source(tokenizer_path);
  if (!tmpl.empty()) w.set("tokenizer.chat_template", gguf::Value::string(tmpl));
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A benchmark weight: the sum of four uniforms (close enough to normal),
// centred and scaled; `scale` = sqrt(3 / fan_in) gives variance 1/fan_in so
// activations keep their size.
float random_weight(uint64_t& state, float scale) {
  const uint64_t bits = splitmix64(state);
  float sum = 0.0f;
  for (int k = 0; k < 4; ++k) sum += static_cast<float>((bits >> (16 * k)) & 0xffff) / 65535.0f;
  return (sum - 2.0f) * scale;
}

}  // namespace

void convert_to_gguf(const ModelFile& model, DType dtype, const std::string& out_path,
                     const std::function<void(int64_t, int64_t)>& progress) {
  check(model.format() == ModelFormat::HuggingFace,
        "convert expects a Hugging Face folder; '" + model.path() + "' is already GGUF");
  check_writable_dtype(dtype);
  const ModelConfig& c = model.config();
  gguf::GgufWriter w;
  write_gguf_config(c, w);
  w.set("general.name", gguf::Value::string(std::filesystem::path(model.path()).filename().string()));
  const std::string tok_json = model.hf()->tokenizer_json_path();
  check(!tok_json.empty(), model.path() + ": no tokenizer.json; a GGUF model must carry its tokenizer");
  write_tokenizer(model.path(), w);

  const auto& tensors = model.tensors();
  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(tensors.size() + 1);
  int64_t done = 0;
  for (const TensorRef& t : tensors) {
    const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
    const int64_t rows = cols == 0 ? 0 : t.n_elements() / cols;
    std::vector<float> f32(static_cast<size_t>(rows * cols));
    const int64_t src_row = dtype_row_bytes(t.dtype, cols);
    for (int64_t r = 0; r < rows; ++r) cpu::dequantize_row(t.dtype, t.data + r * src_row, f32.data() + r * cols, cols);
    if (c.arch == Architecture::Llama) {
      const bool is_q = t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_q.bias");
      const bool is_k = t.name.ends_with("attn_k.weight") || t.name.ends_with("attn_k.bias");
      const int64_t row_len = t.shape.size() == 2 ? cols : 1;
      if (is_q) permute_for_interleaved_rope(f32, c.n_heads, c.head_dim, row_len);
      if (is_k) permute_for_interleaved_rope(f32, c.n_kv_heads, c.head_dim, row_len);
    }
    const DType target = storage_dtype(t.shape, dtype);
    buffers.push_back(encode_matrix(f32.data(), rows, cols, target));
    w.add_tensor(t.name, target, t.shape, buffers.back().data(), buffers.back().size());
    if (progress) progress(++done, static_cast<int64_t>(tensors.size()));
  }
  if (c.rope.scaling == "llama3") {
    const std::vector<float> factors = rope_freq_factors(c);
    buffers.emplace_back(reinterpret_cast<const uint8_t*>(factors.data()),
                         reinterpret_cast<const uint8_t*>(factors.data() + factors.size()));
    w.add_tensor("rope_freqs.weight", DType::F32, {static_cast<int64_t>(factors.size())}, buffers.back().data(),
                 buffers.back().size());
  }
  w.write(out_path);
}

const std::vector<SynthPreset>& synth_presets() {
  static const std::vector<SynthPreset> presets = [] {
    auto make = [](std::string name, Architecture arch, int64_t vocab, int64_t hidden, int64_t inter, int64_t layers,
                   int64_t heads, int64_t kv_heads, int64_t head_dim, double theta, bool tied, int64_t ctx) {
      ModelConfig c;
      c.arch = arch;
      c.vocab_size = vocab;
      c.hidden_size = hidden;
      c.intermediate_size = inter;
      c.n_layers = layers;
      c.n_heads = heads;
      c.n_kv_heads = kv_heads;
      c.head_dim = head_dim;
      c.context_length = ctx;
      c.rms_norm_eps = 1e-5;
      c.rope.theta = theta;
      c.rope.style = arch == Architecture::Llama ? RopeStyle::Interleaved : RopeStyle::HalfSplit;
      c.qkv_bias = arch == Architecture::Qwen2;
      c.qk_norm = arch == Architecture::Qwen3;
      c.tied_embeddings = tied;
      c.layer_kinds.assign(static_cast<size_t>(layers), LayerKind::Attention);
      return SynthPreset{std::move(name), c};
    };
    using A = Architecture;
    return std::vector<SynthPreset>{
        make("tiny", A::Llama, 512, 64, 128, 2, 4, 2, 16, 10000.0, false, 512),
        make("llama-0.6b", A::Llama, 151936, 1024, 3072, 28, 16, 8, 64, 1e6, false, 4096),
        make("qwen3-0.6b", A::Qwen3, 151936, 1024, 3072, 28, 16, 8, 128, 1e6, true, 40960),
        make("qwen2.5-0.5b", A::Qwen2, 151936, 896, 4864, 24, 14, 2, 64, 1e6, true, 32768),
        make("qwen3-8b", A::Qwen3, 151936, 4096, 12288, 36, 32, 8, 128, 1e6, false, 40960),
        make("llama2-7b", A::Llama, 32000, 4096, 11008, 32, 32, 32, 128, 10000.0, false, 4096),
        make("llama3-8b", A::Llama, 128256, 4096, 14336, 32, 32, 8, 128, 500000.0, false, 8192),
        make("llama3-70b", A::Llama, 128256, 8192, 28672, 80, 64, 8, 128, 500000.0, false, 8192),
    };
  }();
  return presets;
}

const SynthPreset& find_synth_preset(const std::string& name) {
  std::string known;
  for (const SynthPreset& p : synth_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  throw Error("unknown preset '" + name + "' (known: " + known + ")");
}

void write_synth_model(const SynthPreset& preset, DType dtype, const std::string& tokenizer_path,
                       const std::string& out_path, uint64_t seed,
                       const std::function<void(int64_t, int64_t)>& progress) {
  check_writable_dtype(dtype);
  const ModelConfig& c = preset.config;
  c.validate();
  gguf::GgufWriter w;
  write_gguf_config(c, w);
  w.set("general.name", gguf::Value::string("synth-" + preset.name));
  {
    std::unique_ptr<Tokenizer> tok = Tokenizer::load(tokenizer_path);
    check(static_cast<int64_t>(tok->vocab_size()) <= c.vocab_size,
          "the tokenizer at '" + tokenizer_path + "' has " + std::to_string(tok->vocab_size()) +
              " tokens, more than preset " + preset.name + "'s vocabulary of " + std::to_string(c.vocab_size));
  }
  write_tokenizer(tokenizer_path, w);

  const std::vector<ExpectedTensor> tensors = expected_tensors(c);
  std::vector<std::vector<uint8_t>> buffers(tensors.size());
  ThreadPool pool(0);
  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const ExpectedTensor& t = tensors[ti];
    const int64_t cols = t.shape.back();
    const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const DType target = storage_dtype(t.shape, dtype);
    const int64_t row_bytes = dtype_row_bytes(target, cols);
    buffers[ti].resize(static_cast<size_t>(rows * row_bytes));
    const bool is_norm = t.shape.size() == 1 && t.name.find("norm") != std::string::npos;
    const float scale = static_cast<float>(std::sqrt(3.0 / static_cast<double>(cols)));
    pool.parallel_for(rows, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = begin; r < end; ++r) {
        uint64_t state = seed ^ (static_cast<uint64_t>(ti) << 40) ^ static_cast<uint64_t>(r) * 0x2545f4914f6cdd1dull;
        for (int64_t i = 0; i < cols; ++i) {
          if (is_norm) {
            row[static_cast<size_t>(i)] = 1.0f;
            continue;
          }
          row[static_cast<size_t>(i)] = random_weight(state, scale);
        }
        const std::vector<uint8_t> enc = encode_matrix(row.data(), 1, cols, target);
        std::copy(enc.begin(), enc.end(), buffers[ti].begin() + r * row_bytes);
      }
    });
    w.add_tensor(t.name, target, t.shape, buffers[ti].data(), buffers[ti].size());
    if (progress) progress(static_cast<int64_t>(ti + 1), static_cast<int64_t>(tensors.size()));
  }
  w.write(out_path);
}

std::unique_ptr<ModelFile> make_synth_model_in_memory(const SynthPreset& preset, DType dtype, uint64_t seed) {
  check_writable_dtype(dtype);
  const ModelConfig& c = preset.config;
  c.validate();
  const std::vector<ExpectedTensor> expected = expected_tensors(c);
  // One pool of random rows of the widest matrix, as long as the largest.
  int64_t pool_bytes = 0, widest = 0;
  for (const ExpectedTensor& e : expected) {
    if (e.shape.size() != 2 || !e.required) continue;
    const DType target = storage_dtype(e.shape, dtype);
    pool_bytes = std::max(pool_bytes, e.shape[0] * dtype_row_bytes(target, e.shape[1]));
    widest = std::max(widest, e.shape[1]);
  }
  // In huge pages where the system gives them, as a model file's mapping gets
  // them (MappedFile), so that its figures stand for a file's.
  uint8_t* pool_memory = static_cast<uint8_t*>(allocate_streamed(static_cast<size_t>(pool_bytes)));
  check(pool_memory != nullptr, "out of memory for the synthetic model's weights (" + std::to_string(pool_bytes) +
                                    " bytes)");
  std::fill(pool_memory, pool_memory + pool_bytes, uint8_t{0});
  std::shared_ptr<uint8_t> pool(pool_memory, std::free);
  {
    // Rows of `widest` columns encoded as `dtype`, back to back; the pool's
    // tail past the last whole row stays zero.
    const DType target = storage_dtype({1, widest}, dtype);
    const int64_t row_bytes = dtype_row_bytes(target, widest);
    const int64_t rows = pool_bytes / row_bytes;
    const float scale = static_cast<float>(std::sqrt(3.0 / static_cast<double>(widest)));
    ThreadPool threads(0);
    threads.parallel_for(rows, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(widest));
      for (int64_t r = begin; r < end; ++r) {
        uint64_t state = seed ^ static_cast<uint64_t>(r) * 0x2545f4914f6cdd1dull;
        for (float& v : row) v = random_weight(state, scale);
        const std::vector<uint8_t> enc = encode_matrix(row.data(), 1, widest, target);
        std::copy(enc.begin(), enc.end(), pool.get() + r * row_bytes);
      }
    });
  }
  // Norms (and any other 1-D tensor) are f32 ones.
  int64_t longest_vector = 0;
  for (const ExpectedTensor& e : expected)
    if (e.shape.size() == 1) longest_vector = std::max(longest_vector, e.shape[0]);
  auto ones = std::make_shared<std::vector<float>>(static_cast<size_t>(longest_vector), 1.0f);

  std::vector<TensorRef> tensors;
  uint64_t state = seed;
  for (const ExpectedTensor& e : expected) {
    if (!e.required) continue;
    TensorRef t;
    t.name = e.name;
    t.shape = e.shape;
    if (e.shape.size() == 1) {
      t.dtype = DType::F32;
      t.n_bytes = static_cast<uint64_t>(e.shape[0]) * sizeof(float);
      t.data = reinterpret_cast<const uint8_t*>(ones->data());
    } else {
      t.dtype = storage_dtype(e.shape, dtype);
      const int64_t bytes = e.shape[0] * dtype_row_bytes(t.dtype, e.shape[1]);
      t.n_bytes = static_cast<uint64_t>(bytes);
      // An offset of its own (windows overlap; values repeat), 256-byte
      // aligned and on a whole block of the pool's encoding (34 bytes for
      // Q8_0: a window starting mid-block would read quants as scales).
      const uint64_t block = static_cast<uint64_t>(dtype_row_bytes(t.dtype, t.dtype == DType::Q8_0 ? kQ8_0BlockElems : 1));
      const uint64_t align = std::lcm(uint64_t{256}, block);
      const uint64_t room = static_cast<uint64_t>(pool_bytes - bytes) / align;
      t.data = pool.get() + (room > 0 ? splitmix64(state) % (room + 1) * align : 0);
    }
    tensors.push_back(std::move(t));
  }
  struct Storage {
    std::shared_ptr<uint8_t> pool;
    std::shared_ptr<std::vector<float>> ones;
  };
  auto storage = std::make_shared<Storage>(Storage{pool, ones});
  return ModelFile::in_memory("synthetic:" + preset.name, c, std::move(tensors), storage);
}

}  // namespace tandem
