// ParallelCudaRunner: one worker thread per GPU rank; see the header.
#include "backends/cuda/parallel_cuda_runner.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/nccl_communicator.h"
#include "backends/cuda/nccl_tensor_reduce.h"
#include "common/error.h"
#include "parallel/rank_model.h"
#include "parallel/rank_steps.h"
#include "parallel/rank_worker.h"
#include "parallel/step_watch.h"

namespace tandem {
namespace {

// Steps of up to this many tokens (decode batches) take the fused
// all-reduce; larger ones NCCL's all-reduce.
constexpr int64_t kFusedReduceTokens = 256;

// How often a step's wait asks its StepWatch whether to give the step up.
constexpr std::chrono::milliseconds kWatchPeriod{100};

}  // namespace

struct ParallelCudaRunner::Impl {
  // One GPU's state, created and used on its worker thread.
  struct Rank {
    int64_t global = 0, stage = 0, tp_rank = 0;
    int device = 0;
    cudaStream_t stream = nullptr;
    std::unique_ptr<parallel::NcclCommunicator> tensor, pipeline;
    // The tensor group's fused all-reduce and norm (in `tensor`'s window);
    // null where it is not used, `reduce_error` saying why when it was tried.
    std::unique_ptr<parallel::NcclTensorReduce> reduce;
    std::string reduce_error;
    std::unique_ptr<CudaModelRunner> runner;
    size_t index = 0;  // in `ranks` and `steps`
    // Steps run and the summed time from each step's post to this rank's
    // job starting (describe_rank_timing); written by the rank's job.
    int64_t timed_steps = 0;
    double start_lag_ms = 0;
    parallel::RankWorker worker;

    ~Rank() {
      // Runner before communicators before the stream they all queue on, on
      // the worker thread (which made them). The worker joins after this.
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      worker.post([&] {
        try {
          runner.reset();
          reduce.reset();
          pipeline.reset();
          tensor.reset();
          if (stream) cudaStreamDestroy(stream);
        } catch (...) {
        }
        std::lock_guard<std::mutex> lock(mu);
        done = true;
        cv.notify_all();
      });
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done; });
    }
  };

  ModelConfig config;
  parallel::ParallelPlan plan;
  ParallelRunnerOptions options;
  std::vector<std::unique_ptr<Rank>> ranks;  // this node's, by global rank
  parallel::NodeLink* link = nullptr;
  std::chrono::steady_clock::time_point last_sent;  // node 0: its last message to the other nodes
  int node = 0;
  int64_t ranks_per_node = 0;
  int holder_node = 0;  // the node of the last stage's tensor rank 0
  // The largest micro-batch needs the ranks' buffers were grown to (run_local).
  CudaModelRunner::ShardNeeds reserved;
  BlockAllocator allocator{1};
  int64_t max_context = 0;
  uint64_t weight_bytes = 0;
  std::vector<float> logits;
  std::vector<int32_t> tokens;  // row_tokens(): chunk order, empty when none computed

  // How long a step may run before it is given up (StepWatch); 0: no limit.
  // Several nodes: --node-silence-s, but at least 30 s (a low silence limit
  // is for idle hangs; a long prefill may take seconds).
  std::chrono::milliseconds step_limit() const {
    if (link == nullptr) return options.step_limit;
    const std::chrono::milliseconds silence = link->config().node0_silence;
    if (silence.count() == 0) return silence;
    return std::max<std::chrono::milliseconds>(silence, std::chrono::seconds(30));
  }

  // The rank that returns logits, when it is on this node; else null.
  Rank* logits_rank() {
    const int64_t g = parallel::global_rank(plan.config, plan.config.pipeline_stages - 1, 0);
    for (auto& r : ranks)
      if (r->global == g) return r.get();
    return nullptr;
  }

  // This node's part of a step: each rank queues its micro-batches back to
  // back (stage s works on micro-batch i while stage s+1 works on i-1). Only
  // the logits' rank waits for each (to copy its logits out); the others
  // wait once at the end. Fills `logits` when the logits' rank is here.
  void run_local(std::span<const SequenceChunk> chunks, const std::function<std::string()>& watch) {
    const std::vector<parallel::Range> batches = parallel::split_micro_batches(
        static_cast<int64_t>(chunks.size()), plan.config.micro_batch_size, plan.config.pipeline_stages);
    Rank* holder = logits_rank();
    // Logits rows (and tokens) of each micro-batch start at these rows.
    const int64_t vocab = config.vocab_size;
    std::vector<int64_t> first_row(batches.size() + 1, 0);
    for (size_t i = 0; i < batches.size(); ++i) {
      first_row[i + 1] = first_row[i];
      for (int64_t c = batches[i].begin; c < batches[i].begin + batches[i].size(); ++c) {
        const SequenceChunk& ch = chunks[static_cast<size_t>(c)];
        first_row[i + 1] += ch.all_logits ? static_cast<int64_t>(ch.tokens.size()) : 1;
      }
    }
    // Not cleared first: a step as large as the last one re-fills nothing.
    if (holder != nullptr) {
      logits.resize(static_cast<size_t>(first_row.back() * vocab));
    } else {
      logits.clear();
    }
    tokens.assign(static_cast<size_t>(first_row.back()), -1);
    bool any_tokens = false;
    // Buffers for every micro-batch first, in a pass of their own when any
    // must grow: growing frees GPU memory (cudaFree waits for the GPU, and
    // may wait for its peers), so it must not happen while another rank's
    // collectives, already queued, wait for this rank's part, which it
    // would then never queue.
    bool grow = false;
    CudaModelRunner::ShardNeeds next = reserved;
    for (const parallel::Range& b : batches) {
      const CudaModelRunner::ShardNeeds n = CudaModelRunner::shard_needs(
          chunks.subspan(static_cast<size_t>(b.begin), static_cast<size_t>(b.size())));
      grow = grow || !n.within(reserved);
      next.tokens = std::max(next.tokens, n.tokens);
      next.rows = std::max(next.rows, n.rows);
      next.meta_ints = std::max(next.meta_ints, n.meta_ints);
      next.sampling_bytes = std::max(next.sampling_bytes, n.sampling_bytes);
    }
    if (grow) {
      run_all(
          [&](Rank& r) {
            for (const parallel::Range& b : batches)
              r.runner->reserve_shard(chunks.subspan(static_cast<size_t>(b.begin), static_cast<size_t>(b.size())));
          },
          watch);
      reserved = next;  // only once every rank has grown
    }
    const auto posted = std::chrono::steady_clock::now();
    run_all([&](Rank& r) {
      ++r.timed_steps;
      r.start_lag_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - posted).count();
      for (size_t i = 0; i < batches.size(); ++i) {
        const auto part_chunks = chunks.subspan(static_cast<size_t>(batches[i].begin),
                                                static_cast<size_t>(batches[i].size()));
        const std::vector<float>& part = r.runner->forward_shard(part_chunks);
        if (&r != holder) continue;
        // Rows whose token the GPU picked need no logits: a micro-batch of
        // nothing else copies none.
        const std::span<const int32_t> picked = r.runner->row_tokens();
        bool all_picked = !picked.empty();
        for (const SequenceChunk& ch : part_chunks)
          all_picked = all_picked && (ch.argmax_only || (ch.sampling != nullptr && !ch.all_logits));
        if (!picked.empty()) {
          std::copy(picked.begin(), picked.end(), tokens.begin() + first_row[i]);
          any_tokens = true;
        }
        if (!all_picked) std::copy(part.begin(), part.end(), logits.begin() + first_row[i] * vocab);
      }
      r.runner->synchronize();
    }, watch);
    if (!any_tokens) tokens.clear();
  }

  // Steps across the ranks: a job per rank on its worker, failures and
  // give-ups (parallel::RankSteps). Made once the ranks exist; destroyed
  // before them.
  std::unique_ptr<parallel::RankSteps> steps;

  std::string broken() const { return steps ? steps->broken() : std::string(); }
  void set_broken(const std::string& why) { steps->set_broken(why); }

  // job(rank) on every rank; see RankSteps::run (`watch`: a StepWatch's
  // check, asked every kWatchPeriod while the ranks run).
  void run_all(const std::function<void(Rank&)>& job, const std::function<std::string()>& watch = {}) {
    steps->run([&](size_t i) { job(*ranks[i]); }, watch);
  }

  // Waits until rank r's stream is idle, watching NCCL's asynchronous errors
  // (a peer process that died) and the request to give up. Giving up aborts
  // the rank's communicators here, on the thread that queues on them.
  void wait_stream(Rank& r) {
    for (;;) {
      const cudaError_t e = cudaStreamQuery(r.stream);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) TANDEM_CUDA_CHECK(e);
      // Asked first: once the step is given up, peers' aborts may show here
      // as NCCL errors, which are not the cause.
      if (steps->asked_to_give_up(r.index)) {
        if (r.reduce) r.reduce->abort();
        if (r.tensor) r.tensor->abort();
        if (r.pipeline) r.pipeline->abort();
        throw parallel::RankGaveUp("rank " + std::to_string(r.global) +
                                   " gave up: another rank failed, or the step was given up");
      }
      for (parallel::NcclCommunicator* c : {r.tensor.get(), r.pipeline.get()}) {
        if (c == nullptr) continue;
        const std::string error = c->async_error();
        if (!error.empty())
          throw Error("rank " + std::to_string(r.global) + " (GPU " + std::to_string(r.device) + "): NCCL: " + error);
      }
      std::this_thread::yield();
    }
  }
};

ParallelCudaRunner::ParallelCudaRunner(const ModelFile& model, const ParallelRunnerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = model.config();
  m.options = options;
  m.plan = parallel::plan_parallel(model.config(), model.tensors(), options.parallel);
  const parallel::ParallelConfig& pc = m.plan.config;
  const int64_t world = pc.world_size();
  int n_devices = 0;
  if (cudaGetDeviceCount(&n_devices) != cudaSuccess) {
    cudaGetLastError();
    n_devices = 0;
  }
  m.link = options.link.get();
  const int nnodes = m.link ? m.link->nnodes() : 1;
  m.node = m.link ? m.link->node_rank() : 0;
  check(world % nnodes == 0, describe(pc) + " cannot split evenly over " + std::to_string(nnodes) + " nodes");
  m.ranks_per_node = world / nnodes;
  m.holder_node = static_cast<int>(parallel::global_rank(pc, pc.pipeline_stages - 1, 0) / m.ranks_per_node);
  const int64_t first_rank = m.node * m.ranks_per_node;
  std::vector<int> devices = options.devices;
  if (devices.empty())
    for (int64_t r = 0; r < m.ranks_per_node; ++r) devices.push_back(static_cast<int>(r));
  check(static_cast<int64_t>(devices.size()) == m.ranks_per_node,
        std::to_string(devices.size()) + " GPUs named for the " + std::to_string(m.ranks_per_node) +
            " ranks of this node (" + describe(pc) + ")");
  for (int d : devices)
    check(d >= 0 && d < n_devices, describe(pc) + " needs GPU " + std::to_string(d) + ", but " +
                                       std::to_string(n_devices) + " GPU(s) are visible");
  // Two ranks on one GPU (tests of a plan larger than the machine) work only
  // without CUDA graphs: replayed, two communicators' kernels on one GPU can
  // wait on each other forever.
  {
    std::vector<int> sorted = devices;
    std::sort(sorted.begin(), sorted.end());
    const bool shared = std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end();
    check(!shared || !options.gpu.cuda_graphs,
          "two ranks of " + describe(pc) + " share a GPU; that runs only with CUDA graphs off");
  }

  // One NCCL clique per stage's tensor group and one per tensor rank across
  // the stages; every rank joins its two (in that order, on its own thread).
  // Node 0 makes the ids and hands them to the other nodes, after the
  // settings every node must share; a node that differs refuses to start.
  const size_t n_ids = static_cast<size_t>((pc.tensor_parallel > 1 ? pc.pipeline_stages : 0) +
                                           (pc.pipeline_stages > 1 ? pc.tensor_parallel : 0));
  std::vector<parallel::NcclUniqueId> ids(n_ids);
  const int64_t shared_settings[8] = {pc.tensor_parallel,
                                      pc.pipeline_stages,
                                      pc.micro_batch_size,
                                      static_cast<int64_t>(options.gpu.quantize),
                                      static_cast<int64_t>(options.gpu.kv_cache),
                                      options.gpu.block_size,
                                      options.gpu.batch_invariant ? 1 : 0,
                                      m.link ? m.link->config().node0_silence.count() : 0};
  const size_t settings_bytes = sizeof shared_settings;
  if (m.node == 0) {
    for (auto& id : ids) id = parallel::make_nccl_unique_id();
    std::vector<uint8_t> blob(reinterpret_cast<const uint8_t*>(shared_settings),
                              reinterpret_cast<const uint8_t*>(shared_settings) + settings_bytes);
    for (const auto& id : ids) blob.insert(blob.end(), id.bytes.begin(), id.bytes.end());
    for (int n = 1; n < nnodes; ++n) m.link->send(n, blob);
    // Every node says whether it agrees before anyone joins NCCL (whose
    // start-up would wait forever for a node that refused).
    for (int n = 1; n < nnodes; ++n) {
      const std::vector<uint8_t> ack = m.link->recv(n);
      check(!ack.empty() && ack[0] == 0,
            "node " + std::to_string(n) + " refused to start: " +
                (ack.empty() ? std::string("(no reason)") : std::string(ack.begin() + 1, ack.end())));
    }
  } else {
    const std::vector<uint8_t> blob = m.link->recv(0);
    const bool same = blob.size() >= settings_bytes && std::memcmp(blob.data(), shared_settings, settings_bytes) == 0;
    const std::string refusal =
        "node 0 runs other settings than node " + std::to_string(m.node) +
        " (tensor_parallel, pipeline_stages, micro_batch_size, --quantize, --kv-cache-dtype, KV block size, "
        "--batch-invariant, --node-silence-s): give every node the same command";
    std::vector<uint8_t> ack(1, same ? 0 : 1);
    if (!same) ack.insert(ack.end(), refusal.begin(), refusal.end());
    m.link->send(0, ack);
    check(same, refusal);
    check(blob.size() == settings_bytes + n_ids * sizeof(parallel::NcclUniqueId::bytes),
          "node 0 sent " + std::to_string(blob.size()) + " bytes of start-up data; this node expects " +
              std::to_string(n_ids) + " NCCL ids");
    for (size_t i = 0; i < n_ids; ++i)
      std::memcpy(ids[i].bytes.data(), blob.data() + settings_bytes + i * ids[i].bytes.size(), ids[i].bytes.size());
  }
  const std::vector<parallel::NcclUniqueId> tensor_ids(
      ids.begin(), ids.begin() + (pc.tensor_parallel > 1 ? pc.pipeline_stages : 0));
  const std::vector<parallel::NcclUniqueId> pipeline_ids(ids.begin() + static_cast<int64_t>(tensor_ids.size()),
                                                         ids.end());

  for (int64_t g = first_rank; g < first_rank + m.ranks_per_node; ++g) {
    auto rank = std::make_unique<Impl::Rank>();
    rank->global = g;
    rank->stage = g / pc.tensor_parallel;
    rank->tp_rank = g % pc.tensor_parallel;
    rank->device = devices[static_cast<size_t>(g - first_rank)];
    rank->index = m.ranks.size();
    m.ranks.push_back(std::move(rank));
  }
  {
    std::vector<parallel::RankSteps::Rank> hooks;
    for (auto& owned : m.ranks) {
      Impl::Rank* r = owned.get();
      parallel::RankSteps::Rank h;
      h.worker = &r->worker;
      h.name = "rank " + std::to_string(r->global) + " (GPU " + std::to_string(r->device) + ")";
      h.abort_own = [r] {
        if (r->reduce) r->reduce->abort();
        if (r->tensor) r->tensor->abort();
        if (r->pipeline) r->pipeline->abort();
      };
      // The fused reduction's spins wait in a kernel, which no NCCL abort
      // ends; its abort word is host memory, safe to set from any thread.
      h.release = [r] {
        if (r->reduce) r->reduce->abort();
      };
      hooks.push_back(std::move(h));
    }
    m.steps = std::make_unique<parallel::RankSteps>(std::move(hooks), kWatchPeriod);
  }
  // Load progress: the sum over ranks, reported from whichever thread moved it.
  std::mutex progress_mu;
  std::vector<std::pair<uint64_t, uint64_t>> progress(m.ranks.size());
  const std::string& path = model.path();
  m.run_all([&](Impl::Rank& r) {
    TANDEM_CUDA_CHECK(cudaSetDevice(r.device));
    TANDEM_CUDA_CHECK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
    if (pc.tensor_parallel > 1)
      r.tensor = std::make_unique<parallel::NcclCommunicator>(tensor_ids[static_cast<size_t>(r.stage)],
                                                              static_cast<int>(r.tp_rank),
                                                              static_cast<int>(pc.tensor_parallel), r.device, r.stream);
    if (pc.pipeline_stages > 1)
      r.pipeline = std::make_unique<parallel::NcclCommunicator>(pipeline_ids[static_cast<size_t>(r.tp_rank)],
                                                                static_cast<int>(r.stage),
                                                                static_cast<int>(pc.pipeline_stages), r.device, r.stream);
    const parallel::RankModel shard =
        parallel::make_rank_model(path, model.config(), model.tensors(), m.plan, r.stage, r.tp_rank);
    CudaRunnerOptions o = options.gpu;
    o.device = r.device;
    // The symmetric window only where a tensor group's ranks share this
    // process: it is unverified across processes, and across hosts (no
    // NVLink between them) NCCL's symmetric kernels do not apply.
    o.shared_all_reduce = options.gpu.shared_all_reduce && m.link == nullptr;
    if (options.gpu.on_load_progress) {
      o.on_load_progress = [&, index = static_cast<size_t>(r.global - first_rank)](uint64_t done, uint64_t total) {
        std::lock_guard<std::mutex> lock(progress_mu);
        progress[index] = {done, total};
        uint64_t d = 0, t = 0;
        for (const auto& [pd, pt] : progress) {
          d += pd;
          t += pt;
        }
        options.gpu.on_load_progress(d, t);
      };
    }
    // Decode-sized steps' all-reduces fused with the norms after them, where
    // the group's two GPUs reach each other's memory (a collective, like the
    // communicators' creation). With four, NCCL's all-reduce and the norm
    // kernel were faster (docs/PERFORMANCE.md): the fused kernel reads each
    // peer's part after a flag barrier, and its latency grows with the peers.
    if (pc.tensor_parallel == 2 && pc.pipeline_stages == 1 && m.link == nullptr && options.gpu.fused_all_reduce)
      r.reduce = parallel::NcclTensorReduce::create(*r.tensor, kFusedReduceTokens, m.config.hidden_size,
                                                    [&m, &r] { m.wait_stream(r); }, &r.reduce_error);
    else if (pc.tensor_parallel > 2 && pc.pipeline_stages == 1 && options.gpu.fused_all_reduce)
      r.reduce_error = "it is for two GPUs (slower than NCCL's all-reduce with more)";
    CudaRankLinks links;
    links.reduce = r.reduce.get();
    links.tensor = r.tensor.get();
    links.pipeline = r.pipeline.get();
    links.stream = r.stream;
    links.wait = [&m, &r] { m.wait_stream(r); };
    r.runner = std::make_unique<CudaModelRunner>(shard, o, links);
    r.runner->synchronize();
  });

  // The ranks share one block table per sequence: the cache holds as many
  // blocks as the GPU with the least room.
  int64_t blocks = std::numeric_limits<int64_t>::max();
  for (const auto& r : m.ranks) {
    blocks = std::min(blocks, r->runner->plan().kv_blocks);
    m.weight_bytes += r->runner->weight_bytes_per_step();
  }
  m.max_context = m.ranks.front()->runner->max_context();
  // Across nodes: node 0 hands out block ids that every GPU has room for,
  // and all nodes must agree on the context.
  if (m.link) {
    if (m.node == 0) {
      for (int n = 1; n < nnodes; ++n) {
        const std::vector<uint8_t> msg = m.link->recv(n);
        check(msg.size() == 3 * sizeof(int64_t), "node " + std::to_string(n) + " sent a malformed load report");
        int64_t theirs[3];
        std::memcpy(theirs, msg.data(), sizeof theirs);
        check(theirs[1] == m.max_context, "node " + std::to_string(n) + " plans a context of " +
                                              std::to_string(theirs[1]) + ", node 0 of " +
                                              std::to_string(m.max_context) + " (give every node the same --ctx)");
        blocks = std::min(blocks, theirs[0]);
        m.weight_bytes += static_cast<uint64_t>(theirs[2]);
      }
      // The greeting: from here on the other nodes hold node 0 to
      // --node-silence-s (follow()).
      parallel::StepPlan hello;
      hello.heartbeat = true;
      const std::vector<uint8_t> msg = parallel::encode_step_plan(hello);
      for (int n = 1; n < nnodes; ++n) m.link->send(n, msg);
      m.last_sent = std::chrono::steady_clock::now();
    } else {
      const int64_t mine[3] = {blocks, m.max_context, static_cast<int64_t>(m.weight_bytes)};
      m.link->send(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(mine), sizeof mine));
    }
  }
  m.allocator = BlockAllocator(blocks);
}

ParallelCudaRunner::~ParallelCudaRunner() {
  // One host: every rank releases its all-reduce window at once (a
  // collective), before the ranks are torn down one by one. A runner that
  // broke skips it (its communicators are aborted), and so do several
  // nodes, where a node that is gone would leave the others waiting.
  if (impl_->link == nullptr && impl_->broken().empty()) {
    try {
      impl_->run_all([](Impl::Rank& r) {
        if (r.tensor) r.tensor->release_shared_buffer();
      });
    } catch (...) {
    }
  }
  // The other nodes leave their follow() loops.
  if (impl_->link && impl_->node == 0) {
    parallel::StepPlan stop;
    stop.stop = true;
    const std::vector<uint8_t> msg = parallel::encode_step_plan(stop);
    for (int n = 1; n < impl_->link->nnodes(); ++n) {
      try {
        impl_->link->send(n, msg);
      } catch (const std::exception&) {
      }
    }
  }
}

const ModelConfig& ParallelCudaRunner::config() const { return impl_->config; }
int64_t ParallelCudaRunner::max_context() const { return impl_->max_context; }
std::span<const int32_t> ParallelCudaRunner::row_tokens() const { return impl_->tokens; }
bool ParallelCudaRunner::samples_rows() const { return impl_->link == nullptr; }
BlockAllocator& ParallelCudaRunner::block_allocator() { return impl_->allocator; }
int64_t ParallelCudaRunner::block_size() const { return impl_->ranks.front()->runner->block_size(); }
uint64_t ParallelCudaRunner::weight_bytes_per_step() const { return impl_->weight_bytes; }
const parallel::ParallelPlan& ParallelCudaRunner::plan() const { return impl_->plan; }

std::vector<std::string> ParallelCudaRunner::describe_ranks() const {
  std::vector<std::string> out;
  for (const auto& r : impl_->ranks) {
    std::string line = "rank " + std::to_string(r->global) + " (stage " + std::to_string(r->stage) +
                       ", tensor rank " + std::to_string(r->tp_rank) + ") on GPU " + std::to_string(r->device) +
                       ": " + r->runner->plan().describe();
    if (r->tensor && r->runner->fused_reductions())
      line += "; all-reduces of steps of up to " + std::to_string(kFusedReduceTokens) +
              " tokens fused with the norm after them (NCCL device API)";
    else if (r->tensor && r->runner->residual_in_shared_memory())
      line += r->tensor->shared_window() != nullptr
                  ? "; all-reduces in NCCL's symmetric window"
                  : "; all-reduces in NCCL's registered buffer (" + r->tensor->shared_window_error() + ")";
    else if (r->tensor)
      line += "; all-reduces in ordinary memory (" +
              (r->pipeline                           ? std::string("with pipeline stages")
               : impl_->link != nullptr                ? std::string("several processes")
               : !impl_->options.gpu.shared_all_reduce ? std::string("shared memory turned off")
                                                 : r->tensor->shared_buffer_error()) +
              ")";
    if (r->tensor && !r->runner->fused_reductions() && !r->reduce_error.empty())
      line += "; no fused all-reduce: " + r->reduce_error;
    out.push_back(std::move(line));
  }
  return out;
}

std::vector<std::string> ParallelCudaRunner::describe_rank_timing() const {
  std::vector<std::string> out;
  for (const auto& r : impl_->ranks) {
    const CudaModelRunner::HostTiming& h = r->runner->host_timing();
    // A step's micro-batches are summed: each is one run of the runner.
    const double n = static_cast<double>(std::max<int64_t>(r->timed_steps, 1));
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "rank %lld (GPU %d), host time a step: %.3f ms from the post to its job, then %.3f ms building "
                  "the step, %.3f ms queueing it, %.3f ms after (%lld steps)",
                  static_cast<long long>(r->global), r->device, r->start_lag_ms / n, h.prepare_ms / n,
                  h.enqueue_ms / n, h.finish_ms / n, static_cast<long long>(r->timed_steps));
    out.push_back(buf);
  }
  return out;
}

void ParallelCudaRunner::reset_rank_timing() {
  for (auto& r : impl_->ranks) {
    r->timed_steps = 0;
    r->start_lag_ms = 0;
    r->runner->reset_host_timing();
  }
}

namespace {

// Replies of the node holding the logits: a status byte, then the logits
// (ok) or the error's text.
constexpr uint8_t kReplyOk = 0, kReplyError = 1;

}  // namespace

const std::vector<float>& ParallelCudaRunner::forward(std::span<const SequenceChunk> chunks) {
  Impl& m = *impl_;
  check(m.node == 0, "internal: only node 0 plans steps; other nodes follow()");
  check(m.broken().empty(), "the multi-GPU runner stopped after an error: " + m.broken());
  // What every rank would refuse is refused here, before any rank (or node)
  // starts: a step's ranks then fail only together or not at all.
  check_step(chunks, m.max_context, block_size(), m.config.vocab_size);
  int64_t n_rows = 0;
  for (const SequenceChunk& ch : chunks) n_rows += ch.all_logits ? static_cast<int64_t>(ch.tokens.size()) : 1;
  const std::chrono::milliseconds limit = m.step_limit();
  const auto started = std::chrono::steady_clock::now();
  const parallel::StepWatch watch(m.link, limit);  // run_local's, then the wait for the holder's logits
  if (m.link) {
    parallel::StepPlan plan;
    for (const SequenceChunk& ch : chunks) {
      parallel::StepPlan::Chunk c;
      c.tokens.assign(ch.tokens.begin(), ch.tokens.end());
      c.n_tokens = ch.kv->n_tokens;
      c.block_table = ch.kv->block_table;
      c.all_logits = ch.all_logits;
      c.prompt_len = ch.prompt_len;
      plan.chunks.push_back(std::move(c));
    }
    const std::vector<uint8_t> msg = parallel::encode_step_plan(plan);
    try {
      for (int n = 1; n < m.link->nnodes(); ++n) m.link->send(n, msg);
    } catch (const std::exception& e) {
      // Nodes before the lost one may already run a step this node never
      // will: the plan is out of step for good, and the others hear so.
      m.set_broken(e.what());
      m.link->shut_down();
      throw;
    }
    m.last_sent = std::chrono::steady_clock::now();
  }
  // Node 0 also peeks at the status byte of a reply from the node that
  // holds the logits: one that failed mid-step says so at once, while this
  // node's ranks may still wait on its ranks.
  const std::string holder = "node " + std::to_string(m.holder_node);
  auto holder_failed = [&] {
    if (m.holder_node == 0) return false;
    const std::vector<uint8_t> head = m.link->peek(m.holder_node, 1);
    return !head.empty() && head[0] == kReplyError;
  };
  // Breaks the runner (where run_all did not) and throws.
  auto fail = [&](const std::string& why) {
    if (m.broken().empty()) m.set_broken(why);
    throw Error(why);
  };
  try {
    try {
      m.run_local(chunks, [&]() -> std::string {
        if (holder_failed()) return holder + " failed mid-step";
        return watch.check();
      });
    } catch (const std::exception&) {
      if (!holder_failed()) throw;
      // Its own words rather than this node's giving up.
      const std::optional<std::vector<uint8_t>> reply = m.link->recv_for(m.holder_node, std::chrono::seconds(1));
      if (!reply || reply->empty()) throw;
      const std::string why = holder + ": " + std::string(reply->begin() + 1, reply->end());
      m.set_broken(why);
      throw Error(why);
    }
    if (m.holder_node != 0) {
      // The holder's own watch gives up at its limit, which starts after
      // this node's: its reply, an error then, gets a margin past the limit.
      const auto margin = std::chrono::seconds(10);
      const auto deadline =
          limit.count() > 0 ? started + limit + margin : std::chrono::steady_clock::time_point::max();
      std::optional<std::vector<uint8_t>> got;
      try {
        while (!(got = m.link->recv_for(m.holder_node, kWatchPeriod))) {
          const std::string ended = watch.link_ended();
          if (!ended.empty()) fail(ended);
          if (std::chrono::steady_clock::now() > deadline) {
            fail(holder + " sent no logits within " + parallel::describe_limit(limit + margin) +
                 " of the step's start: it, or a node it waits on, hangs mid-step");
          }
        }
      } catch (const std::exception& e) {
        fail(e.what());
      }
      const std::vector<uint8_t>& reply = *got;
      if (reply.empty()) fail(holder + " sent an empty reply");
      if (reply[0] != kReplyOk) fail(holder + ": " + std::string(reply.begin() + 1, reply.end()));
      const uint64_t want = static_cast<uint64_t>(n_rows * m.config.vocab_size) * sizeof(float);
      if (reply.size() != 1 + want) {
        fail(holder + " sent " + std::to_string(reply.size() - 1) + " bytes of logits, not " + std::to_string(want));
      }
      m.logits.resize(static_cast<size_t>(n_rows * m.config.vocab_size));
      std::memcpy(m.logits.data(), reply.data() + 1, want);
    }
  } catch (...) {
    // The runner is broken. The other nodes hear it at once: their links
    // end, so a node in a step gives it up and one between steps stops.
    if (m.link) m.link->shut_down();
    throw;
  }
  for (const SequenceChunk& ch : chunks) ch.kv->n_tokens += static_cast<int64_t>(ch.tokens.size());
  return m.logits;
}

void ParallelCudaRunner::idle() {
  Impl& m = *impl_;
  const std::chrono::seconds silence = m.link ? m.link->config().node0_silence : std::chrono::seconds(0);
  if (m.node != 0 || silence.count() == 0 || !m.broken().empty()) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - m.last_sent < silence / 4) return;
  parallel::StepPlan beat;
  beat.heartbeat = true;
  const std::vector<uint8_t> msg = parallel::encode_step_plan(beat);
  for (int n = 1; n < m.link->nnodes(); ++n) m.link->send(n, msg);
  m.last_sent = now;
}

void ParallelCudaRunner::follow() {
  Impl& m = *impl_;
  check(m.link != nullptr && m.node != 0, "internal: follow() runs on nodes other than 0");
  const bool holder = m.holder_node == m.node;
  const std::chrono::seconds silence = m.link->config().node0_silence;
  // The silence limit counts from node 0's first message (its greeting at
  // the end of its start-up), not from this node's: node 0 may load for
  // longer.
  bool heard = false;
  for (;;) {
    std::optional<std::vector<uint8_t>> msg;
    if (silence.count() > 0 && heard) {
      msg = m.link->recv_for(0, silence);
    } else {
      msg = m.link->recv(0);
    }
    if (!msg) {
      const std::string why = "node 0 sent nothing for " + std::to_string(silence.count()) +
                              " s, not even its idle heartbeat: its process hangs or was stopped while its host "
                              "still answers (--node-silence-s sets the limit); node " +
                              std::to_string(m.node) + " stops";
      m.set_broken(why);
      throw Error(why);
    }
    heard = true;
    const parallel::StepPlan plan = parallel::decode_step_plan(*msg);
    if (plan.stop) return;
    if (plan.heartbeat) continue;
    std::vector<SequenceKv> kvs(plan.chunks.size());
    std::vector<SequenceChunk> chunks;
    for (size_t i = 0; i < plan.chunks.size(); ++i) {
      const parallel::StepPlan::Chunk& c = plan.chunks[i];
      kvs[i].block_table = c.block_table;
      kvs[i].n_tokens = c.n_tokens;
      SequenceChunk ch{c.tokens, &kvs[i], c.all_logits};
      ch.prompt_len = c.prompt_len;
      chunks.push_back(ch);
    }
    std::vector<uint8_t> reply;
    try {
      const parallel::StepWatch watch(m.link, m.step_limit());
      m.run_local(chunks, [&watch] { return watch.check(); });
      if (holder) {
        reply.resize(1 + m.logits.size() * sizeof(float));
        reply[0] = kReplyOk;
        std::memcpy(reply.data() + 1, m.logits.data(), m.logits.size() * sizeof(float));
      }
    } catch (const std::exception& e) {
      // Node 0 checked the step before sending it, so this is a failure
      // mid-step: tell node 0 if it waits for this node's logits, and stop
      // (this node's communicators are aborted; node 0's ranks learn of it
      // only as far as NCCL reports it).
      if (holder) {
        const std::string text = e.what();
        reply.assign(1, kReplyError);
        reply.insert(reply.end(), text.begin(), text.end());
        try {
          m.link->send(0, reply);
        } catch (const std::exception&) {  // node 0 is gone: the step's error says more
        }
      }
      throw;
    }
    if (holder) m.link->send(0, reply);
  }
}

}  // namespace tandem
