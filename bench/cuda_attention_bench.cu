// Decode attention speed on the Llama-3-8B attention shape (32 query heads,
// 8 KV heads of 128, f16 cache in 16-token blocks), as the CUDA engine runs
// it: one generated token per sequence, each over its own context. The
// cache holds 32 layers, visited in turn, so that each call reads its keys
// and values from HBM, as a decode step does. Prints µs per call (calls back
// to back in one stream, as in a step), the K/V bytes read per second and
// their share of --peak-gb-s, for the engine's choice of splits and heads per
// block and, with --sweep, for every split count with one or all query heads
// of a KV head per block; then the tensor-core kernel (grouped_decode_attention,
// "tc2" and "tc3": its copy pipeline 2 and 3 stages deep). "(engine)" marks
// the runner's choice.
//
//   build/bin/cuda_attention_bench [--tokens 1,8,32] [--context 128,512,2048]
//                                  [--peak-gb-s 3350] [--calls 320] [--sweep] [--kv-cache-dtype f16|fp8]
//
// With --prefill L[:C],... it times prompt attention instead (prefill_attention,
// the same shape): a chunk of C prompt tokens (all L when C is not given) at
// positions [L - C, L) of one sequence, over its whole cached context, and
// prints µs per call with the causal product's TFLOP/s (4 · head_dim · heads
// per (query, key) pair a query attends to) and their share of
// --peak-tflops (989, the H100's dense f16 figure), for one key split, the
// split count the runner would choose (marked *) and each of --splits 2,4.
//
// --kv-cache-dtype fp8: the cache holds E4M3 (one byte a value; the bytes
// read, and so GB/s, count one byte a value).
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_buffer.h"
#include "backends/cuda/kernels.h"

using namespace tandem;
using namespace tandem::cuda;

namespace {

constexpr int kLayers = 32;
constexpr int kBlockSize = 16;

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  size_t p = 0;
  while (p <= s.size()) {
    const size_t q = s.find(',', p);
    out.push_back(std::atoi(s.substr(p, q == std::string::npos ? std::string::npos : q - p).c_str()));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  return out;
}

// The Llama-3-8B attention shape.
AttentionShape llama3_8b_shape() {
  AttentionShape shape;
  shape.n_heads = 32;
  shape.n_kv_heads = 8;
  shape.head_dim = 128;
  shape.block_size = kBlockSize;
  return shape;
}

// kLayers copies of one layer's cache ([layer_elems] keys and as many
// values of `type`, random in [-1, 1)), so that calls visiting them in turn
// read from HBM as a step does.
struct LayerCaches {
  KvCacheType type;
  int64_t element_bytes, layer_elems;
  DeviceBuffer k, v;
  LayerCaches(int64_t elems, uint32_t seed, KvCacheType t)
      : type(t), element_bytes(kv_cache_element_bytes(t)), layer_elems(elems),
        k(static_cast<size_t>(element_bytes * kLayers * elems)), v(static_cast<size_t>(element_bytes * kLayers * elems)) {
    std::vector<uint8_t> host(static_cast<size_t>(element_bytes * elems));
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < elems; ++i) {
      if (type == KvCacheType::Fp8E4M3)
        host[static_cast<size_t>(i)] = __nv_cvt_float_to_fp8(dist(rng), __NV_SATFINITE, __NV_E4M3);
      else
        reinterpret_cast<__half*>(host.data())[i] = __float2half(dist(rng));
    }
    for (int l = 0; l < kLayers; ++l) {
      const size_t off = static_cast<size_t>(l * element_bytes * elems);
      TANDEM_CUDA_CHECK(cudaMemcpy(k.get<uint8_t>() + off, host.data(), host.size(), cudaMemcpyHostToDevice));
      TANDEM_CUDA_CHECK(cudaMemcpy(v.get<uint8_t>() + off, host.data(), host.size(), cudaMemcpyHostToDevice));
    }
  }
  const void* k_layer(int i) const { return k.get<uint8_t>() + (i % kLayers) * element_bytes * layer_elems; }
  const void* v_layer(int i) const { return v.get<uint8_t>() + (i % kLayers) * element_bytes * layer_elems; }
  // The arguments every mode shares for call i: q [tokens, q_dim], layer
  // i's caches, the step's positions and tables, out.
  AttentionArgs args(int i, const float* q, int64_t q_dim, const int32_t* positions, const int32_t* table_offsets,
                     const int32_t* block_tables, float* out) const {
    AttentionArgs a;
    a.q = q;
    a.q_stride = q_dim;
    a.k_cache = k_layer(i);
    a.v_cache = v_layer(i);
    a.cache_type = type;
    a.positions = positions;
    a.table_offsets = table_offsets;
    a.block_tables = block_tables;
    a.scale = 0.088f;
    a.out = out;
    return a;
  }
};

// µs a call of run(i): one pass over the layers to warm up, then `calls`
// calls back to back in `stream`, as in a step.
template <typename Run>
double time_calls(Run&& run, int calls, cudaStream_t stream, cudaEvent_t e0, cudaEvent_t e1) {
  for (int i = 0; i < kLayers; ++i) run(i);
  TANDEM_CUDA_CHECK(cudaEventRecord(e0, stream));
  for (int i = 0; i < calls; ++i) run(i);
  TANDEM_CUDA_CHECK(cudaEventRecord(e1, stream));
  TANDEM_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  return 1e3 * ms / calls;
}

// Prompt attention: each "L" or "L:C" of `spec` as the header says.
int run_prefill(const std::string& spec, double peak_tflops, int calls, const std::vector<int>& split_counts,
                KvCacheType cache_type) {
  std::vector<std::pair<int, int>> cases;  // (L, C)
  for (size_t p = 0; p <= spec.size();) {
    const size_t q = spec.find(',', p);
    const std::string item = spec.substr(p, q == std::string::npos ? std::string::npos : q - p);
    const size_t colon = item.find(':');
    const int len = std::atoi(item.substr(0, colon).c_str());
    const int chunk = colon == std::string::npos ? len : std::atoi(item.substr(colon + 1).c_str());
    if (len <= 0 || chunk <= 0 || chunk > len) {
      std::fprintf(stderr, "--prefill: bad case '%s' (L or L:C with 0 < C <= L)\n", item.c_str());
      return 2;
    }
    cases.emplace_back(len, chunk);
    if (q == std::string::npos) break;
    p = q + 1;
  }
  const AttentionShape shape = llama3_8b_shape();
  int device = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  if (!prefill_attention_init(shape, device)) {
    std::fprintf(stderr, "prefill attention does not run on this GPU\n");
    return 1;
  }
  cudaDeviceProp prop{};
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  const int64_t q_dim = int64_t{shape.n_heads} * shape.head_dim, kv_dim = int64_t{shape.n_kv_heads} * shape.head_dim;
  int max_len = 1;
  for (const auto& c : cases) max_len = std::max(max_len, c.first);
  const int64_t n_blocks = (max_len + kBlockSize - 1) / kBlockSize;
  const LayerCaches caches(n_blocks * kBlockSize * kv_dim, 11, cache_type);
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  for (int64_t b = 0; b < n_blocks; ++b) table[static_cast<size_t>(b)] = static_cast<int32_t>(b);
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<float> q_host(static_cast<size_t>(max_len * q_dim));
  for (auto& v : q_host) v = dist(rng);
  DeviceBuffer q(4 * q_host.size()), out(4 * q_host.size()), d_table(4 * table.size()),
      partials(4 * static_cast<size_t>(prefill_attention_workspace_floats(shape)));
  TANDEM_CUDA_CHECK(cudaMemcpy(q.get(), q_host.data(), 4 * q_host.size(), cudaMemcpyHostToDevice));
  TANDEM_CUDA_CHECK(cudaMemcpy(d_table.get(), table.data(), 4 * table.size(), cudaMemcpyHostToDevice));
  cudaStream_t s;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  TANDEM_CUDA_CHECK(cudaEventCreate(&e0));
  TANDEM_CUDA_CHECK(cudaEventCreate(&e1));
  std::printf("%s, %d SMs; prompt attention, 32 query heads, 8 KV heads of 128, %d layers' caches in turn\n", prop.name,
              prop.multiProcessorCount, kLayers);
  std::printf("%8s %8s %7s %7s %10s %10s %8s\n", "context", "chunk", "tiles", "splits", "us/call", "TFLOP/s",
              "% peak");
  for (const auto& [len, chunk] : cases) {
    // One sequence: its table at offset 0, sequence id 0 for every token.
    std::vector<int32_t> positions(static_cast<size_t>(chunk)), offsets(static_cast<size_t>(chunk), 0),
        sequence(static_cast<size_t>(chunk), 0);
    for (int i = 0; i < chunk; ++i) positions[static_cast<size_t>(i)] = len - chunk + i;
    std::vector<int32_t> tiles(static_cast<size_t>(3 * chunk));
    const int64_t n_tiles = plan_prefill_tiles(positions.data(), sequence.data(), 0, chunk, tiles.data());
    DeviceBuffer d_positions(4 * positions.size()), d_offsets(4 * offsets.size()),
                 d_tiles(4 * tiles.size());
    TANDEM_CUDA_CHECK(cudaMemcpy(d_positions.get(), positions.data(), 4 * positions.size(), cudaMemcpyHostToDevice));
    TANDEM_CUDA_CHECK(cudaMemcpy(d_offsets.get(), offsets.data(), 4 * offsets.size(), cudaMemcpyHostToDevice));
    TANDEM_CUDA_CHECK(cudaMemcpy(d_tiles.get(), tiles.data(), 4 * tiles.size(), cudaMemcpyHostToDevice));
    // 1 split, the runner's choice (marked *), and any --splits asked for.
    const int chosen = prefill_attention_splits(shape, n_tiles, chunk, len, prop.multiProcessorCount);
    std::vector<int> counts = {1};
    if (chosen > 1) counts.push_back(chosen);
    for (int n : split_counts)
      if (std::find(counts.begin(), counts.end(), n) == counts.end() && n >= 1 && n <= kMaxPrefillSplits &&
          n * chunk <= kPrefillSplitRows)
        counts.push_back(n);
    for (const int n_splits : counts) {
      auto run = [&](int i) {
        AttentionArgs a = caches.args(i, q.get<float>(), q_dim, d_positions.get<int32_t>(), d_offsets.get<int32_t>(),
                                      d_table.get<int32_t>(), out.get<float>());
        a.split_partials = partials.get<float>();
        prefill_attention(a, shape, d_tiles.get<int32_t>(), n_tiles, s, n_splits, chunk);
      };
      const double us = time_calls(run, calls, s, e0, e1);
      double pairs = 0;  // (query, key) pairs attended
      for (int32_t p : positions) pairs += p + 1;
      const double tflops = 4.0 * shape.head_dim * shape.n_heads * pairs / (us * 1e6);
      std::printf("%8d %8d %7lld %6d%s %10.2f %10.1f %7.1f%%\n", len, chunk, static_cast<long long>(n_tiles), n_splits,
                  n_splits == chosen ? "*" : " ", us, tflops, 100 * tflops / peak_tflops);
    }
  }
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokens_arg = "1,8,32", context_arg = "128,512,2048";
  double peak = 3350;
  int calls = 320;
  bool sweep = false;
  std::string prefill_arg, splits_arg, cache_arg = "f16";
  double peak_tflops = 989;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--sweep") {
      sweep = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--tokens") tokens_arg = argv[++i];
    else if (a == "--context") context_arg = argv[++i];
    else if (a == "--peak-gb-s") peak = std::atof(argv[++i]);
    else if (a == "--calls") calls = std::atoi(argv[++i]);
    else if (a == "--prefill") prefill_arg = argv[++i];
    else if (a == "--splits") splits_arg = argv[++i];
    else if (a == "--peak-tflops") peak_tflops = std::atof(argv[++i]);
    else if (a == "--kv-cache-dtype") cache_arg = argv[++i];
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (cache_arg != "f16" && cache_arg != "fp8") {
    std::fprintf(stderr, "--kv-cache-dtype: f16 or fp8, not '%s'\n", cache_arg.c_str());
    return 2;
  }
  const KvCacheType cache_type = cache_arg == "fp8" ? KvCacheType::Fp8E4M3 : KvCacheType::F16;
  if (!prefill_arg.empty())
    return run_prefill(prefill_arg, peak_tflops, calls, splits_arg.empty() ? std::vector<int>{} : parse_list(splits_arg),
                       cache_type);
  const std::vector<int> token_counts = parse_list(tokens_arg), contexts = parse_list(context_arg);
  int max_tokens = 1, max_context = 1;
  for (int t : token_counts) max_tokens = std::max(max_tokens, t);
  for (int c : contexts) max_context = std::max(max_context, c);

  const AttentionShape shape = llama3_8b_shape();
  const int64_t q_dim = int64_t{shape.n_heads} * shape.head_dim, kv_dim = int64_t{shape.n_kv_heads} * shape.head_dim;
  const int64_t blocks_per_seq = (max_context + kBlockSize - 1) / kBlockSize;
  const int64_t layer_blocks = blocks_per_seq * max_tokens;
  const int64_t layer_elems = layer_blocks * kBlockSize * kv_dim;

  cudaDeviceProp prop{};
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const int grouped_stages = grouped_decode_attention_init(shape, 0, cache_type);  // 0: not on this device
  const bool grouped = grouped_stages > 0;
  const LayerCaches caches(layer_elems, 7, cache_type);
  const double eb = static_cast<double>(caches.element_bytes);
  std::printf("%s, %d SMs; %s cache %.2f GiB (%d layers, %d sequences x %d positions)\n", prop.name,
              prop.multiProcessorCount, cache_arg.c_str(), 2.0 * eb * kLayers * layer_elems / (1 << 30), kLayers,
              max_tokens, max_context);

  std::mt19937 rng(8);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> q_host(static_cast<size_t>(max_tokens * q_dim));
  for (auto& v : q_host) v = dist(rng);
  DeviceBuffer q(4 * q_host.size()), out(4 * q_host.size());
  TANDEM_CUDA_CHECK(cudaMemcpy(q.get(), q_host.data(), 4 * q_host.size(), cudaMemcpyHostToDevice));
  // Sequence t owns blocks [t * blocks_per_seq, (t + 1) * blocks_per_seq), in a shuffled order.
  std::vector<int32_t> tables(static_cast<size_t>(layer_blocks)), offsets(static_cast<size_t>(max_tokens));
  for (int64_t b = 0; b < layer_blocks; ++b) tables[static_cast<size_t>(b)] = static_cast<int32_t>(b);
  std::shuffle(tables.begin(), tables.end(), rng);
  for (int t = 0; t < max_tokens; ++t) offsets[static_cast<size_t>(t)] = static_cast<int32_t>(t * blocks_per_seq);
  DeviceBuffer d_tables(4 * tables.size()), d_offsets(4 * offsets.size()), d_positions(4 * offsets.size());
  TANDEM_CUDA_CHECK(cudaMemcpy(d_tables.get(), tables.data(), 4 * tables.size(), cudaMemcpyHostToDevice));
  TANDEM_CUDA_CHECK(cudaMemcpy(d_offsets.get(), offsets.data(), 4 * offsets.size(), cudaMemcpyHostToDevice));
  DeviceBuffer partials(static_cast<size_t>(kAttentionSplitSlots) * 258 * 4), counters(kAttentionSplitSlots * 4);
  TANDEM_CUDA_CHECK(cudaMemset(counters.get(), 0, kAttentionSplitSlots * 4));

  cudaStream_t s;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  TANDEM_CUDA_CHECK(cudaEventCreate(&e0));
  TANDEM_CUDA_CHECK(cudaEventCreate(&e1));

  std::printf("%8s %8s %7s %4s %10s %10s %8s\n", "tokens", "context", "splits", "hpb", "us/call", "KV GB/s", "% peak");
  for (int n_tokens : token_counts) {
    for (int context : contexts) {
      // Every sequence decodes its token at position context - 1.
      std::vector<int32_t> positions(static_cast<size_t>(n_tokens), context - 1);
      TANDEM_CUDA_CHECK(cudaMemcpy(d_positions.get(), positions.data(), 4 * positions.size(), cudaMemcpyHostToDevice));
      const int engine_hpb = attention_heads_per_block(shape, n_tokens, prop.multiProcessorCount);
      const int engine_splits = attention_splits(shape, n_tokens, prop.multiProcessorCount, engine_hpb);
      std::vector<std::pair<int, int>> configs{{engine_splits, engine_hpb}};  // (splits, heads per block)
      if (sweep)
        for (int hpb : {1, shape.n_heads / shape.n_kv_heads})
          for (int sp = 1; sp <= kMaxAttentionSplits; sp *= 2)
            if ((sp != engine_splits || hpb != engine_hpb) && n_tokens * shape.n_heads * sp <= kAttentionSplitSlots)
              configs.emplace_back(sp, hpb);
      for (const auto& config : configs) {
        const int splits = config.first, hpb = config.second;
        auto run = [&](int i) {
          AttentionArgs a = caches.args(i, q.get<float>(), q_dim, d_positions.get<int32_t>(), d_offsets.get<int32_t>(),
                                        d_tables.get<int32_t>(), out.get<float>());
          a.split_partials = partials.get<float>();
          a.split_counters = counters.get<int32_t>();
          a.decode_only = true;
          paged_attention(a, shape, n_tokens, splits, s, hpb);
        };
        const double us = time_calls(run, calls, s, e0, e1);
        const double bytes = 2.0 * eb * double(n_tokens) * context * kv_dim;
        const double gbs = bytes / (us * 1e3);
        const bool engine_takes = !(grouped && grouped_decode_attention_takes(shape, n_tokens, prop.multiProcessorCount));
        std::printf("%8d %8d %7d %4d %10.2f %10.1f %7.1f%%%s\n", n_tokens, context, splits, hpb, us, gbs,
                    100 * gbs / peak, engine_takes && splits == engine_splits && hpb == engine_hpb ? "  (engine)" : "");
      }
      if (grouped) {  // the tensor-core kernel, "tc<stages>" in the heads-a-block column
        const bool engine_takes = grouped_decode_attention_takes(shape, n_tokens, prop.multiProcessorCount);
        const int engine_stages =
            grouped_decode_attention_stages(shape, n_tokens, prop.multiProcessorCount, grouped_stages);
        for (int stages : {2, 3}) {
          if (stages > grouped_stages) continue;  // more than the device's shared memory holds
          auto run = [&](int i) {
            grouped_decode_attention(caches.args(i, q.get<float>(), q_dim, d_positions.get<int32_t>(),
                                                 d_offsets.get<int32_t>(), d_tables.get<int32_t>(), out.get<float>()),
                                     shape, n_tokens, stages, s);
          };
          const double us = time_calls(run, calls, s, e0, e1);
          const double gbs = 2.0 * eb * double(n_tokens) * context * kv_dim / (us * 1e3);
          const std::string label = "tc" + std::to_string(stages);
          std::printf("%8d %8d %7d %4s %10.2f %10.1f %7.1f%%%s\n", n_tokens, context, 1, label.c_str(), us, gbs,
                      100 * gbs / peak, engine_takes && stages == engine_stages ? "  (engine)" : "");
        }
      }
    }
  }
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  return 0;
}
