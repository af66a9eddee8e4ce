// A CPU simulation of tensor x pipeline parallelism, as a test oracle of the
// sharding: every rank of the plan is a thread holding only its shards
// (weight_sharding.h); the ranks talk through InProcessCommunicator exactly
// where the GPUs will talk through NCCL: an all-reduce (sum) after the
// attention output and FFN down projections, send/recv of the hidden state
// between pipeline stages, an all-gather of the vocabulary-split logits.
// Its logits must match the unsharded CPU engine's. It is a reference
// forward pass over one prompt (no KV cache reuse, no batching), written
// with the CPU kernels; it is not a production runner.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "models/model_file.h"
#include "parallel/parallel_config.h"

namespace tandem::parallel {

// Logits [tokens.size(), vocab] of every position of one prompt that starts
// at position 0, computed by config.world_size() simulated GPUs. Matmuls use
// `path`: Gemm (the prefill kernels, as the CPU engine uses for prompt
// tokens) or Gemv (the decode kernels, which quantize activations per
// 32-block against Q8_0 weights, as for generated tokens).
// PRECONDITIONS: tokens is not empty. Throws tandem::Error when the model
// cannot be split as `config` asks (plan_parallel's errors) or a token is
// outside the vocabulary.
std::vector<float> simulate_parallel_prefill(const ModelFile& model, const ParallelConfig& config,
                                             std::span<const int32_t> tokens,
                                             cpu::MatmulPath path = cpu::MatmulPath::Gemm);

}  // namespace tandem::parallel
