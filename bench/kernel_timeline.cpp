// A kernel timeline of any CUDA program, through CUPTI's activity API: the
// start and end of every kernel on the GPU, as run, including the kernels
// of CUDA graphs and kernels that overlap their predecessor (programmatic
// dependent launch). It stands in for a system profiler where none can
// import its traces.
//
// Use: the CUDA driver loads it as an injection library,
//   export TANDEM_TIMELINE_OUT=kernels.csv
//   CUDA_INJECTION64_PATH=build/bench/libtandem_kernel_timeline.so tandem-server perf ...
// and at exit it writes one line a kernel, in the order CUPTI delivers them:
//   start_ns,end_ns,device,stream,graph_id,grid,block,registers,name
// (name demangled, commas replaced). tools/device/timeline.py sums the
// lines into a step's kernels and what each one adds to the step's span.
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr size_t kBufferBytes = 8u << 20;
constexpr size_t kAlign = 8;

// What the buffer callbacks collect; CUPTI calls them from its own thread.
struct Timeline {
  std::mutex mutex;
  std::vector<std::string> lines;
  std::string path;
  size_t dropped = 0;  // records CUPTI had no room for
};

Timeline& timeline() {
  static Timeline* t = new Timeline;  // never destroyed: CUPTI may call back during exit
  return *t;
}

std::string demangled(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && d != nullptr ? d : name;
  std::free(d);
  for (char& c : out)
    if (c == ',' || c == '\n') c = ';';
  return out;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(kAlign, kBufferBytes));
  *size = *buffer != nullptr ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream_id, uint8_t* buffer, size_t, size_t valid_bytes) {
  Timeline& t = timeline();
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(context, stream_id, &dropped);
  CUpti_Activity* record = nullptr;
  std::vector<std::string> lines;
  while (cuptiActivityGetNextRecord(buffer, valid_bytes, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    char head[256];
    std::snprintf(head, sizeof head, "%llu,%llu,%u,%u,%u,%dx%dx%d,%d,%u,", static_cast<unsigned long long>(k->start),
                  static_cast<unsigned long long>(k->end), k->deviceId, k->streamId, k->graphId, k->gridX, k->gridY, k->gridZ,
                  k->blockX * k->blockY * k->blockZ, static_cast<unsigned>(k->registersPerThread));
    lines.push_back(head + demangled(k->name));
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(t.mutex);
  t.lines.insert(t.lines.end(), lines.begin(), lines.end());
  t.dropped += dropped;
}

// At exit, after a forced flush; kernels that end later (none, for a
// program that waits for its GPU work before it returns) are not written.
void write_timeline() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  Timeline& t = timeline();
  std::lock_guard<std::mutex> lock(t.mutex);
  FILE* f = std::fopen(t.path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "kernel_timeline: cannot write %s\n", t.path.c_str());
    return;
  }
  std::fprintf(f, "start_ns,end_ns,device,stream,graph_id,grid,block,registers,name\n");
  for (const std::string& line : t.lines) std::fprintf(f, "%s\n", line.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_timeline: %zu kernels written to %s\n", t.lines.size(), t.path.c_str());
  if (t.dropped > 0) std::fprintf(stderr, "kernel_timeline: CUPTI dropped %zu records (not written)\n", t.dropped);
}

bool ok(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return true;
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  std::fprintf(stderr, "kernel_timeline: %s failed: %s\n", what, text != nullptr ? text : "?");
  return false;
}

}  // namespace

// Called by the CUDA driver when CUDA_INJECTION64_PATH names this library.
extern "C" int InitializeInjection() {
  const char* out = std::getenv("TANDEM_TIMELINE_OUT");
  timeline().path = out != nullptr && *out != '\0' ? out : "kernel_timeline.csv";
  if (!ok(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks"))
    return 0;
  // Concurrent-kernel records keep the kernels' real overlap.
  if (!ok(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable")) return 0;
  std::atexit(write_timeline);
  return 1;
}
