// The serve side of parallel plans: the config keys and flags are read and
// checked, and `tandem-server serve` with more than one GPU in its plan stops
// with the plan it computed and says that multi-GPU execution is not built.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "common/error.h"
#include "server/server_config.h"

namespace tandem::parallel {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(TANDEM_SOURCE_DIR) / "tests/models/fixtures";
const std::string kServer = std::string(TANDEM_BINARY_DIR) + "/bin/tandem-server";

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ServeParallelConfig, ReadsTheKeysAndChecksThem) {
  server::ServerConfig c;
  server::apply_config_json(nlohmann::json::parse(R"({"tensor_parallel": 2, "pipeline_stages": 3, "micro_batch_size": 2})"),
                            c);
  EXPECT_EQ(c.parallel.tensor_parallel, 2);
  EXPECT_EQ(c.parallel.pipeline_stages, 3);
  EXPECT_EQ(c.parallel.micro_batch_size, 2);
  EXPECT_NO_THROW(server::validate_config(c));
  c.batch_size = 1;
  EXPECT_NE(error_of([&] { server::validate_config(c); }).find("micro_batch_size"), std::string::npos);

  server::ServerConfig d;
  EXPECT_NE(error_of([&] { server::apply_config_json(nlohmann::json::parse(R"({"tensor_parallel": 0})"), d); })
                .find("'tensor_parallel' must be in [1, 64], got 0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { server::apply_config_json(nlohmann::json::parse(R"({"pipeline_stages": "2"})"), d); })
                .find("'pipeline_stages' must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { server::apply_config_json(nlohmann::json::parse(R"({"tensor_paralel": 2})"), d); })
                .find("tensor_parallel, pipeline_stages, micro_batch_size"),
            std::string::npos);
}

class ServeRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tandem_serve_parallel_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs serve on the llama3 fixture (2 layers, 4 heads, 2 KV heads) on a
  // free port; returns the exit code and fills err_ with stderr.
  int serve(const std::string& args) {
    const fs::path err = dir_ / "stderr";
    const std::string cmd = kServer + " serve --port 0 --threads 1 --log-level error -m " +
                            (kFixtures / "llama3").string() + " " + args + " >/dev/null 2>" + err.string();
    const int status = std::system(cmd.c_str());
    std::ifstream in(err);
    err_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  fs::path dir_;
  std::string err_;
};

// A plan of several GPUs on the CPU engine is refused with the plan it
// computed (the multi-GPU runner is checked by tests/backends/cuda on GPUs).
TEST_F(ServeRefusal, TensorAndPipelineParallelOnTheCpuPrintThePlanAndStop) {
  EXPECT_EQ(serve("--device cpu --tensor-parallel 2 --pipeline-parallel 2"), 1) << err_;
  EXPECT_NE(err_.find("runs on GPUs, but this run is on the CPU"), std::string::npos) << err_;
  EXPECT_NE(err_.find("tensor_parallel 2 x pipeline_stages 2 = 4 GPUs"), std::string::npos) << err_;
  EXPECT_NE(err_.find("2 attention heads, 1 KV heads, 128 FFN columns"), std::string::npos) << err_;
  EXPECT_NE(err_.find("stage 0: layers 0-0 (1), embedding"), std::string::npos) << err_;
  EXPECT_NE(err_.find("stage 1: layers 1-1 (1), LM head"), std::string::npos) << err_;
}

TEST_F(ServeRefusal, ConfigFileKeysAreRefusedTheSameWay) {
  const fs::path config = dir_ / "config.json";
  std::ofstream(config) << R"({"pipeline_stages": 2})";
  EXPECT_EQ(serve("--device cpu --config " + config.string()), 1) << err_;
  EXPECT_NE(err_.find("runs on GPUs, but this run is on the CPU"), std::string::npos) << err_;
  EXPECT_NE(err_.find("tensor_parallel 1 x pipeline_stages 2 = 2 GPUs"), std::string::npos) << err_;
}

TEST_F(ServeRefusal, HeadsThatDoNotDivideAreNamed) {
  EXPECT_EQ(serve("--tensor-parallel 3"), 1) << err_;
  EXPECT_NE(err_.find("2 KV heads cannot be split over 3 GPUs"), std::string::npos) << err_;
  EXPECT_NE(err_.find("this model allows tensor_parallel 1 or 2"), std::string::npos) << err_;
  EXPECT_EQ(serve("--pipeline-parallel 3"), 1) << err_;
  EXPECT_NE(err_.find("3 pipeline stages for a model of 2 layers"), std::string::npos) << err_;
}

// Multi-node launch mistakes stop before anything loads, naming the flag.
TEST_F(ServeRefusal, NodeFlagsOutOfRangeAreNamed) {
  EXPECT_EQ(serve("--tensor-parallel 2 --nnodes 2 --node-rank 2"), 1) << err_;
  EXPECT_NE(err_.find("--node-rank must be in [0, nnodes - 1 = 1], got 2"), std::string::npos) << err_;
  EXPECT_EQ(serve("--device cpu --tensor-parallel 2 --nnodes 2 --master-port 70000"), 1) << err_;
  EXPECT_NE(err_.find("--master-port must be in [1, 65535]"), std::string::npos) << err_;
}

// A node other than 0 serves no API: it loads its ranks and follows node 0.
// Here it stops with the reason it cannot: no NCCL or GPU in this build or
// machine, or (on a GPU machine) no node 0 within --node-timeout-s.
TEST_F(ServeRefusal, AFollowerNodeSaysWhyItCannotFollow) {
  EXPECT_EQ(serve("--tensor-parallel 2 --nnodes 2 --node-rank 1 --node-timeout-s 1"), 1) << err_;
  EXPECT_TRUE(err_.find("this build has no NCCL") != std::string::npos ||
              err_.find("no CUDA GPU") != std::string::npos ||
              err_.find("could not reach node 0 at 127.0.0.1:8770") != std::string::npos)
      << err_;
}

}  // namespace
}  // namespace tandem::parallel
