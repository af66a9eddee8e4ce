// Writing GGUF models: conversion of Hugging Face folders, and random-weight
// models of real shapes for benchmarks and memory tests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "models/model_config.h"

namespace tandem {

class ModelFile;

// Converts a Hugging Face model (opened as ModelFile) into a GGUF file with
// matrices stored as `dtype` (f32, f16, bf16 or q8_0). Llama q/k rows are
// permuted to GGUF's interleaved RoPE layout; Llama-3 rope scaling is written
// as rope_freqs.weight; the tokenizer and chat template come from the folder.
// `progress(done, total)` is called per tensor when set.
void convert_to_gguf(const ModelFile& model, DType dtype, const std::string& out_path,
                     const std::function<void(int64_t, int64_t)>& progress = {});

// Real model shapes by name: "llama3-8b", "llama2-7b", "qwen3-0.6b", ...
struct SynthPreset {
  std::string name;
  ModelConfig config;
};
const std::vector<SynthPreset>& synth_presets();
// Throws naming the known presets when `name` is none of them.
const SynthPreset& find_synth_preset(const std::string& name);

// Writes a random-weight model of the preset's shape (weights ~ N(0, 1/fan_in),
// norms 1) with the tokenizer found at `tokenizer_path` (see Tokenizer::load).
void write_synth_model(const SynthPreset& preset, DType dtype, const std::string& tokenizer_path,
                       const std::string& out_path, uint64_t seed,
                       const std::function<void(int64_t, int64_t)>& progress = {});

// The preset's shape as a model in memory, for speed measurements of shapes
// too large to write out (a 70B model in bf16 is 141 GB): every matrix is a
// window, at its own offset, into one shared buffer of random values (as
// large as the largest matrix), norms are 1. The bytes on a GPU are as many
// as the real model's, and each matrix is its own allocation there; only
// the values repeat, so its outputs mean nothing. No tokenizer.
std::unique_ptr<ModelFile> make_synth_model_in_memory(const SynthPreset& preset, DType dtype, uint64_t seed);

}  // namespace tandem
