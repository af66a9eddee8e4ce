// tandem-server as a user runs it: the subcommands' output, and one-line
// errors with a non-zero exit code for every kind of bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/gguf_export.h"
#include "models/model_file.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(TANDEM_SOURCE_DIR) / "tests/models/fixtures";
const std::string kServer = std::string(TANDEM_BINARY_DIR) + "/bin/tandem-server";

struct Output {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tandem_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Output run(const std::string& args) {
    const fs::path out = dir_ / "stdout", err = dir_ / "stderr";
    const std::string cmd = quote(kServer) + " " + args + " >" + quote(out.string()) + " 2>" + quote(err.string());
    const int status = std::system(cmd.c_str());
    Output o;
    o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    o.out = slurp(out);
    o.err = slurp(err);
    return o;
  }

  // A failed command: non-zero exit, exactly one line on stderr starting
  // with "error:" and containing `needle`, nothing on stdout.
  void expect_one_line_error(const Output& o, const std::string& needle) {
    EXPECT_NE(o.exit_code, 0);
    EXPECT_EQ(o.err.rfind("error: ", 0), 0u) << o.err;
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
    EXPECT_NE(o.err.find(needle), std::string::npos) << "wanted '" << needle << "' in: " << o.err;
    EXPECT_TRUE(o.out.empty()) << o.out;
  }

  fs::path gguf_of(const std::string& arch, const std::string& dtype = "f32") {
    const fs::path p = dir_ / (arch + "_" + dtype + ".gguf");
    auto model = ModelFile::open((kFixtures / arch).string());
    convert_to_gguf(*model, parse_dtype(dtype), p.string());
    return p;
  }

  fs::path copy_fixture(const std::string& arch) {
    const fs::path d = dir_ / (arch + "_copy");
    fs::copy(kFixtures / arch, d, fs::copy_options::recursive);
    return d;
  }

  fs::path dir_;
};

TEST_F(Cli, RunJsonGivesTheGreedyReferenceContinuation) {
  const nlohmann::json manifest = nlohmann::json::parse(slurp(kFixtures / "MANIFEST.json"));
  for (const std::string arch : {"llama3", "qwen3"}) {
    for (const fs::path& model : {kFixtures / arch, gguf_of(arch)}) {
      const Output o = run("run --model " + quote(model.string()) +
                           " --prompt 'Once upon a time there was a small model that ran on every computer'"
                           " --max-tokens 16 --temperature 0 --ignore-eos --json");
      ASSERT_EQ(o.exit_code, 0) << o.err;
      const nlohmann::json j = nlohmann::json::parse(o.out);
      std::vector<int32_t> want = manifest["models"][arch]["greedy_a"];
      want.resize(16);
      EXPECT_EQ(j["token_ids"].get<std::vector<int32_t>>(), want) << model;
      EXPECT_EQ(j["finish_reason"], "length");
      EXPECT_TRUE(j["text"].is_string());
      EXPECT_EQ(j["timings"]["prompt_tokens"], 35);
      EXPECT_EQ(j["timings"]["generated_tokens"], 16);
      EXPECT_GT(j["timings"]["prompt_ms"].get<double>(), 0.0);
      EXPECT_GE(j["timings"]["decode_ms"].get<double>(), 0.0);
    }
  }
}

TEST_F(Cli, RunPrintsTextAndATimingLine) {
  const Output o = run("run --model " + quote((kFixtures / "qwen2").string()) +
                       " --prompt 'Errors should never' --max-tokens 8 --temperature 0");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_NE(o.err.find("tok/s"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("prompt:"), std::string::npos) << o.err;
}

TEST_F(Cli, SeededSamplingIsReproducible) {
  const std::string args = "run --model " + quote((kFixtures / "llama2").string()) +
                           " --prompt 'Simple is' --max-tokens 12 --temperature 1.0 --top-k 0 --top-p 1"
                           " --min-p 0 --ignore-eos --json";
  const Output a = run(args + " --seed 7"), b = run(args + " --seed 7"), c = run(args + " --seed 8");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const auto ids = [](const Output& o) { return nlohmann::json::parse(o.out)["token_ids"]; };
  EXPECT_EQ(ids(a), ids(b));
  EXPECT_NE(ids(a), ids(c));
}

TEST_F(Cli, InspectReportsArchitectureTensorsAndTokenizer) {
  const Output o = run("inspect --json --model " + quote(gguf_of("qwen2", "q8_0").string()));
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["architecture"], "qwen2");
  EXPECT_EQ(j["format"], "gguf");
  EXPECT_EQ(j["hyperparameters"]["n_kv_heads"], 2);
  EXPECT_EQ(j["hyperparameters"]["qkv_bias"], true);
  EXPECT_EQ(j["tokenizer"], "byte-level BPE");
  EXPECT_EQ(j["chat_template"], true);
  EXPECT_GT(j["bytes_by_dtype"]["q8_0"]["tensors"].get<int>(), 0);
  EXPECT_GT(j["bytes_by_dtype"]["f32"]["tensors"].get<int>(), 0);  // norms and biases
  const Output text = run("inspect --model " + quote((kFixtures / "qwen3").string()));
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("qwen3"), std::string::npos);
  EXPECT_NE(text.out.find("chat template:   yes"), std::string::npos);
}

TEST_F(Cli, TokenizeMatchesFromFolderAndGguf) {
  const std::string text = "Once upon a time there was a small model that ran on every computer";
  const Output a = run("tokenize --json --model " + quote((kFixtures / "qwen3").string()) + " --text " + quote(text));
  const Output b = run("tokenize --json --model " + quote(gguf_of("qwen3").string()) + " --text " + quote(text));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const nlohmann::json manifest = nlohmann::json::parse(slurp(kFixtures / "MANIFEST.json"));
  EXPECT_EQ(nlohmann::json::parse(a.out)["ids"], manifest["prompt_a"]);
  EXPECT_EQ(nlohmann::json::parse(b.out)["ids"], manifest["prompt_a"]);
}

TEST_F(Cli, TemplateRendersMessagesFromArrayOrRequestBody) {
  const fs::path arr = dir_ / "messages.json", body = dir_ / "body.json";
  std::ofstream(arr) << R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}])";
  std::ofstream(body) << R"({"model":"x","messages":[{"role":"user","content":"Hi"}]})";
  const Output a = run("template --model " + quote(gguf_of("llama3").string()) + " --messages " +
                       quote(arr.string()) + " --add-generation-prompt");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const Output b = run("template --model " + quote((kFixtures / "llama3").string()) + " --messages " +
                       quote(body.string()));
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(b.out, "<|im_start|>user\nHi<|im_end|>\n");
}

TEST_F(Cli, TruncatedGgufIsAOneLineError) {
  const fs::path p = gguf_of("qwen3");
  fs::resize_file(p, fs::file_size(p) / 2);
  expect_one_line_error(run("run --model " + quote(p.string()) + " --prompt hi"), "truncated");
  fs::resize_file(p, 40);
  expect_one_line_error(run("inspect --model " + quote(p.string())), p.filename().string());
}

TEST_F(Cli, DeviceChoiceIsCheckedWithAOneLineError) {
  const std::string model = quote((kFixtures / "qwen2").string());
  expect_one_line_error(run("perf --model " + model + " -p 4 -n 2 --device gpu"), "--device must be auto, cpu, cuda");
  const Output cpu = run("run --model " + model + " --prompt hi --max-tokens 2 --device cpu --json");
  EXPECT_EQ(cpu.exit_code, 0) << cpu.err;
  // Layers on the GPU for a run on the CPU: refused, naming both.
  expect_one_line_error(run("run --model " + model + " --prompt hi --max-tokens 2 --device cpu --gpu-layers 1"),
                        "layers on the GPU were asked for (--gpu-layers");
  expect_one_line_error(run("perf --model " + model + " -p 4 -n 2 --gpu-layers 0"), "--gpu-layers must be at least 1");
  // GPU-only settings on the CPU: refused, naming the flag.
  expect_one_line_error(run("run --model " + model + " --prompt hi --max-tokens 2 --device cpu --kv-cache-dtype fp8"),
                        "--kv-cache-dtype fp8 is for the GPU engine");
  expect_one_line_error(run("run --model " + model + " --prompt hi --max-tokens 2 --device cpu --quantize int8"),
                        "--quantize int8 is for the GPU engine");
  const Output f16_cache = run("run --model " + model + " --prompt hi --max-tokens 2 --device cpu --kv-cache-dtype f16 --json");
  EXPECT_EQ(f16_cache.exit_code, 0) << f16_cache.err;
#if !TANDEM_HAVE_CUDA
  // This build has no CUDA engine: asking for it says so, auto takes the CPU.
  expect_one_line_error(run("perf --model " + model + " -p 4 -n 2 --device cuda"), "this build has no CUDA engine");
  const Output autod = run("perf --model " + model + " -p 4 -n 2 -r 1 --json");
  EXPECT_EQ(autod.exit_code, 0) << autod.err;
  EXPECT_NE(autod.out.find("\"device\": \"cpu\""), std::string::npos) << autod.out;
#endif
}

// serve --step-timeout-s takes 0 (wait forever) up to a week of seconds;
// anything else is refused before the model loads, naming the flag.
TEST_F(Cli, StepTimeoutIsCheckedBeforeLoading) {
  const std::string model = quote((kFixtures / "qwen2").string());
  for (const char* bad : {"-5", "604801", "soon"}) {
    const Output o = run("serve --model " + model + " --port 0 --step-timeout-s " + bad);
    EXPECT_NE(o.exit_code, 0) << bad;
    EXPECT_NE(o.err.find("--step-timeout-s"), std::string::npos) << o.err;
    EXPECT_EQ(o.out.find("listening"), std::string::npos) << o.out;
  }
}

// The fused all-reduce is on by default; --no-fused-all-reduce turns it
// off (perf reports the setting; on one device it changes nothing else).
TEST_F(Cli, FusedAllReduceIsOnUnlessTurnedOff) {
  const std::string model = quote((kFixtures / "qwen2").string());
  for (const auto& [flag, want] : std::vector<std::pair<std::string, bool>>{
           {"", true}, {"--fused-all-reduce", true}, {"--no-fused-all-reduce", false}}) {
    const Output out = run("perf --model " + model + " -p 8 -n 2 -r 1 --device cpu --json " + flag);
    ASSERT_EQ(out.exit_code, 0) << flag << ": " << out.err;
    const nlohmann::json j = nlohmann::json::parse(out.out);
    EXPECT_EQ(j.at("fused_all_reduce").get<bool>(), want) << flag;
    EXPECT_EQ(j.at("tensor_parallel"), 1);
  }
}

// perf --batch decodes several sequences together and reports their tokens
// in all; a batch below 1 is refused.
TEST_F(Cli, PerfDecodesABatchOfSequences) {
  const std::string model = quote((kFixtures / "qwen2").string());
  const Output out = run("perf --model " + model + " -p 8 -n 4 -b 3 -r 1 --device cpu --json");
  ASSERT_EQ(out.exit_code, 0) << out.err;
  const nlohmann::json j = nlohmann::json::parse(out.out);
  EXPECT_EQ(j.at("batch"), 3);
  ASSERT_EQ(j.at("decode_tok_s").size(), 1u);
  EXPECT_GT(j.at("decode_tok_s")[0].get<double>(), 0.0);
  const Output text = run("perf --model " + model + " -p 8 -n 4 -b 3 -r 1 --device cpu");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("decode 4 tokens x 3 sequences:"), std::string::npos) << text.out;
  expect_one_line_error(run("perf --model " + model + " -p 8 -n 4 -b 0"), "--batch must be at least 1");
}

// perf --step-prompt-tokens mixes a prompt chunk of one more sequence into
// every decode step (here 5 steps of 3 tokens from an 8-token prompt, so the
// chunked sequence starts over twice); a chunk longer than -p is refused.
// --no-cuda-graphs (for measuring what graphs save) is reported.
TEST_F(Cli, PerfMixesPromptChunksIntoDecodeSteps) {
  const std::string model = quote((kFixtures / "qwen2").string());
  const Output out = run("perf --model " + model + " -p 8 -n 5 -b 2 --step-prompt-tokens 3 -r 1 --device cpu --json");
  ASSERT_EQ(out.exit_code, 0) << out.err;
  const nlohmann::json j = nlohmann::json::parse(out.out);
  EXPECT_EQ(j.at("step_prompt_tokens"), 3);
  EXPECT_TRUE(j.at("cuda_graphs").get<bool>());
  EXPECT_TRUE(j.at("tune_gemm").get<bool>());
  EXPECT_EQ(j.at("mixed_prompt_tokens"), 15);  // 5 decode steps, 3 prompt tokens each
  ASSERT_EQ(j.at("decode_tok_s").size(), 1u);
  EXPECT_GT(j.at("decode_tok_s")[0].get<double>(), 0.0);
  const Output text = run("perf --model " + model + " -p 8 -n 5 --step-prompt-tokens 3 -r 1 --device cpu");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("decode 5 tokens x 1 sequences:"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("also computed 3 prompt tokens of another sequence (15 in all a run)"), std::string::npos)
      << text.out;
  const Output eager =
      run("perf --model " + model + " -p 8 -n 2 -r 1 --device cpu --json --no-cuda-graphs --no-tune-gemm");
  ASSERT_EQ(eager.exit_code, 0) << eager.err;
  const nlohmann::json je = nlohmann::json::parse(eager.out);
  EXPECT_FALSE(je.at("cuda_graphs").get<bool>());
  EXPECT_FALSE(je.at("tune_gemm").get<bool>());
  EXPECT_EQ(je.at("mixed_prompt_tokens"), 0);
  expect_one_line_error(run("perf --model " + model + " -p 8 -n 4 --step-prompt-tokens 9"),
                        "--step-prompt-tokens must be between 0 and -p");
}

// perplexity compares two runs of one model: the same plan twice agrees
// exactly; a plan of several GPUs on the CPU is a one-line error.
TEST_F(Cli, PerplexityComparesTwoPlansOfOneModel) {
  const std::string model = quote((kFixtures / "qwen2").string());
  const fs::path text = dir_ / "text.txt";
  std::ofstream(text) << "Once upon a time there was a small model that ran on every computer in the house, "
                         "and every evening it told the same story again.";
  const Output o = run("perplexity --model " + model + " -f " + quote(text.string()) +
                       " --ctx 16 --device cpu --compare-tensor-parallel 1 --json");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_GT(j.at("predicted_tokens").get<int64_t>(), 16);
  const nlohmann::json& c = j.at("compare");
  EXPECT_EQ(c.at("tensor_parallel"), 1);
  EXPECT_EQ(c.at("device"), "cpu");
  EXPECT_EQ(c.at("positions"), j.at("predicted_tokens"));
  EXPECT_EQ(c.at("top1_agreement").get<double>(), 1.0);
  EXPECT_EQ(c.at("max_abs_logit_diff").get<double>(), 0.0);
  EXPECT_EQ(c.at("mean_nll").get<double>(), j.at("mean_nll").get<double>());
  expect_one_line_error(run("perplexity --model " + model + " -f " + quote(text.string()) +
                            " --ctx 16 --device cpu --compare-tensor-parallel 2"),
                        "runs on GPUs");
}

TEST_F(Cli, WrongMagicIsAOneLineError) {
  const fs::path p = dir_ / "not_a_model.gguf";
  std::ofstream(p) << "GGML this is not a model file at all";
  expect_one_line_error(run("run --model " + quote(p.string()) + " --prompt hi"), "GGUF");
}

TEST_F(Cli, TensorOffsetPastTheEndIsAOneLineError) {
  const fs::path p = gguf_of("qwen3");
  std::string bytes = slurp(p);
  // Tensor info: name, u32 n_dims, n_dims x u64, u32 type, u64 offset.
  const std::string name = "output_norm.weight";
  size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  at += name.size();
  uint32_t n_dims;
  std::memcpy(&n_dims, bytes.data() + at, 4);
  at += 4 + 8 * n_dims + 4;
  const uint64_t offset = uint64_t{1} << 40;  // aligned, far past the end
  std::memcpy(bytes.data() + at, &offset, 8);
  std::ofstream(p, std::ios::binary) << bytes;
  expect_one_line_error(run("run --model " + quote(p.string()) + " --prompt hi"), "output_norm.weight");
}

TEST_F(Cli, MissingTokenizerIsAOneLineError) {
  const fs::path d = copy_fixture("llama2");
  fs::remove(d / "tokenizer.json");
  expect_one_line_error(run("run --model " + quote(d.string()) + " --prompt hi"), "tokenizer.json");
}

TEST_F(Cli, UnknownArchitectureIsAOneLineError) {
  const fs::path d = copy_fixture("llama2");
  nlohmann::json cfg = nlohmann::json::parse(slurp(d / "config.json"));
  cfg["model_type"] = "gpt_bigcode";
  std::ofstream(d / "config.json") << cfg.dump();
  expect_one_line_error(run("run --model " + quote(d.string()) + " --prompt hi"), "gpt_bigcode");
}

TEST_F(Cli, PromptLongerThanContextIsAOneLineError) {
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "Beautiful is better than ugly. ";
  expect_one_line_error(
      run("run --model " + quote((kFixtures / "qwen3").string()) + " --ctx 64 --prompt " + quote(prompt)),
      "context window is 64");
}

TEST_F(Cli, MissingModelPathIsAOneLineError) {
  expect_one_line_error(run("inspect --model /nonexistent/model.gguf"), "/nonexistent/model.gguf");
}

TEST_F(Cli, ConvertRejectsUnknownDtype) {
  expect_one_line_error(
      run("convert --model " + quote((kFixtures / "qwen3").string()) + " --out x.gguf --dtype q3_k"), "q3_k");
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

TEST_F(Cli, TemplateKeepsToolSchemaKeyOrder) {
  // A template that prints the tools as JSON: keys must come out in the
  // order the request wrote them ("type" before "function", "name" first).
  const fs::path d = copy_fixture("qwen3");
  nlohmann::json cfg = nlohmann::json::parse(slurp(d / "tokenizer_config.json"));
  cfg["chat_template"] = "{{ tools | tojson }}";
  std::ofstream(d / "tokenizer_config.json") << cfg.dump();
  const fs::path body = dir_ / "body.json";
  std::ofstream(body) << R"({"messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]})";
  const Output o = run("template --model " + quote(d.string()) + " --messages " + quote(body.string()));
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(o.out, R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
}

}  // namespace
}  // namespace tandem
