// NVML (libnvidia-ml.so.1), opened at run time. Struct layouts and constants follow nvml.h.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
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
  kNumGroups
};

const char* group_field_names(int g) {
  switch (g) {
    case kUtil: return "gpu_util_pct,mem_util_pct";
    case kMemory: return "mem_used_bytes,mem_total_bytes";
    case kProcesses: return "proc_mem_bytes";
    case kPowerInstant: return "power_instant";
    case kPowerAverage: return "power_avg_w";
    case kSmClock: return "sm_clock_mhz";
    case kMemClock: return "mem_clock_mhz";
    case kTemperature: return "temperature_c";
    case kThrottle: return "throttle_reasons";
    case kEnergy: return "energy_mj";
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
                                           energy_ != nullptr};
      for (int g = 0; g < kNumGroups; ++g) d.skip[g] = !fn_present[g];
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
    if (!d.skip[kProcesses] && want(kProcMemBytes)) {
      unsigned count = kMaxProcesses;
      rc = procs_(d.handle, &count, procs_v1_ ? static_cast<void*>(procs_buf_v1_) : static_cast<void*>(procs_buf_));
      if (rc == NVML_ERROR_INSUFFICIENT_SIZE) {
        ++errors_;  // more processes than the buffer: this reading only
      } else {
        if (!ok(d, kProcesses, rc, "nvmlDeviceGetComputeRunningProcesses", reason)) return ReadStatus::Lost;
        if (rc == NVML_SUCCESS) {
          for (unsigned k = 0; k < count && k < kMaxProcesses; ++k) {
            const unsigned pid = procs_v1_ ? procs_buf_v1_[k].pid : procs_buf_[k].pid;
            const unsigned long long used = procs_v1_ ? procs_buf_v1_[k].usedGpuMemory : procs_buf_[k].usedGpuMemory;
            if (pid == pid_) {
              if (used != NVML_VALUE_NOT_AVAILABLE_ULL) out[kProcMemBytes] = static_cast<double>(used);
              break;
            }
          }
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
    for (int g = 0; g < kNumGroups; ++g) {
      if (!devices_[i].skip[g]) continue;
      append_comma_list(group_field_names(g), names);
    }
    return names;
  }

  uint64_t read_errors() const override { return errors_; }

  void close() noexcept override {
    if (initialized_ && shutdown_) shutdown_();
    initialized_ = false;
  }

  ~NvmlBackend() override { close(); }

 private:
  struct Device {
    nvmlDevice_t handle = nullptr;
    DeviceInfo info;
    bool skip[kNumGroups] = {};
  };

  std::string describe(int rc) const {
    const char* s = error_string_ ? error_string_(rc) : nullptr;
    return std::string(s ? s : "unknown error") + " (" + std::to_string(rc) + ")";
  }

  // Classifies a return code: success; unsupported (the group is skipped from now on);
  // device lost (false, with the reason); anything else counts as a failed reading.
  bool ok(Device& d, int group, int rc, const char* call, std::string& reason) {
    if (rc == NVML_SUCCESS) return true;
    if (rc == NVML_ERROR_NOT_SUPPORTED || rc == NVML_ERROR_FUNCTION_NOT_FOUND ||
        (rc == NVML_ERROR_NO_PERMISSION && group == kProcesses)) {
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
};

}  // namespace

std::unique_ptr<SamplerBackend> make_nvml_backend() { return std::make_unique<NvmlBackend>(); }

}  // namespace fastprof
