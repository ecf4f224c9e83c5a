// Implementation of sampler.hpp (what it owns is written there).
#include "sampler.hpp"

#include <ctime>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "clock.hpp"
#include "errors.hpp"

namespace fastprof {

namespace {

constexpr int64_t kMinIntervalNs = 1000000;       // 1 ms
constexpr int64_t kMaxIntervalNs = 1000000000;    // 1 s
constexpr int64_t kStopCheckNs = 20000000;        // how often a sleeping thread looks at the stop flag
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int64_t thread_cpu_ns() {
  timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

void sleep_abs(int64_t t_ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(t_ns / 1000000000LL);
  ts.tv_nsec = static_cast<long>(t_ns % 1000000000LL);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

}  // namespace

const char* sample_field_name(int field) {
  static const char* names[kNumFields] = {
      "gpu_util_pct", "mem_util_pct",  "mem_used_bytes", "mem_total_bytes", "proc_mem_bytes",   "other_processes", "power_w",
      "power_avg_w",  "sm_clock_mhz",  "mem_clock_mhz",  "temperature_c",   "throttle_reasons",
      "dram_bw_util_pct", "sm_active_pct", "sm_occupancy_pct", "tensor_active_pct", "tensor_hmma_active_pct",
      "fp16_active_pct",
  };
  return (field >= 0 && field < kNumFields) ? names[field] : "?";
}

const char* gpm_field_names() {
  return "dram_bw_util_pct,sm_active_pct,sm_occupancy_pct,tensor_active_pct,tensor_hmma_active_pct,fp16_active_pct";
}

// ---- SampleRing ----

SampleRing::SampleRing(size_t capacity, size_t width)
    : capacity_(capacity), width_(width), ts_(capacity), dev_(capacity), vals_(capacity * width) {}

void SampleRing::push(int64_t ts, int32_t device, const double* values) {
  ts_[head_] = ts;
  dev_[head_] = device;
  std::copy(values, values + width_, vals_.begin() + static_cast<std::ptrdiff_t>(head_ * width_));
  head_ = (head_ + 1) % capacity_;
  if (count_ < capacity_) {
    ++count_;
  } else {
    ++dropped_;
  }
}

void SampleRing::copy_out(std::vector<int64_t>& ts, std::vector<int32_t>& dev, std::vector<double>& vals) const {
  ts.resize(count_);
  dev.resize(count_);
  vals.resize(count_ * width_);
  const size_t first = (head_ + capacity_ - count_) % capacity_;
  for (size_t i = 0; i < count_; ++i) {
    const size_t j = (first + i) % capacity_;
    ts[i] = ts_[j];
    dev[i] = dev_[j];
    std::copy(vals_.begin() + static_cast<std::ptrdiff_t>(j * width_),
              vals_.begin() + static_cast<std::ptrdiff_t>((j + 1) * width_),
              vals.begin() + static_cast<std::ptrdiff_t>(i * width_));
  }
}

void SampleRing::clear() {
  head_ = count_ = 0;
  dropped_ = 0;
}

// ---- Sampler ----

static SamplerConfig validated(SamplerConfig c) {
  if (c.interval_ns < kMinIntervalNs || c.interval_ns > kMaxIntervalNs)
    throw std::invalid_argument("sampling interval must be between 1 ms and 1 s, got " +
                                std::to_string(c.interval_ns) + " ns");
  if (c.max_samples < 1) throw std::invalid_argument("max_samples must be at least 1");
  if (c.max_samples > (size_t(1) << 28)) throw std::invalid_argument("max_samples must be at most 2**28");
  if (c.energy_interval_ns < kMinIntervalNs || c.energy_interval_ns > 60 * kMaxIntervalNs)
    throw std::invalid_argument("energy interval must be between 1 ms and 60 s");
  if (c.backend != "auto" && c.backend != "nvml" && c.backend != "amdsmi" && c.backend != "xpusmi")
    throw std::invalid_argument("unknown sampler backend '" + c.backend +
                                "'; expected 'auto', 'nvml', 'amdsmi' or 'xpusmi'");
  if (c.devices.empty()) throw std::invalid_argument("the sampler needs at least one device");
  return c;
}

static size_t energy_capacity(size_t max_samples) { return std::max<size_t>(4096, max_samples / 8); }

Sampler::Sampler(SamplerConfig config)
    : config_(validated(std::move(config))),
      ring_(config_.max_samples, kNumFields),
      energy_ring_(energy_capacity(config_.max_samples), 1) {}

Sampler::~Sampler() {
  if (running_) {
    try {
      stop();
    } catch (...) {
    }
  }
}

void Sampler::fail(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(reason_mu_);
    if (reason_.empty()) reason_ = reason;
  }
  stop_.store(true);
}

bool Sampler::sleep_until(int64_t deadline_ns) {
  // Absolute sleeps in slices, so stop() is answered within kStopCheckNs; the last slice ends
  // exactly at the deadline, so the schedule does not drift.
  for (;;) {
    if (stop_.load(std::memory_order_relaxed)) return false;
    const int64_t now = monotonic_ns();
    if (now >= deadline_ns) return true;
    sleep_abs(std::min(deadline_ns, now + kStopCheckNs));
  }
}

void Sampler::start() {
  if (running_) throw StateError("the sampler is already running; call stop() first");
  ring_.clear();
  energy_ring_.clear();
  live_count_ = 0;
  missed_ = 0;
  reason_.clear();
  infos_.clear();
  backend_.reset();
  backend_name_ = config_.backend;
  library_.clear();
  stop_ = false;
  ready_ = false;
  energy_started_ = false;
  fast_cpu_ns_ = energy_cpu_ns_ = 0;
  start_ns_ = monotonic_ns();
  stop_ns_ = 0;
  running_ = true;
  fast_ = std::thread([this] { fast_loop(); });
  {
    std::unique_lock<std::mutex> lock(ready_mu_);
    ready_cv_.wait(lock, [this] { return ready_; });
  }
  if (backend_ && !stop_.load() && !backend_->streaming()) {
    bool any_energy = false;
    for (size_t i = 0; i < backend_->device_count(); ++i) any_energy = any_energy || backend_->has_energy(i);
    if (any_energy) {
      energy_started_ = true;
      energy_ = std::thread([this] { energy_loop(); });
    }
  }
}

static std::unique_ptr<SamplerBackend> open_backend(const SamplerConfig& c, std::string& reason) {
  auto try_open = [&](std::unique_ptr<SamplerBackend> b) -> std::unique_ptr<SamplerBackend> {
    b->open(c.devices);
    return b;
  };
  try {
    if (c.backend == "nvml") return try_open(make_nvml_backend());
    if (c.backend == "amdsmi") return try_open(make_amdsmi_backend());
    if (c.backend == "xpusmi") return try_open(make_xpusmi_backend(c.interval_ns));
    // auto: the first library that loads decides; its own errors are then final.
    std::string tried;
    try {
      return try_open(make_nvml_backend());
    } catch (const LibraryError& e) {
      tried += std::string("\n") + e.what();
    }
    try {
      return try_open(make_amdsmi_backend());
    } catch (const LibraryError& e) {
      tried += std::string("\n") + e.what();
    }
    if (xpusmi_available()) return try_open(make_xpusmi_backend(c.interval_ns));
    reason = "no GPU management library found (NVML, AMD SMI or xpu-smi):" + tried +
             "\nxpu-smi: not found on PATH (set FASTPROF_XPU_SMI)";
  } catch (const std::exception& e) {
    reason = e.what();
  }
  return nullptr;
}

void append_comma_list(const std::string& list, std::vector<std::string>& out) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    out.push_back(list.substr(pos, comma - pos));
    pos = comma + 1;
  }
}

std::vector<int64_t> SamplerConfig::default_field_periods() {
  std::vector<int64_t> p(kNumFields, 0);
  p[kMemUsedBytes] = p[kMemTotalBytes] = 10000000;  // ~15 us a read on NVML (H100)
  p[kGpuUtilPct] = p[kMemUtilPct] = 10000000;      // the driver averages utilisation over many ms
  p[kProcMemBytes] = 100000000;                     // ~11 us, and it changes with allocations only
  p[kOtherProcesses] = 100000000;                   // the same query as kProcMemBytes
  p[kPowerAvgW] = 100000000;                        // a 1 s average: kPowerW is the live value
  p[kMemClockMHz] = 100000000;
  p[kTemperatureC] = 100000000;
  // GPM metrics are averages over the window between two samples, and NVML refreshes its GPM
  // counters about every 100 ms (its documentation asks for samples more than 100 ms apart; asked
  // for every 20 ms, an H100 gave values about every 107 ms): every 100 ms.
  for (int f = kFirstGpmField; f < kNumFields; ++f) p[static_cast<size_t>(f)] = 100000000;
  return p;
}

void Sampler::fast_loop() {
#if defined(__linux__)
  // Linux lets a normal thread's timers fire up to 50 us late (timer slack) to batch wake-ups;
  // at a 1 ms interval that is most of the jitter. 1 ns asks for the deadline as written.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
#endif
  std::string reason;
  std::unique_ptr<SamplerBackend> backend = open_backend(config_, reason);
  if (backend) {
    backend_name_ = backend->name();
    library_ = backend->library();
    for (size_t i = 0; i < backend->device_count(); ++i) infos_.push_back(backend->info(i));
  } else {
    fail(reason);
  }
  backend_ = std::move(backend);
  {
    std::lock_guard<std::mutex> lock(ready_mu_);
    ready_ = true;
  }
  ready_cv_.notify_all();
  if (!backend_) {
    fast_cpu_ns_ = thread_cpu_ns();
    return;
  }

  if (backend_->streaming()) {
    std::string r = backend_->stream(*this, stop_);
    if (!r.empty()) fail(r);
    fast_cpu_ns_ = thread_cpu_ns();
    return;
  }

  const size_t n = backend_->device_count();
  const int64_t interval = config_.interval_ns;
  double values[kNumFields];
  // Per device and field, when it was last read; a field is due once its period has passed
  // (less half an interval, so a 10 ms period at 1 ms reads every 10th sample, not every 11th).
  std::vector<int64_t> last(n * kNumFields, std::numeric_limits<int64_t>::min());
  const int64_t t0 = monotonic_ns();
  int64_t slot = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    for (size_t d = 0; d < n; ++d) {
      std::fill(values, values + kNumFields, kNaN);
      const int64_t before = monotonic_ns();
      uint32_t due = 0;
      for (int f = 0; f < kNumFields; ++f) {
        int64_t& l = last[d * kNumFields + static_cast<size_t>(f)];
        const int64_t period = config_.field_period_ns[static_cast<size_t>(f)];
        if (period <= 0 || l == std::numeric_limits<int64_t>::min() || before - l >= period - interval / 2) {
          due |= 1u << f;
          l = before;
        }
      }
      std::string why;
      const ReadStatus st = backend_->read(d, due, values, why);
      const int64_t ts = monotonic_ns();
      if (st == ReadStatus::Lost) {
        fail(why);
        break;
      }
      row(d, ts, values);
    }
    if (stop_.load(std::memory_order_relaxed)) break;
    ++slot;
    int64_t next = t0 + slot * interval;
    const int64_t now = monotonic_ns();
    if (now >= next) {
      // The reads overran the slot: skip to the next slot still ahead, keeping the phase.
      const int64_t behind = (now - t0) / interval + 1;
      missed_ += static_cast<uint64_t>(behind - slot);
      slot = behind;
      next = t0 + slot * interval;
    }
    if (!sleep_until(next)) break;
  }
  fast_cpu_ns_ = thread_cpu_ns();
}

void Sampler::record_energy(size_t d) {
  if (!backend_->has_energy(d)) return;
  double mj = kNaN;
  bool ok = false;
  std::string why;
  const ReadStatus st = backend_->read_energy(d, mj, ok, why);
  const int64_t ts = monotonic_ns();
  if (st == ReadStatus::Lost) {
    fail(why);
    return;
  }
  if (ok) energy(d, ts, mj);
}

void Sampler::energy_loop() {
  const size_t n = backend_->device_count();
  const int64_t interval = config_.energy_interval_ns;
  const int64_t t0 = monotonic_ns();
  int64_t slot = 0;
  bool lost = false;
  for (;;) {
    for (size_t d = 0; d < n && !lost; ++d) {
      record_energy(d);
      std::lock_guard<std::mutex> lock(reason_mu_);
      lost = !reason_.empty();
    }
    if (lost || stop_.load()) break;
    ++slot;
    int64_t next = t0 + slot * interval;
    const int64_t now = monotonic_ns();
    if (now >= next) {
      slot = (now - t0) / interval + 1;
      next = t0 + slot * interval;
    }
    if (!sleep_until(next)) break;
  }
  // One last reading at stop, so the series spans the whole run (not after a failure).
  if (!lost) {
    std::lock_guard<std::mutex> lock(reason_mu_);
    lost = !reason_.empty();
  }
  if (!lost)
    for (size_t d = 0; d < n; ++d) record_energy(d);
  energy_cpu_ns_ = thread_cpu_ns();
}

void Sampler::row(size_t device, int64_t ts, const double* values) {
  ring_.push(ts, static_cast<int32_t>(device), values);
  live_count_.store(ring_.size(), std::memory_order_relaxed);
}

void Sampler::energy(size_t device, int64_t ts, double mj) {
  energy_ring_.push(ts, static_cast<int32_t>(device), &mj);
}

SamplerOutput Sampler::stop() {
  if (!running_) throw StateError("the sampler is not running; call start() first");
  stop_.store(true);
  if (fast_.joinable()) fast_.join();
  if (energy_.joinable()) energy_.join();
  stop_ns_ = monotonic_ns();
  running_ = false;

  SamplerOutput out;
  ring_.copy_out(out.timestamps, out.device, out.values);
  std::vector<double> mj;
  energy_ring_.copy_out(out.energy_timestamps, out.energy_device, mj);
  out.energy_mj = std::move(mj);
  out.dropped = ring_.dropped();
  out.energy_dropped = energy_ring_.dropped();
  out.missed_slots = missed_;
  out.devices = infos_;
  if (backend_) {
    out.devices.clear();
    for (size_t i = 0; i < backend_->device_count(); ++i) {
      out.devices.push_back(backend_->info(i));  // power_source may have changed while sampling
      out.unavailable.push_back(backend_->unavailable(i));
    }
    out.read_errors = backend_->read_errors();
    backend_->close();
    backend_.reset();
  }
  {
    std::lock_guard<std::mutex> lock(reason_mu_);
    out.reason = reason_;
  }
  out.backend = backend_name_;
  out.library = library_;
  out.start_ns = start_ns_;
  out.stop_ns = stop_ns_;
  out.thread_cpu_ns = fast_cpu_ns_;
  out.energy_thread_cpu_ns = energy_cpu_ns_;
  return out;
}

}  // namespace fastprof
