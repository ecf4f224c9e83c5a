// The GPU sampler: a native thread that reads device counters (utilisation, memory, power,
// clocks, temperature, throttle reasons and, on NVIDIA Hopper and newer, the GPU performance
// counters of NVML's GPM interface) on an absolute schedule, and a second thread that reads the
// slow cumulative energy counter on its own cadence.
//
// Neither thread touches Python. Samples go to a ring buffer allocated up front; when it is
// full the oldest rows are dropped and counted. Errors never leave the threads as exceptions:
// a missing library, a failed initialisation or a lost device ends sampling cleanly and is
// reported as the result's `reason`, with every sample taken so far kept.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace fastprof {

// The fields of every sample row, in column order. NaN where a value is not available.
enum SampleField : int {
  kGpuUtilPct = 0,     // % of time a kernel ran (NVML utilization.gpu, AMD gfx_activity)
  kMemUtilPct,         // % of time device memory was read or written (NVML utilization.memory, AMD umc_activity)
  kMemUsedBytes,       // device memory in use, all processes
  kMemTotalBytes,      // device memory in total
  kProcMemBytes,       // device memory used by this process (NVML only; NaN when not listed)
  kOtherProcesses,     // compute processes on the device other than this one (NVML only)
  kPowerW,             // instantaneous power where the device has it, else the averaged reading
  kPowerAvgW,          // the driver's averaged power reading
  kSmClockMHz,         // graphics/SM clock
  kMemClockMHz,        // memory clock
  kTemperatureC,       // GPU die temperature
  kThrottleReasons,    // NVML clocks-event (throttle) reasons bitmask, as a double
  // GPU performance counters (NVML GPM, Hopper and newer), each the average over the window
  // since the previous GPM sample of the device (NaN in the first row: no window yet).
  kDramBwUtilPct,      // DRAM bandwidth used, % of the theoretical maximum (NVML_GPM_METRIC_DRAM_BW_UTIL)
  kSmActivePct,        // % of SMs busy (NVML_GPM_METRIC_SM_UTIL)
  kSmOccupancyPct,     // resident warps, % of the theoretical maximum (NVML_GPM_METRIC_SM_OCCUPANCY)
  kTensorActivePct,    // % of time the SMs ran any tensor-core operation (NVML_GPM_METRIC_ANY_TENSOR_UTIL)
  kTensorHmmaActivePct,  // % of time on half-precision (FP16 and BF16) tensor-core MMA (NVML_GPM_METRIC_HMMA_TENSOR_UTIL)
  kFp16ActivePct,      // % of time on non-tensor FP16 math (NVML_GPM_METRIC_FP16_UTIL)
  kNumFields
};

constexpr int kFirstGpmField = kDramBwUtilPct;
constexpr int kNumGpmFields = kNumFields - kFirstGpmField;
static_assert(kNumFields <= 32, "the sampler's due mask is 32 bits");

// The GPM field names, comma-separated: backends without GPM list them as unavailable.
const char* gpm_field_names();

const char* sample_field_name(int field);

// Appends the comma-separated names of `list` ("a,b") to `out`: backends describe each group of
// fields read by one library call this way.
void append_comma_list(const std::string& list, std::vector<std::string>& out);

struct DeviceInfo {
  std::string identifier;    // as given (UUID, PCI bus id or index)
  std::string name;          // product name, when the library reports it
  std::string uuid;          // the library's UUID, when it reports it
  std::string power_source;  // "instant", "average" or "" (no power reading)
};

enum class ReadStatus { Ok, Lost };

// One GPU management library. Methods other than open()/close() are called on the sampler's
// threads; read() only from the fast thread, read_energy() only from the energy thread.
class SamplerBackend {
 public:
  virtual ~SamplerBackend() = default;
  virtual const char* name() const = 0;
  virtual std::string library() const = 0;
  // Loads the library and resolves the devices. Throws LibraryError / std::runtime_error.
  virtual void open(const std::vector<std::string>& devices) = 0;
  virtual size_t device_count() const = 0;
  virtual DeviceInfo info(size_t device) const = 0;
  // Fills out[kNumFields] (preset to NaN). On Lost, `reason` says why.
  // Reads the fields whose bit (1 << SampleField) is set in `due` into `out` (others stay NaN).
  // A backend may fill more than asked.
  virtual ReadStatus read(size_t device, uint32_t due, double* out, std::string& reason) = 0;
  // Cumulative energy in mJ into `mj`; false when not available (NaN is not stored).
  virtual bool has_energy(size_t device) const = 0;
  virtual ReadStatus read_energy(size_t device, double& mj, bool& ok, std::string& reason) = 0;
  // Field names found unsupported on `device` (valid once the threads have stopped).
  virtual std::vector<std::string> unavailable(size_t device) const = 0;
  virtual uint64_t read_errors() const { return 0; }
  // Backends that produce their own rows (a child process's output) instead of being polled.
  virtual bool streaming() const { return false; }
  // Called instead of the poll loop for streaming backends; pushes rows through `sink`
  // until `stop` is set or the stream ends. Returns the stop reason ("" when stopped normally).
  struct Sink {
    virtual ~Sink() = default;
    virtual void row(size_t device, int64_t ts, const double* values) = 0;
    virtual void energy(size_t device, int64_t ts, double mj) = 0;
  };
  virtual std::string stream(Sink&, const std::atomic<bool>& stop) { (void)stop; return "not a streaming backend"; }
  virtual void close() noexcept = 0;
};

std::unique_ptr<SamplerBackend> make_nvml_backend();
std::unique_ptr<SamplerBackend> make_amdsmi_backend();
std::unique_ptr<SamplerBackend> make_xpusmi_backend(int64_t interval_ns);
// True when the xpu-smi executable (FASTPROF_XPU_SMI or PATH) can be found.
bool xpusmi_available();

struct SamplerConfig {
  std::string backend = "auto";          // auto | nvml | amdsmi | xpusmi
  std::vector<std::string> devices;      // NVML: UUID, PCI bus id or index; others: index
  int64_t interval_ns = 10000000;        // 1 ms .. 1 s
  size_t max_samples = size_t(1) << 18;  // rows kept (all devices together)
  // The cumulative energy counter costs milliseconds a read on NVML and holds the library's lock
  // meanwhile, delaying the fast reads of the other thread: once a second by default.
  int64_t energy_interval_ns = 1000000000;
  // Least time between two reads of each field (0: every sample). Slow-moving or costly fields
  // are read less often; rows in between carry NaN for them. See default_field_periods().
  std::vector<int64_t> field_period_ns = default_field_periods();
  static std::vector<int64_t> default_field_periods();
};

struct SamplerOutput {
  std::vector<int64_t> timestamps;
  std::vector<int32_t> device;
  std::vector<double> values;  // row-major, kNumFields per row
  std::vector<int64_t> energy_timestamps;
  std::vector<int32_t> energy_device;
  std::vector<double> energy_mj;
  uint64_t dropped = 0;
  uint64_t energy_dropped = 0;
  uint64_t missed_slots = 0;  // schedule slots skipped because a read overran
  uint64_t read_errors = 0;   // reads that failed with an error other than "not supported"
  std::vector<DeviceInfo> devices;
  std::vector<std::vector<std::string>> unavailable;
  std::string reason;  // "" when sampling stopped normally
  std::string backend;
  std::string library;
  int64_t start_ns = 0;
  int64_t stop_ns = 0;
  int64_t thread_cpu_ns = 0;         // CPU time of the fast sampling thread
  int64_t energy_thread_cpu_ns = 0;  // CPU time of the energy thread
};

// A fixed-capacity ring of rows; the oldest row is overwritten when full.
class SampleRing {
 public:
  SampleRing(size_t capacity, size_t width);
  void push(int64_t ts, int32_t device, const double* values);
  size_t size() const { return count_; }
  uint64_t dropped() const { return dropped_; }
  void copy_out(std::vector<int64_t>& ts, std::vector<int32_t>& dev, std::vector<double>& vals) const;
  void clear();

 private:
  size_t capacity_, width_;
  std::vector<int64_t> ts_;
  std::vector<int32_t> dev_;
  std::vector<double> vals_;
  size_t head_ = 0;  // next write position
  size_t count_ = 0;
  uint64_t dropped_ = 0;
};

class Sampler : private SamplerBackend::Sink {
 public:
  explicit Sampler(SamplerConfig config);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Starts the threads and waits until the backend is open (or failed to open: then the
  // sampler is already stopped and stop() reports the reason). Throws StateError if running.
  void start();
  // Stops and joins the threads (idempotent after start) and returns the samples.
  SamplerOutput stop();
  bool running() const { return running_; }
  size_t sample_count() const { return live_count_.load(std::memory_order_relaxed); }
  const SamplerConfig& config() const { return config_; }

 private:
  void fast_loop();
  void energy_loop();
  void record_energy(size_t device);
  void fail(const std::string& reason);
  // Sleeps until the absolute CLOCK_MONOTONIC time `deadline_ns`, waking early on stop.
  bool sleep_until(int64_t deadline_ns);
  void row(size_t device, int64_t ts, const double* values) override;
  void energy(size_t device, int64_t ts, double mj) override;

  SamplerConfig config_;
  std::unique_ptr<SamplerBackend> backend_;
  SampleRing ring_;
  SampleRing energy_ring_;
  std::thread fast_;
  std::thread energy_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> live_count_{0};
  std::mutex reason_mu_;
  std::string reason_;
  std::string backend_name_, library_;
  std::vector<DeviceInfo> infos_;
  uint64_t missed_ = 0;
  int64_t start_ns_ = 0, stop_ns_ = 0;
  int64_t fast_cpu_ns_ = 0, energy_cpu_ns_ = 0;
  bool running_ = false;
  bool energy_started_ = false;
  // start() waits on this until the fast thread has opened the backend.
  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  bool ready_ = false;
};

}  // namespace fastprof
