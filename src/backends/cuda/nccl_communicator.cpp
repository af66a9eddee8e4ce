// parallel::Communicator over NCCL; compiled only in CUDA builds that found
// NCCL (library tandem_nccl).
#include "backends/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <system_error>
#include <thread>

#include "common/error.h"

namespace tandem::parallel {
namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclUniqueId::bytes), "NCCL unique id size changed");

// How long abort() waits for ncclCommAbort before leaving it to finish (or
// not) on its own thread.
constexpr std::chrono::seconds kAbortWait{10};

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string(what) + ": CUDA error: " + cudaGetErrorString(e));
}

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw Error(std::string(what) + ": NCCL error: " + ncclGetErrorString(r));
}

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int rank = 0;
  int world_size = 1;
  int device = 0;
  bool owns_stream = true;
  std::atomic<bool> aborted{false};  // the comm was torn down by abort()
  // abort() gave up waiting for ncclCommAbort, which may still hold the
  // communicator's resources: the destructor then leaves the symmetric
  // window and agree()'s flag unfreed (ncclMemFree and cudaFree could wait
  // for the same peers, or for NCCL's kernels).
  bool abort_unfinished = false;
  // agree()'s one int, made with the communicator: freeing GPU memory waits
  // for the GPU (and may wait for its peers), which must not happen while a
  // peer's next collective, already queued, waits for this rank.
  int* agree_flag = nullptr;
  // shared_buffer(): the memory, its size and window; `shared_error` is set
  // once registration failed, and then no more is tried.
  void* shared = nullptr;
  size_t shared_bytes = 0;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0)
  ncclWindow_t window = nullptr;
#else
  void* window = nullptr;
#endif
  // Whether `window` is a symmetric window (device memory), not the handle
  // of a registration for NCCL's own collectives only.
  bool window_symmetric = false;
  std::string shared_error;
};

NcclUniqueId make_nccl_unique_id() {
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  NcclUniqueId out;
  std::memcpy(out.bytes.data(), &id, sizeof id);
  return out;
}

NcclCommunicator::NcclCommunicator(const NcclUniqueId& id, int rank, int world_size, int device, void* stream)
    : state_(std::make_unique<State>()) {
  check(world_size >= 1 && rank >= 0 && rank < world_size,
        "NCCL rank " + std::to_string(rank) + " outside a world of " + std::to_string(world_size));
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  state_->rank = rank;
  state_->world_size = world_size;
  state_->device = device;
  check_cuda(cudaSetDevice(device), ("cudaSetDevice(" + std::to_string(device) + ")").c_str());
  if (stream != nullptr) {
    state_->stream = static_cast<cudaStream_t>(stream);
    state_->owns_stream = false;
  } else {
    check_cuda(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ncclUniqueId nid;
  std::memcpy(&nid, id.bytes.data(), sizeof nid);
  const cudaError_t flag = cudaMalloc(&state_->agree_flag, sizeof(int));
  if (flag != cudaSuccess) {
    if (state_->owns_stream) cudaStreamDestroy(state_->stream);
    check_cuda(flag, "cudaMalloc");
  }
  const ncclResult_t r = ncclCommInitRank(&state_->comm, world_size, nid, rank);
  if (r != ncclSuccess) {
    cudaFree(state_->agree_flag);
    if (state_->owns_stream) cudaStreamDestroy(state_->stream);
    check_nccl(r, ("ncclCommInitRank (rank " + std::to_string(rank) + " of " + std::to_string(world_size) +
                   ", device " + std::to_string(device) + ")")
                      .c_str());
  }
}

NcclCommunicator::~NcclCommunicator() {
  // No throwing here: a failure to tear down is reported by nothing.
  // Destroying (or aborting) the communicator releases its window, which is
  // not deregistered here: deregistration is collective, and the ranks of a
  // host are torn down one after another.
  if (state_->comm != nullptr && !state_->aborted.load()) ncclCommDestroy(state_->comm);
  if (!state_->abort_unfinished) {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0)
    if (state_->shared != nullptr) ncclMemFree(state_->shared);
#endif
    if (state_->agree_flag != nullptr) cudaFree(state_->agree_flag);
  }
  if (state_->stream != nullptr && state_->owns_stream) cudaStreamDestroy(state_->stream);
}

int NcclCommunicator::rank() const { return state_->rank; }
int NcclCommunicator::world_size() const { return state_->world_size; }
int NcclCommunicator::device() const { return state_->device; }
void* NcclCommunicator::stream() const { return state_->stream; }

void NcclCommunicator::all_reduce_sum(float* data, int64_t n) {
  check_nccl(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat32, ncclSum, state_->comm, state_->stream),
             "ncclAllReduce");
}

void NcclCommunicator::all_gather(const float* in, int64_t n, float* out) {
  check_nccl(ncclAllGather(in, out, static_cast<size_t>(n), ncclFloat32, state_->comm, state_->stream),
             "ncclAllGather");
}

void NcclCommunicator::send(const float* data, int64_t n, int peer) {
  check_nccl(ncclSend(data, static_cast<size_t>(n), ncclFloat32, peer, state_->comm, state_->stream), "ncclSend");
}

void NcclCommunicator::recv(float* data, int64_t n, int peer) {
  check_nccl(ncclRecv(data, static_cast<size_t>(n), ncclFloat32, peer, state_->comm, state_->stream), "ncclRecv");
}

bool NcclCommunicator::abort() {
  ncclComm_t comm = state_->aborted.exchange(true) ? nullptr : state_->comm;
  if (comm == nullptr) return !state_->abort_unfinished;
  // ncclCommAbort raises NCCL's abort flag first (kernels that wait on a
  // peer end), then frees the communicator's resources, which on one host
  // waits for the peers' processes: with a peer process that died it may
  // never return (seen on two H200s, one process per GPU, the peer killed
  // mid-step). So it runs on a thread of its own, waited for a while; past
  // that the caller goes on and the communicator is left to that thread.
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> finished = done->get_future();
  try {
    std::thread([comm, done] {
      ncclCommAbort(comm);
      done->set_value();
    }).detach();
  } catch (const std::system_error&) {  // no thread to be had: abort here, however long it takes
    ncclCommAbort(comm);
    return true;
  }
  if (finished.wait_for(kAbortWait) == std::future_status::ready) return true;
  state_->abort_unfinished = true;
  return false;
}

std::string NcclCommunicator::async_error() const {
  if (state_->aborted.load() || state_->comm == nullptr) return "";
  ncclResult_t r = ncclSuccess;
  if (ncclCommGetAsyncError(state_->comm, &r) != ncclSuccess) return "ncclCommGetAsyncError failed";
  return r == ncclSuccess || r == ncclInProgress ? "" : ncclGetErrorString(r);
}

// Whether every rank of the clique says yes: a min-reduction of one int on
// ordinary device memory, waited for. Collective.
bool NcclCommunicator::agree(bool yes, const std::function<void()>& wait) {
  State& s = *state_;
  int* flag = s.agree_flag;
  const int mine = yes ? 1 : 0;
  int all = 0;
  cudaError_t e = cudaMemcpyAsync(flag, &mine, sizeof(int), cudaMemcpyHostToDevice, s.stream);
  const ncclResult_t r = e == cudaSuccess ? ncclAllReduce(flag, flag, 1, ncclInt32, ncclMin, s.comm, s.stream)
                                          : ncclSuccess;
  if (e == cudaSuccess && r == ncclSuccess) {
    // Wait for the reduction first (a copy into pageable memory would block
    // on it where the caller's wait can give up), then read the result.
    if (wait) {
      wait();
    } else {
      e = cudaStreamSynchronize(s.stream);
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(&all, flag, sizeof(int), cudaMemcpyDeviceToHost, s.stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s.stream);
  }
  check_cuda(e, "agreeing with the other ranks");
  check_nccl(r, "agreeing with the other ranks");
  return all == 1;
}

float* NcclCommunicator::shared_buffer(size_t bytes, const std::function<void()>& wait) {
  State& s = *state_;
  if (s.shared != nullptr) {
    if (bytes <= s.shared_bytes) return static_cast<float*>(s.shared);
    s.shared_error = "the shared buffer holds " + std::to_string(s.shared_bytes) + " bytes, " +
                     std::to_string(bytes) + " asked";
    return nullptr;
  }
  if (!s.shared_error.empty()) return nullptr;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0)
  int version = 0;
  check_nccl(ncclGetVersion(&version), "ncclGetVersion");
  // Every rank allocates, then all agree before the collective registration:
  // a rank that could not allocate must not leave the others waiting in it.
  void* p = nullptr;
  const ncclResult_t alloc = version >= NCCL_VERSION(2, 27, 0) ? ncclMemAlloc(&p, bytes) : ncclInvalidUsage;
  if (!agree(alloc == ncclSuccess, wait)) {
    if (alloc == ncclSuccess) ncclMemFree(p);
    s.shared_error = version < NCCL_VERSION(2, 27, 0)
                         ? "NCCL " + std::to_string(version) + " has no symmetric windows (2.27 and later)"
                     : alloc != ncclSuccess ? std::string("ncclMemAlloc: ") + ncclGetErrorString(alloc)
                                            : std::string("another rank could not allocate its shared buffer");
    return nullptr;
  }
  const ncclResult_t r = ncclCommWindowRegister(s.comm, p, bytes, &s.window, NCCL_WIN_COLL_SYMMETRIC);
  if (r != ncclSuccess) {
    // Registration is collective: a refusal comes from what all ranks share
    // (the library, the kind of memory), so every rank refuses alike.
    ncclMemFree(p);
    s.window = nullptr;
    s.shared_error = std::string("ncclCommWindowRegister: ") + ncclGetErrorString(r);
    return nullptr;
  }
  // Without symmetric memory (NCCL_WIN_ENABLE=0, NCCL_CUMEM_ENABLE=0, GPUs
  // without peer access, ranks on several hosts) NCCL registers the buffer
  // for its own collectives only and returns that registration's host-side
  // handle, or none, as the window; reading it as a window from a kernel
  // faulted (an illegal memory access on two H200s, NCCL_WIN_ENABLE=0). The
  // buffer still serves NCCL's all-reduce. A window lives in device memory.
  // Symmetric support is the communicator's, so every rank finds alike.
  cudaPointerAttributes attributes{};
  s.window_symmetric = s.window != nullptr && cudaPointerGetAttributes(&attributes, s.window) == cudaSuccess &&
                       attributes.type == cudaMemoryTypeDevice;
  cudaGetLastError();  // cudaPointerGetAttributes' error, if any, is not sticky
  s.shared = p;
  s.shared_bytes = bytes;
  return static_cast<float*>(p);
#else
  s.shared_error = "built against NCCL " + std::to_string(NCCL_VERSION_CODE) +
                   ", which has no symmetric windows (2.27 and later)";
  return nullptr;
#endif
}

std::string NcclCommunicator::shared_buffer_error() const { return state_->shared_error; }

void* NcclCommunicator::shared_window() const {
  return state_->shared != nullptr && state_->window_symmetric ? state_->window : nullptr;
}

std::string NcclCommunicator::shared_window_error() const {
  const State& s = *state_;
  if (s.shared == nullptr) return s.shared_error.empty() ? "no shared buffer" : s.shared_error;
  if (!s.window_symmetric)
    return "NCCL registered the shared buffer without a symmetric window (off with NCCL_WIN_ENABLE=0 or "
           "NCCL_CUMEM_ENABLE=0, between GPUs without peer access, or across hosts)";
  return {};
}

void NcclCommunicator::release_shared_buffer() {
  State& s = *state_;
  if (s.shared == nullptr || s.aborted.load()) return;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0)
  check_cuda(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
  check_nccl(ncclCommWindowDeregister(s.comm, s.window), "ncclCommWindowDeregister");
  check_nccl(ncclMemFree(s.shared), "ncclMemFree");
#endif
  s.shared = nullptr;
  s.shared_bytes = 0;
  s.window = nullptr;
  s.window_symmetric = false;
  s.shared_error.clear();
}

void NcclCommunicator::synchronize() { check_cuda(cudaStreamSynchronize(state_->stream), "cudaStreamSynchronize"); }

}  // namespace tandem::parallel
