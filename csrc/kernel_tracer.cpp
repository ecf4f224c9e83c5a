// CUPTI activity tracer (kernel_tracer.hpp). CUPTI is opened with dlopen; the few types, constants
// and record layouts used are declared here from the public CUPTI headers. The record fields read
// (kind .. graphId) sit at the same offsets in CUpti_ActivityKernel9 (CUDA 12) and
// CUpti_ActivityKernel10 (CUDA 13), CUpti_ActivityMemcpy5/6 and CUpti_ActivityMemset4.
// API records (CUPTI_ACTIVITY_KIND_DRIVER / RUNTIME) are CUpti_ActivityAPI, unchanged since
// CUDA 4 (cupti_activity.h, e.g. iree-org/iree third_party/cuda/include/cupti_activity.h): kind
// (int32 @0), cbid (uint32 @4), start (uint64 @8), end (uint64 @16), processId (uint32 @24),
// threadId (uint32 @28), correlationId (uint32 @32), returnValue (uint32 @36); 40 bytes.
#include "kernel_tracer.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <cstring>

#include "clock.hpp"
#include "dynlib.hpp"
#include "errors.hpp"

namespace fastprof {
namespace {

// ---- CUPTI declarations (cupti_result.h, cupti_activity.h, cupti_callbacks.h) ----
using CUptiResult = int;
constexpr CUptiResult CUPTI_SUCCESS = 0;
constexpr CUptiResult CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED = 39;
constexpr CUptiResult CUPTI_ERROR_INSUFFICIENT_PRIVILEGES = 35;
constexpr int CUPTI_ACTIVITY_KIND_MEMCPY = 1;
constexpr int CUPTI_ACTIVITY_KIND_MEMSET = 2;
constexpr int CUPTI_ACTIVITY_KIND_KERNEL = 3;
constexpr int CUPTI_ACTIVITY_KIND_DRIVER = 4;
constexpr int CUPTI_ACTIVITY_KIND_RUNTIME = 5;
constexpr int CUPTI_CB_DOMAIN_DRIVER_API = 1;
constexpr int CUPTI_CB_DOMAIN_RUNTIME_API = 2;
constexpr int CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL = 10;
constexpr uint32_t CUPTI_ACTIVITY_FLAG_FLUSH_FORCED = 1;

// Byte offsets inside a record (see the file comment).
constexpr size_t kKernStart = 16, kKernEnd = 24, kKernDevice = 40, kKernStream = 48, kKernCorr = 92,
                 kKernName = 104, kKernGraph = 156;
constexpr size_t kCopyKind = 4, kCopyBytes = 8, kCopyStart = 16, kCopyEnd = 24, kCopyDevice = 32,
                 kCopyStream = 40, kCopyCorr = 44, kCopyGraph = 72;  // memset: same except copyKind
constexpr size_t kApiCbid = 4, kApiStart = 8, kApiEnd = 16, kApiThread = 28, kApiCorr = 32;

using RequestFn = void (*)(uint8_t** buffer, size_t* size, size_t* max_records);
using CompleteFn = void (*)(void* ctx, uint32_t stream, uint8_t* buffer, size_t size, size_t valid);
using TimestampFn = uint64_t (*)();
using CallbackFn = void (*)(void* userdata, int domain, uint32_t cbid, const void* cbdata);

using RegisterCallbacksFn = CUptiResult (*)(RequestFn, CompleteFn);
using EnableFn = CUptiResult (*)(int kind);
using FlushAllFn = CUptiResult (*)(uint32_t flag);
using GetNextRecordFn = CUptiResult (*)(uint8_t* buffer, size_t valid, void** record);
using GetDroppedFn = CUptiResult (*)(void* ctx, uint32_t stream, size_t* dropped);
using RegisterTimestampFn = CUptiResult (*)(TimestampFn);
using GetTimestampFn = CUptiResult (*)(uint64_t*);
using SubscribeFn = CUptiResult (*)(void** subscriber, CallbackFn, void* userdata);
using UnsubscribeFn = CUptiResult (*)(void* subscriber);
using ResultStringFn = CUptiResult (*)(CUptiResult, const char**);
using CallbackNameFn = CUptiResult (*)(int domain, uint32_t cbid, const char** name);
using EnableApiFn = CUptiResult (*)(uint32_t cbid, uint8_t enable);

// Callback ids probed for names when choosing the API functions to record (CUDA 13 has about 500
// runtime and 800 driver functions; unknown ids just fail the name lookup).
constexpr uint32_t kMaxCbid = 2048;

// The API functions whose records the host breakdown needs: launches (kernels, cooperative
// kernels, graphs), copies, memsets and the calls that wait for the GPU. Everything else (the
// thousands of cudaGetDevice / cudaStreamIsCapturing / cuCtxGetCurrent calls a framework makes
// per step) is left unrecorded: each record costs the calling thread far more than such a call.
bool wanted_api(const char* name) {
  return std::strstr(name, "Launch") || std::strstr(name, "Memcpy") || std::strstr(name, "Memset") ||
         std::strstr(name, "Synchronize");
}

template <typename T>
T field(const uint8_t* rec, size_t offset) {
  T v;
  std::memcpy(&v, rec + offset, sizeof(T));
  return v;
}

uint64_t monotonic_timestamp() { return static_cast<uint64_t>(monotonic_ns()); }
void ignore_callback(void*, int, uint32_t, const void*) {}

class CuptiKernelTracer;
std::atomic<CuptiKernelTracer*> g_active{nullptr};  // the tracer CUPTI's buffer callbacks feed

class CuptiKernelTracer final : public KernelTraceBackend {
 public:
  explicit CuptiKernelTracer(const CuptiOptions& opt)
      : opt_(opt), lib_("CUPTI library", "FASTPROF_CUPTI_LIBRARY", opt.candidates) {
    register_callbacks_ = lib_.fn<RegisterCallbacksFn>({"cuptiActivityRegisterCallbacks"});
    enable_ = lib_.fn<EnableFn>({"cuptiActivityEnable"});
    disable_ = lib_.fn<EnableFn>({"cuptiActivityDisable"});
    flush_all_ = lib_.fn<FlushAllFn>({"cuptiActivityFlushAll"});
    next_record_ = lib_.fn<GetNextRecordFn>({"cuptiActivityGetNextRecord"});
    get_dropped_ = lib_.fn<GetDroppedFn>({"cuptiActivityGetNumDroppedRecords"});
    get_timestamp_ = lib_.fn<GetTimestampFn>({"cuptiGetTimestamp"});
    subscribe_ = lib_.fn<SubscribeFn>({"cuptiSubscribe"});
    unsubscribe_ = lib_.fn<UnsubscribeFn>({"cuptiUnsubscribe"});
    register_timestamp_ = lib_.fn<RegisterTimestampFn>({"cuptiActivityRegisterTimestampCallback"}, false);
    result_string_ = lib_.fn<ResultStringFn>({"cuptiGetResultString"}, false);
    callback_name_ = lib_.fn<CallbackNameFn>({"cuptiGetCallbackName"}, false);
    enable_runtime_api_ = lib_.fn<EnableApiFn>({"cuptiActivityEnableRuntimeApi"}, false);
    enable_driver_api_ = lib_.fn<EnableApiFn>({"cuptiActivityEnableDriverApi"}, false);
    if (opt_.buffer_bytes < 1024 || opt_.buffer_count == 0)
      throw std::invalid_argument("the CUPTI buffer pool needs at least one buffer of at least 1 KiB");
    storage_.resize(opt_.buffer_bytes * opt_.buffer_count + 8);
    uint8_t* base = storage_.data();
    base += (8 - reinterpret_cast<uintptr_t>(base) % 8) % 8;  // CUPTI wants 8-byte aligned buffers
    for (size_t i = 0; i < opt_.buffer_count; ++i) free_.push_back(base + i * opt_.buffer_bytes);
    records_.reserve(opt_.max_records);
  }

  ~CuptiKernelTracer() override {
    try {
      if (running_) stop();
    } catch (...) {
    }
    CuptiKernelTracer* self = this;
    g_active.compare_exchange_strong(self, nullptr);
  }

  std::string backend_name() const override { return "cupti"; }
  std::string library_path() const override { return lib_.path(); }
  std::string timestamp_method() const override { return method_; }
  std::string api_mode() const override { return api_mode_; }
  int64_t clock_offset_ns() const override { return offset_ns_; }
  bool running() const override { return running_; }

  void start() override {
    if (running_) throw StateError("the kernel tracer is already running");
    CuptiKernelTracer* expected = nullptr;
    if (!g_active.compare_exchange_strong(expected, this) && expected != this)
      throw StateError("another fastprof kernel tracer is running in this process; stop it first");
    try {
      CUptiResult r = subscribe_(&subscriber_, &ignore_callback, nullptr);
      if (r == CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED)
        throw TraceUnavailable(
            "another CUPTI subscriber holds this process (torch.profiler, Nsight Systems or another tool); "
            "only one can exist: stop it to get a kernel trace");
      check(r, "cuptiSubscribe");
      subscribed_ = true;
      check(register_callbacks_(&on_request, &on_complete), "cuptiActivityRegisterCallbacks");
      choose_clock();
      std::vector<int> kinds = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                CUPTI_ACTIVITY_KIND_MEMSET};
      api_mode_ = "off";
      if (opt_.api_records) {
        // Per function where CUPTI allows it (cuptiActivityEnableRuntimeApi/DriverApi record the
        // chosen functions without enabling the whole kind); else every call of both kinds.
        kinds.push_back(CUPTI_ACTIVITY_KIND_DRIVER);
        kinds.push_back(CUPTI_ACTIVITY_KIND_RUNTIME);
        api_mode_ = "all";
      }
      for (int kind : kinds) {
        CUptiResult e = enable_(kind);
        if (e != CUPTI_SUCCESS) {
          if (e == CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED)
            throw TraceUnavailable("another profiler holds CUPTI's activity API (torch.profiler, Nsight Systems, ...): "
                                   "cuptiActivityEnable failed; stop it to get a kernel trace");
          check(e, "cuptiActivityEnable");
        }
        enabled_.push_back(kind);
      }
      if (opt_.api_records && !opt_.all_api && select_apis()) api_mode_ = "selected";
      running_ = true;
    } catch (...) {
      release();
      throw;
    }
  }

  void stop() override {
    if (!running_) return;
    running_ = false;
    for (int kind : enabled_) disable_(kind);
    enabled_.clear();
    flush_all_(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    release();
  }

  void flush() override {
    if (!running_ && g_active.load() != this) return;
    flush_all_(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  }

  TraceData take() override {
    std::lock_guard<std::mutex> lock(data_mutex_);
    TraceData out;
    out.records.swap(records_);
    records_.reserve(opt_.max_records);
    out.names = names_;
    out.dropped_backend = dropped_backend_;
    out.dropped_pool = dropped_pool_.exchange(0);
    out.dropped_capacity = dropped_capacity_;
    dropped_backend_ = dropped_capacity_ = 0;
    return out;
  }

 private:
  static void on_request(uint8_t** buffer, size_t* size, size_t* max_records) {
    *buffer = nullptr;
    *size = 0;
    *max_records = 0;
    CuptiKernelTracer* t = g_active.load();
    if (!t) return;
    std::lock_guard<std::mutex> lock(t->pool_mutex_);
    if (t->free_.empty()) {
      ++t->dropped_pool_;  // CUPTI drops what it cannot place and counts it too
      return;
    }
    *buffer = t->free_.back();
    t->free_.pop_back();
    *size = t->opt_.buffer_bytes;
  }

  static void on_complete(void* ctx, uint32_t stream, uint8_t* buffer, size_t, size_t valid) {
    CuptiKernelTracer* t = g_active.load();
    if (!t) return;
    if (buffer) t->parse(buffer, valid);
    size_t dropped = 0;
    if (t->get_dropped_(ctx, stream, &dropped) == CUPTI_SUCCESS && dropped) {
      std::lock_guard<std::mutex> lock(t->data_mutex_);
      t->dropped_backend_ += dropped;
    }
    if (!buffer) return;
    std::lock_guard<std::mutex> lock(t->pool_mutex_);
    t->free_.push_back(buffer);
  }

  void parse(uint8_t* buffer, size_t valid) {
    std::lock_guard<std::mutex> lock(data_mutex_);
    void* raw = nullptr;
    while (valid && next_record_(buffer, valid, &raw) == CUPTI_SUCCESS && raw) {
      const auto* rec = static_cast<const uint8_t*>(raw);
      const int kind = field<int32_t>(rec, 0);
      TraceRecord r{};
      if (kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || kind == CUPTI_ACTIVITY_KIND_KERNEL) {
        r.kind = static_cast<uint8_t>(TraceKind::Kernel);
        r.start_ns = static_cast<int64_t>(field<uint64_t>(rec, kKernStart)) + offset_ns_;
        r.end_ns = static_cast<int64_t>(field<uint64_t>(rec, kKernEnd)) + offset_ns_;
        r.device = field<uint32_t>(rec, kKernDevice);
        r.stream = field<uint32_t>(rec, kKernStream);
        r.correlation = field<uint32_t>(rec, kKernCorr);
        r.graph_id = field<uint32_t>(rec, kKernGraph);
        const char* name = field<const char*>(rec, kKernName);
        r.name_id = intern(name ? name : "<unnamed kernel>");
      } else if (kind == CUPTI_ACTIVITY_KIND_MEMCPY || kind == CUPTI_ACTIVITY_KIND_MEMSET) {
        const bool copy = kind == CUPTI_ACTIVITY_KIND_MEMCPY;
        r.kind = static_cast<uint8_t>(copy ? TraceKind::Memcpy : TraceKind::Memset);
        r.copy_kind = copy ? field<uint8_t>(rec, kCopyKind) : 0;
        r.bytes = field<uint64_t>(rec, kCopyBytes);
        r.start_ns = static_cast<int64_t>(field<uint64_t>(rec, kCopyStart)) + offset_ns_;
        r.end_ns = static_cast<int64_t>(field<uint64_t>(rec, kCopyEnd)) + offset_ns_;
        r.device = field<uint32_t>(rec, kCopyDevice);
        r.stream = field<uint32_t>(rec, kCopyStream);
        r.correlation = field<uint32_t>(rec, kCopyCorr);
        r.graph_id = field<uint32_t>(rec, kCopyGraph);
        r.name_id = intern(copy ? copy_name(r.copy_kind) : "Memset");
      } else if (kind == CUPTI_ACTIVITY_KIND_DRIVER || kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
        r.kind = static_cast<uint8_t>(TraceKind::Api);
        r.domain = static_cast<uint8_t>(kind == CUPTI_ACTIVITY_KIND_DRIVER ? CUPTI_CB_DOMAIN_DRIVER_API
                                                                          : CUPTI_CB_DOMAIN_RUNTIME_API);
        r.cbid = field<uint32_t>(rec, kApiCbid);
        r.start_ns = static_cast<int64_t>(field<uint64_t>(rec, kApiStart)) + offset_ns_;
        r.end_ns = static_cast<int64_t>(field<uint64_t>(rec, kApiEnd)) + offset_ns_;
        r.thread = field<uint32_t>(rec, kApiThread);
        r.correlation = field<uint32_t>(rec, kApiCorr);
        r.name_id = api_name_id(r.domain, r.cbid);
      } else {
        continue;
      }
      if (records_.size() >= opt_.max_records) {
        ++dropped_capacity_;
        continue;
      }
      records_.push_back(r);
    }
  }

  static const char* copy_name(uint8_t copy_kind) {
    switch (copy_kind) {
      case 1: return "Memcpy HtoD";
      case 2: return "Memcpy DtoH";
      case 8: return "Memcpy DtoD";
      case 9: return "Memcpy HtoH";
      case 10: return "Memcpy PtoP";
      default: return "Memcpy";
    }
  }

  // The name of API function `cbid` of `domain`, interned; CUPTI is asked once per function (the
  // answer cannot change), and a missing or failing cuptiGetCallbackName gives "cuda_*_cbid_<n>".
  uint32_t api_name_id(uint8_t domain, uint32_t cbid) {
    const uint64_t key = (static_cast<uint64_t>(domain) << 32) | cbid;
    auto it = api_names_.find(key);
    if (it != api_names_.end()) return it->second;
    const char* name = nullptr;
    std::string fallback;
    if (!callback_name_ || callback_name_(domain, cbid, &name) != CUPTI_SUCCESS || !name || !*name) {
      fallback = std::string(domain == CUPTI_CB_DOMAIN_DRIVER_API ? "cuda_driver_cbid_" : "cuda_runtime_cbid_") +
                 std::to_string(cbid);
      name = fallback.c_str();
    }
    const uint32_t id = intern(name);
    api_names_.emplace(key, id);
    return id;
  }

  uint32_t intern(const char* name) {
    auto it = name_ids_.find(name);
    if (it != name_ids_.end()) return it->second;
    const auto id = static_cast<uint32_t>(names_.size());
    names_.emplace_back(name);
    name_ids_.emplace(names_.back(), id);
    return id;
  }

  void choose_clock() {
    if (opt_.use_timestamp_callback && register_timestamp_ &&
        register_timestamp_(&monotonic_timestamp) == CUPTI_SUCCESS) {
      method_ = "callback";
      offset_ns_ = 0;
      return;
    }
    // Smallest bracketing gap of N reads: the CUPTI read sits between two CLOCK_MONOTONIC reads.
    int64_t best_gap = -1, best_offset = 0;
    for (int i = 0; i < 64; ++i) {
      uint64_t c = 0;
      const int64_t t0 = monotonic_ns();
      check(get_timestamp_(&c), "cuptiGetTimestamp");
      const int64_t t1 = monotonic_ns();
      if (best_gap < 0 || t1 - t0 < best_gap) {
        best_gap = t1 - t0;
        best_offset = t0 + (t1 - t0) / 2 - static_cast<int64_t>(c);
      }
    }
    method_ = "offset";
    offset_ns_ = best_offset;
  }

  // With both API kinds enabled, switches off the records of every named runtime and driver
  // function that is not wanted (CUPTI records a function of an enabled kind unless it is switched
  // off; switching single functions on without the kind is not honoured once a context exists).
  // False, with every switch put back, when CUPTI lacks the switches or the names, or refuses one:
  // then every call is recorded.
  bool select_apis() {
    if (!enable_runtime_api_ || !enable_driver_api_ || !callback_name_) return false;
    bool named[3] = {false, false, false};
    for (int domain : {CUPTI_CB_DOMAIN_RUNTIME_API, CUPTI_CB_DOMAIN_DRIVER_API}) {
      EnableApiFn fn = domain == CUPTI_CB_DOMAIN_RUNTIME_API ? enable_runtime_api_ : enable_driver_api_;
      for (uint32_t cbid = 1; cbid < kMaxCbid; ++cbid) {
        const char* name = nullptr;
        if (callback_name_(domain, cbid, &name) != CUPTI_SUCCESS || !name) continue;
        named[domain] = true;
        if (wanted_api(name)) continue;
        if (fn(cbid, 0) != CUPTI_SUCCESS) {
          restore_apis();
          return false;
        }
        switched_off_.emplace_back(domain, cbid);
      }
    }
    if (!named[CUPTI_CB_DOMAIN_RUNTIME_API] || !named[CUPTI_CB_DOMAIN_DRIVER_API]) {
      restore_apis();  // the names of one API are missing: this CUPTI cannot be trusted to select
      return false;
    }
    return true;
  }

  // Switches the functions switched off by select_apis back on (CUPTI's default), so that a later
  // trace, or another tool, records them again.
  void restore_apis() {
    for (const auto& [domain, cbid] : switched_off_)
      (domain == CUPTI_CB_DOMAIN_RUNTIME_API ? enable_runtime_api_ : enable_driver_api_)(cbid, 1);
    switched_off_.clear();
  }

  void release() {
    for (int kind : enabled_) disable_(kind);
    enabled_.clear();
    restore_apis();
    if (subscribed_) unsubscribe_(subscriber_);
    subscribed_ = false;
    subscriber_ = nullptr;
    // Stay the active tracer until take(): late buffers still land here. A new start() by
    // another tracer object replaces it only after this one is destroyed.
  }

  void check(CUptiResult r, const char* call) const {
    if (r == CUPTI_SUCCESS) return;
    const char* text = nullptr;
    if (result_string_) result_string_(r, &text);
    std::string msg = std::string(call) + " failed: " + (text ? text : "CUPTI error") + " (" + std::to_string(r) + ")";
    if (r == CUPTI_ERROR_INSUFFICIENT_PRIVILEGES)
      msg += "; the driver restricts GPU profiling to administrators (NVreg_RestrictProfilingToAdminUsers)";
    throw TraceUnavailable(msg);
  }

  CuptiOptions opt_;
  DynLib lib_;
  RegisterCallbacksFn register_callbacks_ = nullptr;
  EnableFn enable_ = nullptr, disable_ = nullptr;
  FlushAllFn flush_all_ = nullptr;
  GetNextRecordFn next_record_ = nullptr;
  GetDroppedFn get_dropped_ = nullptr;
  GetTimestampFn get_timestamp_ = nullptr;
  SubscribeFn subscribe_ = nullptr;
  UnsubscribeFn unsubscribe_ = nullptr;
  RegisterTimestampFn register_timestamp_ = nullptr;
  ResultStringFn result_string_ = nullptr;
  CallbackNameFn callback_name_ = nullptr;

  std::vector<uint8_t> storage_;
  std::mutex pool_mutex_;
  std::vector<uint8_t*> free_;
  std::mutex data_mutex_;
  std::vector<TraceRecord> records_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, uint32_t> name_ids_;
  std::unordered_map<uint64_t, uint32_t> api_names_;  // (domain << 32 | cbid) -> name id
  uint64_t dropped_backend_ = 0, dropped_capacity_ = 0;
  std::atomic<uint64_t> dropped_pool_{0};

  void* subscriber_ = nullptr;
  bool subscribed_ = false;
  std::vector<int> enabled_;
  std::vector<std::pair<int, uint32_t>> switched_off_;  // (domain, cbid) switched off by select_apis
  EnableApiFn enable_runtime_api_ = nullptr, enable_driver_api_ = nullptr;
  std::string api_mode_ = "off";
  bool running_ = false;
  std::string method_ = "none";
  int64_t offset_ns_ = 0;
};

}  // namespace

std::unique_ptr<KernelTraceBackend> make_cupti_tracer(const CuptiOptions& options) {
  return std::make_unique<CuptiKernelTracer>(options);
}

std::string demangle(const std::string& name) {
  if (name.size() < 2 || name[0] != '_' || name[1] != 'Z') return name;
  int status = 0;
  char* out = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  if (status != 0 || !out) {
    std::free(out);
    return name;
  }
  std::string s(out);
  std::free(out);
  return s;
}

}  // namespace fastprof
