// AMD SMI (libamd_smi.so), opened at run time. Only scalar getters and the leading members of
// structs whose layout is the same across AMD SMI releases are used, except for power (see
// read_power below).
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "dynlib.hpp"
#include "errors.hpp"
#include "sampler.hpp"

namespace fastprof {

namespace {

using amdsmi_handle = void*;

constexpr unsigned AMDSMI_STATUS_SUCCESS = 0;
constexpr unsigned AMDSMI_STATUS_NOT_SUPPORTED = 2;
constexpr unsigned AMDSMI_STATUS_NOT_YET_IMPLEMENTED = 3;
constexpr unsigned AMDSMI_STATUS_NO_PERM = 10;
constexpr uint64_t AMDSMI_INIT_AMD_GPUS = 1 << 1;
constexpr unsigned AMDSMI_MEM_TYPE_VRAM = 0;
constexpr unsigned AMDSMI_CLK_TYPE_GFX = 0;
constexpr unsigned AMDSMI_CLK_TYPE_MEM = 4;
constexpr unsigned AMDSMI_TEMPERATURE_TYPE_EDGE = 0;
constexpr unsigned AMDSMI_TEMPERATURE_TYPE_HOTSPOT = 1;
constexpr unsigned AMDSMI_TEMP_CURRENT = 0;

// amdsmi_engine_usage_t starts with gfx_activity, umc_activity, mm_activity (uint32, %).
// amdsmi_clk_info_t starts with the current clock (uint32, MHz).
// amdsmi_power_info_t (AMD SMI 6.2 and later): uint64 socket_power, then uint32
// current_socket_power and uint32 average_socket_power (W); unsupported members are UINT32_MAX.
// Every struct is read into a generous zeroed buffer so newer, longer layouts are safe.
struct alignas(8) Buffer {
  unsigned char bytes[1024];
};

uint32_t u32_at(const Buffer& b, size_t off) {
  uint32_t v;
  std::memcpy(&v, b.bytes + off, sizeof(v));
  return v;
}
uint64_t u64_at(const Buffer& b, size_t off) {
  uint64_t v;
  std::memcpy(&v, b.bytes + off, sizeof(v));
  return v;
}

double pct_or_nan(uint32_t v) {
  return (v == 0xFFFFu || v == 0xFFFFFFFFu || v > 100u) ? std::numeric_limits<double>::quiet_NaN() : v;
}
double u32_or_nan(uint32_t v) {
  return (v == 0xFFFFu || v == 0xFFFFFFFFu) ? std::numeric_limits<double>::quiet_NaN() : v;
}

enum Group : int { kActivity = 0, kMemUsed, kMemTotal, kPower, kGfxClock, kMemClock, kTemperature, kEnergy, kNumGroups };

const char* group_names[kNumGroups] = {"gpu_util_pct,mem_util_pct", "mem_used_bytes", "mem_total_bytes",
                                       "power_w,power_avg_w",       "sm_clock_mhz",   "mem_clock_mhz",
                                       "temperature_c",             "energy_mj"};

class AmdSmiBackend final : public SamplerBackend {
 public:
  const char* name() const override { return "amdsmi"; }
  std::string library() const override { return lib_ ? lib_->path() : std::string(); }

  void open(const std::vector<std::string>& devices) override {
    lib_ = std::make_unique<DynLib>("AMD SMI library (libamd_smi)", "FASTPROF_AMDSMI_LIBRARY",
                                    std::vector<std::string>{"libamd_smi.so", "/opt/rocm/lib/libamd_smi.so"});
    auto& l = *lib_;
    init_ = l.fn<decltype(init_)>({"amdsmi_init"});
    shut_down_ = l.fn<decltype(shut_down_)>({"amdsmi_shut_down"});
    status_string_ = l.fn<decltype(status_string_)>({"amdsmi_status_code_to_string"}, false);
    sockets_ = l.fn<decltype(sockets_)>({"amdsmi_get_socket_handles"});
    processors_ = l.fn<decltype(processors_)>({"amdsmi_get_processor_handles"});
    activity_ = l.fn<decltype(activity_)>({"amdsmi_get_gpu_activity"}, false);
    mem_usage_ = l.fn<decltype(mem_usage_)>({"amdsmi_get_gpu_memory_usage"}, false);
    mem_total_ = l.fn<decltype(mem_total_)>({"amdsmi_get_gpu_memory_total"}, false);
    power_ = l.fn<decltype(power_)>({"amdsmi_get_power_info"}, false);
    clock_ = l.fn<decltype(clock_)>({"amdsmi_get_clock_info"}, false);
    temp_ = l.fn<decltype(temp_)>({"amdsmi_get_temp_metric"}, false);
    energy_ = l.fn<decltype(energy_)>({"amdsmi_get_energy_count"}, false);

    if (unsigned rc = init_(AMDSMI_INIT_AMD_GPUS)) throw std::runtime_error("amdsmi_init failed: " + describe(rc));
    initialized_ = true;

    // All GPUs, socket by socket: the index space of the device identifiers.
    std::vector<amdsmi_handle> all;
    uint32_t n_sockets = 0;
    if (unsigned rc = sockets_(&n_sockets, nullptr)) throw std::runtime_error("amdsmi_get_socket_handles failed: " + describe(rc));
    std::vector<void*> sockets(n_sockets);
    if (n_sockets) {
      if (unsigned rc = sockets_(&n_sockets, sockets.data()))
        throw std::runtime_error("amdsmi_get_socket_handles failed: " + describe(rc));
    }
    for (uint32_t s = 0; s < n_sockets; ++s) {
      uint32_t n = 0;
      if (unsigned rc = processors_(sockets[s], &n, nullptr))
        throw std::runtime_error("amdsmi_get_processor_handles failed: " + describe(rc));
      std::vector<amdsmi_handle> h(n);
      if (n && (processors_(sockets[s], &n, h.data()) != AMDSMI_STATUS_SUCCESS))
        throw std::runtime_error("amdsmi_get_processor_handles failed");
      all.insert(all.end(), h.begin(), h.begin() + n);
    }
    for (const auto& id : devices) {
      size_t index;
      try {
        size_t used = 0;
        index = std::stoul(id, &used);
        if (used != id.size()) throw std::invalid_argument(id);
      } catch (const std::exception&) {
        throw std::invalid_argument("AMD SMI device '" + id + "' must be an index");
      }
      if (index >= all.size())
        throw std::runtime_error("AMD SMI device index " + id + " out of range: " + std::to_string(all.size()) + " GPU(s)");
      Device d;
      d.handle = all[index];
      d.info.identifier = id;
      const bool present[kNumGroups] = {activity_ != nullptr, mem_usage_ != nullptr, mem_total_ != nullptr,
                                        power_ != nullptr,    clock_ != nullptr,     clock_ != nullptr,
                                        temp_ != nullptr,     energy_ != nullptr};
      for (int g = 0; g < kNumGroups; ++g) d.skip[g] = !present[g];
      d.info.power_source = d.skip[kPower] ? "" : "instant";
      devices_.push_back(d);
    }
  }

  size_t device_count() const override { return devices_.size(); }
  DeviceInfo info(size_t i) const override { return devices_[i].info; }

  ReadStatus read(size_t i, uint32_t /*due: AMD SMI fields are read every sample*/, double* out, std::string&) override {
    Device& d = devices_[i];
    Buffer b;
    if (!d.skip[kActivity]) {
      std::memset(&b, 0, sizeof(b));
      if (check(d, kActivity, activity_(d.handle, &b))) {
        out[kGpuUtilPct] = pct_or_nan(u32_at(b, 0));
        out[kMemUtilPct] = pct_or_nan(u32_at(b, 4));
      }
    }
    uint64_t v = 0;
    if (!d.skip[kMemUsed] && check(d, kMemUsed, mem_usage_(d.handle, AMDSMI_MEM_TYPE_VRAM, &v)))
      out[kMemUsedBytes] = static_cast<double>(v);
    if (!d.skip[kMemTotal] && check(d, kMemTotal, mem_total_(d.handle, AMDSMI_MEM_TYPE_VRAM, &v)))
      out[kMemTotalBytes] = static_cast<double>(v);
    if (!d.skip[kPower]) {
      std::memset(&b, 0, sizeof(b));
      if (check(d, kPower, power_(d.handle, &b))) {
        const double current = u32_or_nan(u32_at(b, 8));
        const double average = u32_or_nan(u32_at(b, 12));
        const uint64_t socket = u64_at(b, 0);
        out[kPowerAvgW] = average;
        out[kPowerW] = !std::isnan(current) && current > 0 ? current
                       : (socket != 0 && socket != 0xFFFFFFFFu && socket != ~0ULL ? static_cast<double>(socket) : average);
      }
    }
    if (!d.skip[kGfxClock]) {
      std::memset(&b, 0, sizeof(b));
      if (check(d, kGfxClock, clock_(d.handle, AMDSMI_CLK_TYPE_GFX, &b))) out[kSmClockMHz] = u32_or_nan(u32_at(b, 0));
    }
    if (!d.skip[kMemClock]) {
      std::memset(&b, 0, sizeof(b));
      if (check(d, kMemClock, clock_(d.handle, AMDSMI_CLK_TYPE_MEM, &b))) out[kMemClockMHz] = u32_or_nan(u32_at(b, 0));
    }
    if (!d.skip[kTemperature]) {
      int64_t c = 0;
      // The hotspot (junction) sensor first: MI300-class parts have no edge sensor.
      unsigned rc = temp_(d.handle, d.temp_sensor, AMDSMI_TEMP_CURRENT, &c);
      if ((rc == AMDSMI_STATUS_NOT_SUPPORTED || rc == AMDSMI_STATUS_NOT_YET_IMPLEMENTED) &&
          d.temp_sensor == AMDSMI_TEMPERATURE_TYPE_HOTSPOT) {
        d.temp_sensor = AMDSMI_TEMPERATURE_TYPE_EDGE;
        rc = temp_(d.handle, d.temp_sensor, AMDSMI_TEMP_CURRENT, &c);
      }
      if (check(d, kTemperature, rc)) out[kTemperatureC] = static_cast<double>(c);
    }
    return ReadStatus::Ok;
  }

  bool has_energy(size_t i) const override { return !devices_[i].skip[kEnergy]; }

  ReadStatus read_energy(size_t i, double& mj, bool& got, std::string&) override {
    Device& d = devices_[i];
    got = false;
    if (d.skip[kEnergy]) return ReadStatus::Ok;
    uint64_t acc = 0, ts = 0;
    float resolution = 0.0f;  // microjoules per count
    if (check(d, kEnergy, energy_(d.handle, &acc, &resolution, &ts))) {
      mj = static_cast<double>(acc) * static_cast<double>(resolution) / 1000.0;
      got = true;
    }
    return ReadStatus::Ok;
  }

  std::vector<std::string> unavailable(size_t i) const override {
    std::vector<std::string> names;
    names.push_back("proc_mem_bytes");
    names.push_back("other_processes");
    names.push_back("throttle_reasons");
    append_comma_list(gpm_field_names(), names);
    for (int g = 0; g < kNumGroups; ++g) {
      if (!devices_[i].skip[g]) continue;
      append_comma_list(group_names[g], names);
    }
    return names;
  }

  uint64_t read_errors() const override { return errors_; }

  void close() noexcept override {
    if (initialized_ && shut_down_) shut_down_();
    initialized_ = false;
  }
  ~AmdSmiBackend() override { close(); }

 private:
  struct Device {
    amdsmi_handle handle = nullptr;
    DeviceInfo info;
    unsigned temp_sensor = AMDSMI_TEMPERATURE_TYPE_HOTSPOT;
    bool skip[kNumGroups] = {};
  };

  std::string describe(unsigned rc) const {
    const char* s = nullptr;
    if (status_string_) status_string_(rc, &s);
    return std::string(s ? s : "AMD SMI error") + " (" + std::to_string(rc) + ")";
  }

  bool check(Device& d, int group, unsigned rc) {
    if (rc == AMDSMI_STATUS_SUCCESS) return true;
    if (rc == AMDSMI_STATUS_NOT_SUPPORTED || rc == AMDSMI_STATUS_NOT_YET_IMPLEMENTED || rc == AMDSMI_STATUS_NO_PERM) {
      d.skip[group] = true;
    } else {
      ++errors_;
    }
    return false;
  }

  std::unique_ptr<DynLib> lib_;
  bool initialized_ = false;
  std::vector<Device> devices_;
  std::atomic<uint64_t> errors_{0};

  unsigned (*init_)(uint64_t) = nullptr;
  unsigned (*shut_down_)() = nullptr;
  unsigned (*status_string_)(unsigned, const char**) = nullptr;
  unsigned (*sockets_)(uint32_t*, void**) = nullptr;
  unsigned (*processors_)(void*, uint32_t*, amdsmi_handle*) = nullptr;
  unsigned (*activity_)(amdsmi_handle, void*) = nullptr;
  unsigned (*mem_usage_)(amdsmi_handle, unsigned, uint64_t*) = nullptr;
  unsigned (*mem_total_)(amdsmi_handle, unsigned, uint64_t*) = nullptr;
  unsigned (*power_)(amdsmi_handle, void*) = nullptr;
  unsigned (*clock_)(amdsmi_handle, unsigned, void*) = nullptr;
  unsigned (*temp_)(amdsmi_handle, unsigned, unsigned, int64_t*) = nullptr;
  unsigned (*energy_)(amdsmi_handle, uint64_t*, float*, uint64_t*) = nullptr;
};

}  // namespace

std::unique_ptr<SamplerBackend> make_amdsmi_backend() { return std::make_unique<AmdSmiBackend>(); }

}  // namespace fastprof
