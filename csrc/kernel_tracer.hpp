// GPU kernel tracing: the records of kernels, memory copies and memsets that ran on the device,
// and optionally of the host's CUDA runtime/driver API calls, with start/end on fastprof's clock
// (CLOCK_MONOTONIC ns). KernelTraceBackend is the interface;
// CuptiKernelTracer fills it with NVIDIA's CUPTI activity API, opened with dlopen. A ROCm backend
// (rocprofiler-sdk) would be another subclass.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace fastprof {

// Api: a CUDA runtime or driver API call on a host thread (TraceRecord::domain says which).
enum class TraceKind : uint8_t { Kernel = 0, Memcpy = 1, Memset = 2, Api = 3 };

struct TraceRecord {
  int64_t start_ns;
  int64_t end_ns;
  uint64_t bytes;         // memcpy / memset size; 0 for kernels
  uint32_t name_id;       // index into the trace's name table
  uint32_t device;
  uint32_t stream;
  uint32_t correlation;
  uint32_t graph_id;      // 0 when not launched from a CUDA graph
  uint32_t thread;        // API records: CUPTI's threadId of the calling host thread; 0 otherwise
  uint32_t cbid;          // API records: CUPTI callback id of the function; 0 otherwise
  uint8_t kind;           // TraceKind
  uint8_t copy_kind;      // CUPTI memcpy kind (HtoD 1, DtoH 2, DtoD 8, ...); 0 otherwise
  uint8_t domain;         // API records: 1 driver API, 2 runtime API (CUpti_CallbackDomain); 0 otherwise
};
static_assert(sizeof(TraceRecord) == 56, "TraceRecord grew: keep the record array small");

// What a backend hands back: the records so far (moved out), the interned names, and counts.
struct TraceData {
  std::vector<TraceRecord> records;
  std::vector<std::string> names;
  uint64_t dropped_backend = 0;  // records the tracing library reports it dropped
  uint64_t dropped_pool = 0;     // buffer requests refused because the preallocated pool was empty
  uint64_t dropped_capacity = 0; // records parsed but not stored: the record array was full
};

class KernelTraceBackend {
 public:
  virtual ~KernelTraceBackend() = default;
  virtual std::string backend_name() const = 0;
  virtual std::string library_path() const = 0;
  // "callback" (the library stamps records with fastprof's clock) or "offset" (converted with a
  // measured offset between the library's clock and CLOCK_MONOTONIC).
  virtual std::string timestamp_method() const = 0;
  virtual int64_t clock_offset_ns() const = 0;  // 0 with "callback"
  // Which CUDA API calls are recorded: "off", "selected" (launches, copies, memsets and
  // synchronising calls, switched on function by function) or "all" (every runtime and driver call).
  virtual std::string api_mode() const { return "off"; }
  virtual void start() = 0;                     // begin recording; StateError when running
  virtual void stop() = 0;                      // stop recording and flush what is buffered
  virtual void flush() = 0;                     // deliver buffered records now
  virtual bool running() const = 0;
  virtual TraceData take() = 0;                 // the records so far; clears them
};

// Raised (as a C++ exception) when tracing cannot be had: no library, another subscriber, ...
// The Python layer turns it into "unavailable, because ...".
class TraceUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CuptiOptions {
  std::vector<std::string> candidates;  // library paths to try, in order (FASTPROF_CUPTI_LIBRARY first)
  size_t buffer_bytes = 4u << 20;       // one activity buffer
  size_t buffer_count = 16;             // buffers in the pool
  size_t max_records = 1u << 20;        // records kept until take()
  bool use_timestamp_callback = true;   // false: always use the measured offset
  // Also record CUDA runtime and driver API calls (CUPTI_ACTIVITY_KIND_RUNTIME / DRIVER). Costs the
  // host extra time in every API call while tracing: for traces outside timed iterations.
  bool api_records = false;
  // With api_records: every runtime and driver call instead of the chosen functions (launches,
  // copies, memsets, synchronising calls), which CUPTI records one by one where it can.
  bool all_api = false;
};

// Only one can be live at a time (CUPTI's callbacks carry no user pointer).
std::unique_ptr<KernelTraceBackend> make_cupti_tracer(const CuptiOptions& options);

// Itanium C++ ABI demangling (abi::__cxa_demangle); the input unchanged when it is not a mangled name.
std::string demangle(const std::string& name);

}  // namespace fastprof
