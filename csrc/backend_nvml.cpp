// NVML (libnvidia-ml.so.1), opened at run time. Struct layouts and constants follow nvml.h.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstddef>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "dynlib.hpp"
#include "errors.hpp"
#include "sampler.hpp"

namespace fastprof {

namespace {

using nvmlDevice_t = void*;

constexpr int NVML_SUCCESS = 0;
constexpr int NVML_ERROR_NOT_SUPPORTED = 3;
constexpr int NVML_ERROR_NO_PERMISSION = 4;
constexpr int NVML_ERROR_INSUFFICIENT_SIZE = 7;
constexpr int NVML_ERROR_FUNCTION_NOT_FOUND = 13;
constexpr int NVML_ERROR_GPU_IS_LOST = 15;
constexpr unsigned NVML_CLOCK_SM = 1;
constexpr unsigned NVML_CLOCK_MEM = 2;
constexpr unsigned NVML_TEMPERATURE_GPU = 0;
constexpr unsigned NVML_FI_DEV_POWER_INSTANT = 186;
constexpr unsigned long long NVML_VALUE_NOT_AVAILABLE_ULL = ~0ULL;

struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};

struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

// nvmlProcessInfo_t as returned by the _v2 and _v3 entry points.
struct nvmlProcessInfo_v2_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};

// nvmlProcessInfo_v1_t, for the unversioned entry point of old drivers.
struct nvmlProcessInfo_v1_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
};

union nvmlValue_t {
  double dVal;
  unsigned int uiVal;
  unsigned long ulVal;
  unsigned long long ullVal;
  long long sllVal;
  int siVal;
  unsigned short usVal;
};

struct nvmlFieldValue_t {
  unsigned int fieldId;
  unsigned int scopeId;
  long long timestamp;
  long long latencyUsec;
  int valueType;   // nvmlValueType_t
  int nvmlReturn;  // nvmlReturn_t
  nvmlValue_t value;
};

// GPM (GPU performance monitoring, Hopper and newer). nvmlGpmSample_t is an opaque pointer.
using nvmlGpmSample_t = void*;
constexpr unsigned NVML_GPM_SUPPORT_VERSION = 1;
constexpr unsigned NVML_GPM_METRICS_GET_VERSION = 1;

struct nvmlGpmSupport_t {
  unsigned int version;            // IN: NVML_GPM_SUPPORT_VERSION
  unsigned int isSupportedDevice;  // OUT
};

struct nvmlGpmMetric_t {
  unsigned int metricId;  // IN: NVML_GPM_METRIC_*
  int nvmlReturn;         // OUT: status of this metric; value is valid only when 0
  double value;           // OUT
  struct {
    char* shortName;
    char* longName;
    char* unit;
  } metricInfo;  // OUT
};

// nvml.h sizes metrics[] by NVML_GPM_METRIC_MAX, which has grown between releases (98, 210, 333,
// 477) under the same version 1; NVML reads numMetrics entries. A larger array is harmless.
constexpr size_t kGpmMetricSlots = 512;

struct nvmlGpmMetricsGet_t {
  unsigned int version;     // IN: NVML_GPM_METRICS_GET_VERSION
  unsigned int numMetrics;  // IN: entries of metrics[] to fill
  nvmlGpmSample_t sample1;  // IN: the earlier sample
  nvmlGpmSample_t sample2;  // IN: the later sample
  nvmlGpmMetric_t metrics[kGpmMetricSlots];
};

// The GPM metric read into each GPM field, in field order (nvmlGpmMetricId_t values of nvml.h).
// nvml.h has no separate BF16 metric: BF16 and FP16 tensor-core MMA both count as HMMA.
constexpr unsigned kGpmMetricIds[kNumGpmFields] = {
    10,  // NVML_GPM_METRIC_DRAM_BW_UTIL       -> dram_bw_util_pct
    2,   // NVML_GPM_METRIC_SM_UTIL            -> sm_active_pct
    3,   // NVML_GPM_METRIC_SM_OCCUPANCY       -> sm_occupancy_pct
    5,   // NVML_GPM_METRIC_ANY_TENSOR_UTIL    -> tensor_active_pct
    7,   // NVML_GPM_METRIC_HMMA_TENSOR_UTIL   -> tensor_hmma_active_pct
    13,  // NVML_GPM_METRIC_FP16_UTIL          -> fp16_active_pct
};

static_assert(sizeof(nvmlGpmMetric_t) == 40, "nvmlGpmMetric_t layout");
static_assert(offsetof(nvmlGpmMetricsGet_t, metrics) == 24, "nvmlGpmMetricsGet_t layout");
static_assert(sizeof(nvmlFieldValue_t) == 40, "nvmlFieldValue_t layout");
static_assert(sizeof(nvmlProcessInfo_v2_t) == 24, "nvmlProcessInfo_t layout");
static_assert(sizeof(nvmlMemory_t) == 24, "nvmlMemory_t layout");

double field_value(const nvmlFieldValue_t& f) {
  switch (f.valueType) {
    case 0: return f.value.dVal;
    case 1: return static_cast<double>(f.value.uiVal);
    case 2: return static_cast<double>(f.value.ulVal);
    case 3: return static_cast<double>(f.value.ullVal);
    case 4: return static_cast<double>(f.value.sllVal);
    case 5: return static_cast<double>(f.value.siVal);
    case 6: return static_cast<double>(f.value.usVal);
    default: return std::numeric_limits<double>::quiet_NaN();
  }
}

// The groups of fields read by one NVML call each; a group found unsupported is skipped.
enum Group : int {
  kUtil = 0,
  kMemory,
  kProcesses,
  kPowerInstant,
  kPowerAverage,
  kSmClock,
  kMemClock,
  kTemperature,
  kThrottle,
  kEnergy,
  kGpm,
  kNumGroups
};

const char* group_field_names(int g) {
  switch (g) {
    case kUtil: return "gpu_util_pct,mem_util_pct";
    case kMemory: return "mem_used_bytes,mem_total_bytes";
    case kProcesses: return "proc_mem_bytes,other_processes";
    case kPowerInstant: return "power_instant";
    case kPowerAverage: return "power_avg_w";
    case kSmClock: return "sm_clock_mhz";
    case kMemClock: return "mem_clock_mhz";
    case kTemperature: return "temperature_c";
    case kThrottle: return "throttle_reasons";
    case kEnergy: return "energy_mj";
    case kGpm: return gpm_field_names();
  }
  return "?";
}

constexpr size_t kMaxProcesses = 256;

class NvmlBackend final : public SamplerBackend {
 public:
  const char* name() const override { return "nvml"; }
  std::string library() const override { return lib_ ? lib_->path() : std::string(); }

  void open(const std::vector<std::string>& devices) override {
    lib_ = std::make_unique<DynLib>("NVIDIA management library (NVML)", "FASTPROF_NVML_LIBRARY",
                                    std::vector<std::string>{"libnvidia-ml.so.1", "libnvidia-ml.so"});
    auto& l = *lib_;
    init_ = l.fn<decltype(init_)>({"nvmlInit_v2", "nvmlInit"});
    shutdown_ = l.fn<decltype(shutdown_)>({"nvmlShutdown"});
    error_string_ = l.fn<decltype(error_string_)>({"nvmlErrorString"});
    by_uuid_ = l.fn<decltype(by_uuid_)>({"nvmlDeviceGetHandleByUUID"});
    by_pci_ = l.fn<decltype(by_pci_)>({"nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId"});
    by_index_ = l.fn<decltype(by_index_)>({"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"});
    get_name_ = l.fn<decltype(get_name_)>({"nvmlDeviceGetName"}, false);
    get_uuid_ = l.fn<decltype(get_uuid_)>({"nvmlDeviceGetUUID"}, false);
    util_ = l.fn<decltype(util_)>({"nvmlDeviceGetUtilizationRates"}, false);
    memory_ = l.fn<decltype(memory_)>({"nvmlDeviceGetMemoryInfo"}, false);
    procs_ = l.fn<decltype(procs_)>({"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"}, false);
    if (!procs_) {
      procs_ = l.fn<decltype(procs_)>({"nvmlDeviceGetComputeRunningProcesses"}, false);
      procs_v1_ = procs_ != nullptr;
    }
    field_values_ = l.fn<decltype(field_values_)>({"nvmlDeviceGetFieldValues"}, false);
    power_ = l.fn<decltype(power_)>({"nvmlDeviceGetPowerUsage"}, false);
    clock_ = l.fn<decltype(clock_)>({"nvmlDeviceGetClockInfo"}, false);
    temperature_ = l.fn<decltype(temperature_)>({"nvmlDeviceGetTemperature"}, false);
    throttle_ = l.fn<decltype(throttle_)>({"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"}, false);
    energy_ = l.fn<decltype(energy_)>({"nvmlDeviceGetTotalEnergyConsumption"}, false);
    gpm_query_ = l.fn<decltype(gpm_query_)>({"nvmlGpmQueryDeviceSupport"}, false);
    gpm_alloc_ = l.fn<decltype(gpm_alloc_)>({"nvmlGpmSampleAlloc"}, false);
    gpm_free_ = l.fn<decltype(gpm_free_)>({"nvmlGpmSampleFree"}, false);
    gpm_get_ = l.fn<decltype(gpm_get_)>({"nvmlGpmSampleGet"}, false);
    gpm_metrics_ = l.fn<decltype(gpm_metrics_)>({"nvmlGpmMetricsGet"}, false);
    const bool gpm_symbols = gpm_query_ && gpm_alloc_ && gpm_free_ && gpm_get_ && gpm_metrics_;

    if (int rc = init_()) throw std::runtime_error("nvmlInit_v2 failed: " + describe(rc) + " (NVML at " + l.path() + ")");
    initialized_ = true;

    for (const auto& id : devices) {
      Device d;
      d.info.identifier = id;
      int rc;
      const char* call;
      if (id.rfind("GPU-", 0) == 0 || id.rfind("MIG-", 0) == 0) {
        call = "nvmlDeviceGetHandleByUUID";
        rc = by_uuid_(id.c_str(), &d.handle);
      } else if (id.find(':') != std::string::npos) {
        call = "nvmlDeviceGetHandleByPciBusId_v2";
        rc = by_pci_(id.c_str(), &d.handle);
      } else if (!id.empty() && std::all_of(id.begin(), id.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
        call = "nvmlDeviceGetHandleByIndex_v2";
        rc = by_index_(static_cast<unsigned>(std::stoul(id)), &d.handle);
      } else {
        throw std::invalid_argument("device '" + id + "' is not an NVML identifier: use a UUID (GPU-... or MIG-...), "
                                    "a PCI bus id (0000:65:00.0) or an index");
      }
      if (rc) throw std::runtime_error(std::string(call) + "(" + id + ") failed: " + describe(rc));
      char buf[256];
      if (get_name_ && get_name_(d.handle, buf, sizeof(buf)) == NVML_SUCCESS) d.info.name = buf;
      if (get_uuid_ && get_uuid_(d.handle, buf, sizeof(buf)) == NVML_SUCCESS) d.info.uuid = buf;
      const bool fn_present[kNumGroups] = {util_ != nullptr,        memory_ != nullptr, procs_ != nullptr,
                                           field_values_ != nullptr, power_ != nullptr,  clock_ != nullptr,
                                           clock_ != nullptr,        temperature_ != nullptr, throttle_ != nullptr,
                                           energy_ != nullptr,      gpm_symbols};
      for (int g = 0; g < kNumGroups; ++g) d.skip[g] = !fn_present[g];
      if (!d.skip[kGpm]) open_gpm(d);
      d.info.power_source = !d.skip[kPowerInstant] ? "instant" : (!d.skip[kPowerAverage] ? "average" : "");
      devices_.push_back(std::move(d));
    }
    pid_ = static_cast<unsigned>(getpid());
  }

  size_t device_count() const override { return devices_.size(); }
  DeviceInfo info(size_t i) const override {
    DeviceInfo info = devices_[i].info;
    const Device& d = devices_[i];
    info.power_source = !d.skip[kPowerInstant] ? "instant" : (!d.skip[kPowerAverage] ? "average" : "");
    return info;
  }

  ReadStatus read(size_t i, uint32_t due, double* out, std::string& reason) override {
    Device& d = devices_[i];
    int rc;
    auto want = [due](int field) { return (due & (1u << field)) != 0; };
    if (!d.skip[kUtil] && (want(kGpuUtilPct) || want(kMemUtilPct))) {
      nvmlUtilization_t u{};
      rc = util_(d.handle, &u);
      if (!ok(d, kUtil, rc, "nvmlDeviceGetUtilizationRates", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) {
        out[kGpuUtilPct] = u.gpu;
        out[kMemUtilPct] = u.memory;
      }
    }
    if (!d.skip[kMemory] && (want(kMemUsedBytes) || want(kMemTotalBytes))) {
      nvmlMemory_t m{};
      rc = memory_(d.handle, &m);
      if (!ok(d, kMemory, rc, "nvmlDeviceGetMemoryInfo", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) {
        out[kMemUsedBytes] = static_cast<double>(m.used);
        out[kMemTotalBytes] = static_cast<double>(m.total);
      }
    }
    if (!d.skip[kProcesses] && (want(kProcMemBytes) || want(kOtherProcesses))) {
      unsigned count = kMaxProcesses;
      rc = procs_(d.handle, &count, procs_v1_ ? static_cast<void*>(procs_buf_v1_) : static_cast<void*>(procs_buf_));
      if (rc == NVML_ERROR_INSUFFICIENT_SIZE) {
        ++errors_;  // more processes than the buffer: this reading only
      } else {
        if (!ok(d, kProcesses, rc, "nvmlDeviceGetComputeRunningProcesses", reason)) return ReadStatus::Lost;
        if (rc == NVML_SUCCESS) {
          unsigned others = 0;
          for (unsigned k = 0; k < count && k < kMaxProcesses; ++k) {
            const unsigned pid = procs_v1_ ? procs_buf_v1_[k].pid : procs_buf_[k].pid;
            const unsigned long long used = procs_v1_ ? procs_buf_v1_[k].usedGpuMemory : procs_buf_[k].usedGpuMemory;
            if (pid == pid_) {
              if (used != NVML_VALUE_NOT_AVAILABLE_ULL) out[kProcMemBytes] = static_cast<double>(used);
            } else {
              ++others;
            }
          }
          out[kOtherProcesses] = static_cast<double>(others);
        }
      }
    }
    double avg_w = std::numeric_limits<double>::quiet_NaN();
    // The averaged reading doubles as the power reading where instantaneous power is missing.
    if (!d.skip[kPowerAverage] && (want(kPowerAvgW) || (d.skip[kPowerInstant] && want(kPowerW)))) {
      unsigned mw = 0;
      rc = power_(d.handle, &mw);
      if (!ok(d, kPowerAverage, rc, "nvmlDeviceGetPowerUsage", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) avg_w = mw / 1000.0;
      out[kPowerAvgW] = avg_w;
    }
    if (!d.skip[kPowerInstant] && want(kPowerW)) {
      nvmlFieldValue_t f;
      std::memset(&f, 0, sizeof(f));
      f.fieldId = NVML_FI_DEV_POWER_INSTANT;
      rc = field_values_(d.handle, 1, &f);
      if (rc == NVML_SUCCESS) rc = f.nvmlReturn;
      if (!ok(d, kPowerInstant, rc, "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) out[kPowerW] = field_value(f) / 1000.0;  // mW
    }
    if (d.skip[kPowerInstant] && want(kPowerW)) out[kPowerW] = avg_w;  // fallback: the averaged reading
    if (!d.skip[kSmClock] && want(kSmClockMHz)) {
      unsigned mhz = 0;
      rc = clock_(d.handle, NVML_CLOCK_SM, &mhz);
      if (!ok(d, kSmClock, rc, "nvmlDeviceGetClockInfo(NVML_CLOCK_SM)", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) out[kSmClockMHz] = mhz;
    }
    if (!d.skip[kMemClock] && want(kMemClockMHz)) {
      unsigned mhz = 0;
      rc = clock_(d.handle, NVML_CLOCK_MEM, &mhz);
      if (!ok(d, kMemClock, rc, "nvmlDeviceGetClockInfo(NVML_CLOCK_MEM)", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) out[kMemClockMHz] = mhz;
    }
    if (!d.skip[kTemperature] && want(kTemperatureC)) {
      unsigned c = 0;
      rc = temperature_(d.handle, NVML_TEMPERATURE_GPU, &c);
      if (!ok(d, kTemperature, rc, "nvmlDeviceGetTemperature", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) out[kTemperatureC] = c;
    }
    if (!d.skip[kThrottle] && want(kThrottleReasons)) {
      unsigned long long mask = 0;
      rc = throttle_(d.handle, &mask);
      if (!ok(d, kThrottle, rc, "nvmlDeviceGetCurrentClocksEventReasons", reason)) return ReadStatus::Lost;
      if (rc == NVML_SUCCESS) out[kThrottleReasons] = static_cast<double>(mask);
    }
    bool gpm_due = false;
    for (int f = kFirstGpmField; f < kNumFields; ++f) gpm_due = gpm_due || want(f);
    if (!d.skip[kGpm] && gpm_due && !read_gpm(d, out, reason)) return ReadStatus::Lost;
    return ReadStatus::Ok;
  }

  bool has_energy(size_t i) const override { return !devices_[i].skip[kEnergy]; }

  ReadStatus read_energy(size_t i, double& mj, bool& got, std::string& reason) override {
    Device& d = devices_[i];
    got = false;
    if (d.skip[kEnergy]) return ReadStatus::Ok;
    unsigned long long v = 0;
    const int rc = energy_(d.handle, &v);
    if (!ok(d, kEnergy, rc, "nvmlDeviceGetTotalEnergyConsumption", reason)) return ReadStatus::Lost;
    if (rc == NVML_SUCCESS) {
      mj = static_cast<double>(v);
      got = true;
    }
    return ReadStatus::Ok;
  }

  std::vector<std::string> unavailable(size_t i) const override {
    std::vector<std::string> names;
    const Device& d = devices_[i];
    for (int g = 0; g < kNumGroups; ++g) {
      if (!d.skip[g]) continue;
      append_comma_list(group_field_names(g), names);
    }
    if (!d.skip[kGpm])
      for (int k = 0; k < kNumGpmFields; ++k)
        if (d.gpm_metric_unsupported[k]) names.push_back(sample_field_name(kFirstGpmField + k));
    return names;
  }

  uint64_t read_errors() const override { return errors_; }

  void close() noexcept override {
    for (Device& d : devices_) {
      for (nvmlGpmSample_t& smp : d.gpm_samples) {
        if (smp && gpm_free_) gpm_free_(smp);
        smp = nullptr;
      }
    }
    if (initialized_ && shutdown_) shutdown_();
    initialized_ = false;
  }

  ~NvmlBackend() override { close(); }

 private:
  struct Device {
    nvmlDevice_t handle = nullptr;
    DeviceInfo info;
    bool skip[kNumGroups] = {};
    // GPM: two sample buffers used in turn; gpm_samples[gpm_current] receives the next sample,
    // the other holds the previous one when gpm_have_previous.
    nvmlGpmSample_t gpm_samples[2] = {nullptr, nullptr};
    int gpm_current = 0;
    bool gpm_have_previous = false;
    bool gpm_metric_unsupported[kNumGpmFields] = {};
  };

  // GPM needs the device's support flag and two sample buffers; without them the GPM fields
  // are unavailable on this device (the other fields are unaffected).
  void open_gpm(Device& d) {
    nvmlGpmSupport_t support{};
    support.version = NVML_GPM_SUPPORT_VERSION;
    if (gpm_query_(d.handle, &support) != NVML_SUCCESS || !support.isSupportedDevice) {
      d.skip[kGpm] = true;
      return;
    }
    for (nvmlGpmSample_t& smp : d.gpm_samples) {
      if (gpm_alloc_(&smp) != NVML_SUCCESS || smp == nullptr) {
        smp = nullptr;
        d.skip[kGpm] = true;
      }
    }
  }

  // Takes a GPM sample and, when there is a previous one, fills the GPM fields with the metrics
  // of the window between the two. False when the device was lost.
  bool read_gpm(Device& d, double* out, std::string& reason) {
    nvmlGpmSample_t current = d.gpm_samples[d.gpm_current];
    int rc = gpm_get_(d.handle, current);
    if (!ok(d, kGpm, rc, "nvmlGpmSampleGet", reason)) return false;
    if (rc != NVML_SUCCESS) {
      d.gpm_have_previous = false;  // the next window starts at the next good sample
      return true;
    }
    if (d.gpm_have_previous) {
      nvmlGpmMetricsGet_t& mg = gpm_request_;
      mg.version = NVML_GPM_METRICS_GET_VERSION;
      mg.sample1 = d.gpm_samples[1 - d.gpm_current];
      mg.sample2 = current;
      int field_of[kNumGpmFields];
      unsigned n = 0;
      for (int k = 0; k < kNumGpmFields; ++k) {
        if (d.gpm_metric_unsupported[k]) continue;
        std::memset(&mg.metrics[n], 0, sizeof(nvmlGpmMetric_t));
        mg.metrics[n].metricId = kGpmMetricIds[k];
        field_of[n++] = k;
      }
      mg.numMetrics = n;
      if (n > 0) {
        rc = gpm_metrics_(&mg);
        if (!ok(d, kGpm, rc, "nvmlGpmMetricsGet", reason)) return false;
        if (rc == NVML_SUCCESS) {
          for (unsigned j = 0; j < n; ++j) {
            const int k = field_of[j];
            const int mrc = mg.metrics[j].nvmlReturn;
            if (mrc == NVML_SUCCESS) {
              out[kFirstGpmField + k] = mg.metrics[j].value;
            } else if (mrc == NVML_ERROR_NOT_SUPPORTED) {
              d.gpm_metric_unsupported[k] = true;  // this metric only, from now on
            } else {
              ++errors_;
            }
          }
        }
      }
    }
    d.gpm_have_previous = true;
    d.gpm_current = 1 - d.gpm_current;
    return true;
  }

  std::string describe(int rc) const {
    const char* s = error_string_ ? error_string_(rc) : nullptr;
    return std::string(s ? s : "unknown error") + " (" + std::to_string(rc) + ")";
  }

  // Classifies a return code: success; unsupported (the group is skipped from now on);
  // device lost (false, with the reason); anything else counts as a failed reading.
  bool ok(Device& d, int group, int rc, const char* call, std::string& reason) {
    if (rc == NVML_SUCCESS) return true;
    if (rc == NVML_ERROR_NOT_SUPPORTED || rc == NVML_ERROR_FUNCTION_NOT_FOUND ||
        (rc == NVML_ERROR_NO_PERMISSION && (group == kProcesses || group == kGpm))) {
      d.skip[group] = true;
      return true;
    }
    if (rc == NVML_ERROR_GPU_IS_LOST) {
      reason = "device " + d.info.identifier + " was lost: " + call + " returned " + describe(rc);
      return false;
    }
    ++errors_;
    return true;
  }

  std::unique_ptr<DynLib> lib_;
  bool initialized_ = false;
  std::vector<Device> devices_;
  unsigned pid_ = 0;
  std::atomic<uint64_t> errors_{0};
  bool procs_v1_ = false;
  nvmlProcessInfo_v2_t procs_buf_[kMaxProcesses];
  nvmlProcessInfo_v1_t procs_buf_v1_[kMaxProcesses];
  nvmlGpmMetricsGet_t gpm_request_{};  // only the fast thread reads GPM

  int (*init_)() = nullptr;
  int (*shutdown_)() = nullptr;
  const char* (*error_string_)(int) = nullptr;
  int (*by_uuid_)(const char*, nvmlDevice_t*) = nullptr;
  int (*by_pci_)(const char*, nvmlDevice_t*) = nullptr;
  int (*by_index_)(unsigned, nvmlDevice_t*) = nullptr;
  int (*get_name_)(nvmlDevice_t, char*, unsigned) = nullptr;
  int (*get_uuid_)(nvmlDevice_t, char*, unsigned) = nullptr;
  int (*util_)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  int (*memory_)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  int (*procs_)(nvmlDevice_t, unsigned*, void*) = nullptr;
  int (*field_values_)(nvmlDevice_t, int, nvmlFieldValue_t*) = nullptr;
  int (*power_)(nvmlDevice_t, unsigned*) = nullptr;
  int (*clock_)(nvmlDevice_t, unsigned, unsigned*) = nullptr;
  int (*temperature_)(nvmlDevice_t, unsigned, unsigned*) = nullptr;
  int (*throttle_)(nvmlDevice_t, unsigned long long*) = nullptr;
  int (*energy_)(nvmlDevice_t, unsigned long long*) = nullptr;
  int (*gpm_query_)(nvmlDevice_t, nvmlGpmSupport_t*) = nullptr;
  int (*gpm_alloc_)(nvmlGpmSample_t*) = nullptr;
  int (*gpm_free_)(nvmlGpmSample_t) = nullptr;
  int (*gpm_get_)(nvmlDevice_t, nvmlGpmSample_t) = nullptr;
  int (*gpm_metrics_)(nvmlGpmMetricsGet_t*) = nullptr;
};

}  // namespace

std::unique_ptr<SamplerBackend> make_nvml_backend() { return std::make_unique<NvmlBackend>(); }

}  // namespace fastprof
