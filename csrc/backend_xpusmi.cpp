// Intel GPUs through the xpu-smi tool: one long-running `xpu-smi dump` child whose CSV output
// is parsed line by line on the sampler thread. The child is killed and reaped at stop.
//
// `xpu-smi dump -d <ids> -m 0,1,2,3,5,8,18 -i 1` prints a header naming the columns
// ("Timestamp, DeviceId, GPU Utilization (%), GPU Power (W), ...") and then one row per device
// per interval; "N/A" marks a value the device does not report. Columns are matched by name.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "clock.hpp"
#include "sampler.hpp"

extern char** environ;

namespace fastprof {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kEnergyColumn = -2;

std::string executable() {
  const char* e = std::getenv("FASTPROF_XPU_SMI");
  return (e && *e) ? std::string(e) : std::string("xpu-smi");
}

bool on_path(const std::string& exe) {
  if (exe.find('/') != std::string::npos) return access(exe.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::string p = path;
  size_t pos = 0;
  while (pos <= p.size()) {
    size_t colon = p.find(':', pos);
    if (colon == std::string::npos) colon = p.size();
    std::string dir = p.substr(pos, colon - pos);
    if (dir.empty()) dir = ".";
    if (access((dir + "/" + exe).c_str(), X_OK) == 0) return true;
    pos = colon + 1;
  }
  return false;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return std::string();
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= line.size()) {
    size_t comma = line.find(',', pos);
    if (comma == std::string::npos) comma = line.size();
    out.push_back(trim(line.substr(pos, comma - pos)));
    pos = comma + 1;
  }
  return out;
}

// Which sample field a dump column feeds, and its scale; -1: ignored.
int column_field(const std::string& header, double& scale) {
  scale = 1.0;
  auto has = [&](const char* s) { return header.find(s) != std::string::npos; };
  if (has("GPU Utilization")) return kGpuUtilPct;
  if (has("GPU Memory Utilization")) return kMemUtilPct;
  if (has("GPU Memory Used")) {
    scale = 1048576.0;  // MiB
    return kMemUsedBytes;
  }
  if (has("GPU Power")) return kPowerW;
  if (has("GPU Frequency")) return kSmClockMHz;
  if (has("GPU Core Temperature")) return kTemperatureC;
  if (has("GPU Energy Consumed")) {
    scale = 1000.0;  // J -> mJ
    return kEnergyColumn;
  }
  return -1;
}

class XpuSmiBackend final : public SamplerBackend {
 public:
  explicit XpuSmiBackend(int64_t interval_ns) : interval_ns_(interval_ns) {}
  const char* name() const override { return "xpusmi"; }
  std::string library() const override { return exe_; }

  void open(const std::vector<std::string>& devices) override {
    exe_ = executable();
    if (!on_path(exe_))
      throw std::runtime_error("could not find the xpu-smi executable '" + exe_ +
                               "'; install XPU Manager, or set FASTPROF_XPU_SMI to its full path");
    std::string ids;
    for (const auto& id : devices) {
      size_t used = 0;
      long v = -1;
      try {
        v = std::stol(id, &used);
      } catch (const std::exception&) {
      }
      if (v < 0 || used != id.size()) throw std::invalid_argument("xpu-smi device '" + id + "' must be an index");
      ids += (ids.empty() ? "" : ",") + id;
      DeviceInfo info;
      info.identifier = id;
      info.power_source = "instant";
      infos_.push_back(info);
      seen_.push_back({});
    }
    // xpu-smi dumps at whole seconds at best; shorter sampler intervals still get 1 s.
    const long seconds = std::max<long>(1, static_cast<long>(interval_ns_ / 1000000000LL));
    args_ = {exe_, "dump", "-d", ids, "-m", "0,1,2,3,5,8,18", "-i", std::to_string(seconds)};
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe failed: ") + std::strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    std::vector<char*> argv;
    for (auto& a : args_) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, exe_.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      pid_ = -1;
      throw std::runtime_error("could not run " + exe_ + ": " + std::strerror(rc));
    }
    fd_ = fds[0];
  }

  size_t device_count() const override { return infos_.size(); }
  DeviceInfo info(size_t i) const override { return infos_[i]; }
  ReadStatus read(size_t, uint32_t, double*, std::string&) override { return ReadStatus::Ok; }
  bool has_energy(size_t) const override { return false; }
  ReadStatus read_energy(size_t, double&, bool& got, std::string&) override {
    got = false;
    return ReadStatus::Ok;
  }
  bool streaming() const override { return true; }

  std::string stream(Sink& sink, const std::atomic<bool>& stop) override {
    std::string buf;
    char chunk[4096];
    while (!stop.load(std::memory_order_relaxed)) {
      pollfd p{fd_, POLLIN, 0};
      const int r = poll(&p, 1, 20);
      if (r < 0) {
        if (errno == EINTR) continue;
        return std::string("poll on xpu-smi output failed: ") + std::strerror(errno);
      }
      if (r == 0) continue;
      const ssize_t n = ::read(fd_, chunk, sizeof(chunk));
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return std::string("reading xpu-smi output failed: ") + std::strerror(errno);
      }
      if (n == 0) return ended();
      buf.append(chunk, static_cast<size_t>(n));
      size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        parse(line, sink);
      }
    }
    return std::string();
  }

  std::vector<std::string> unavailable(size_t i) const override {
    std::vector<std::string> names = {"mem_total_bytes", "proc_mem_bytes", "other_processes", "power_avg_w", "mem_clock_mhz",
                                      "throttle_reasons"};
    append_comma_list(gpm_field_names(), names);
    const char* streamed[] = {"gpu_util_pct", "mem_util_pct", "mem_used_bytes", "power_w", "sm_clock_mhz",
                              "temperature_c"};
    const int fields[] = {kGpuUtilPct, kMemUtilPct, kMemUsedBytes, kPowerW, kSmClockMHz, kTemperatureC};
    for (int k = 0; k < 6; ++k)
      if (!seen_[i].value[fields[k]]) names.push_back(streamed[k]);
    if (!seen_[i].energy) names.push_back("energy_mj");
    return names;
  }

  uint64_t read_errors() const override { return errors_; }

  void close() noexcept override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      const int64_t deadline = monotonic_ns() + 1000000000LL;
      pid_t done = 0;
      while ((done = waitpid(pid_, &status, WNOHANG)) == 0 && monotonic_ns() < deadline) usleep(5000);
      if (done == 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
      pid_ = -1;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~XpuSmiBackend() override { close(); }

 private:
  struct Seen {
    bool value[kNumFields] = {};
    bool energy = false;
  };

  std::string ended() {
    std::string why = exe_ + " exited";
    if (pid_ > 0) {
      int status = 0;
      if (waitpid(pid_, &status, 0) == pid_) {
        if (WIFEXITED(status)) why += " with status " + std::to_string(WEXITSTATUS(status));
        if (WIFSIGNALED(status)) why += " on signal " + std::to_string(WTERMSIG(status));
        pid_ = -1;
      }
    }
    if (!last_other_.empty()) why += ": " + last_other_;
    return why;
  }

  void parse(const std::string& raw, Sink& sink) {
    const std::string line = trim(raw);
    if (line.empty()) return;
    std::vector<std::string> cols = split_csv(line);
    if (cols[0] == "Timestamp") {
      fields_.clear();
      scales_.clear();
      for (const auto& h : cols) {
        double scale;
        fields_.push_back(column_field(h, scale));
        scales_.push_back(scale);
      }
      device_col_ = -1;
      for (size_t k = 0; k < cols.size(); ++k)
        if (cols[k] == "DeviceId") device_col_ = static_cast<int>(k);
      return;
    }
    if (fields_.empty() || device_col_ < 0 || cols.size() != fields_.size()) {
      last_other_ = line;  // an error message, most likely
      return;
    }
    const int64_t ts = monotonic_ns();
    size_t device = infos_.size();
    for (size_t i = 0; i < infos_.size(); ++i)
      if (infos_[i].identifier == cols[static_cast<size_t>(device_col_)]) device = i;
    if (device == infos_.size()) {
      ++errors_;
      return;
    }
    double values[kNumFields];
    for (double& v : values) v = kNaN;
    for (size_t k = 0; k < cols.size(); ++k) {
      const int f = fields_[k];
      if (f == -1) continue;
      char* end = nullptr;
      const double v = std::strtod(cols[k].c_str(), &end);
      if (end == cols[k].c_str() || *end != '\0') continue;  // N/A
      if (f == kEnergyColumn) {
        sink.energy(device, ts, v * scales_[k]);
        seen_[device].energy = true;
      } else {
        values[f] = v * scales_[k];
        seen_[device].value[f] = true;
      }
    }
    sink.row(device, ts, values);
  }

  int64_t interval_ns_;
  std::string exe_;
  std::vector<std::string> args_;
  std::vector<DeviceInfo> infos_;
  std::vector<Seen> seen_;
  std::vector<int> fields_;
  std::vector<double> scales_;
  int device_col_ = -1;
  std::string last_other_;
  pid_t pid_ = -1;
  int fd_ = -1;
  uint64_t errors_ = 0;
};

}  // namespace

bool xpusmi_available() { return on_path(executable()); }

std::unique_ptr<SamplerBackend> make_xpusmi_backend(int64_t interval_ns) {
  return std::make_unique<XpuSmiBackend>(interval_ns);
}

}  // namespace fastprof
