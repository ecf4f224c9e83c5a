#include "sched_watch.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "clock.hpp"
#include "errors.hpp"

namespace fastprof {

namespace {

// Reads a small /proc file into buf (NUL-terminated); false on failure.
bool slurp(const std::string& path, char* buf, size_t size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t n = 0;
  while (n + 1 < size) {
    const ssize_t r = ::read(fd, buf + n, size - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  ::close(fd);
  buf[n] = '\0';
  return n > 0;
}

int64_t thread_cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace

SchedWatch::SchedWatch(int64_t tid, int64_t interval_ns, size_t capacity)
    : tid_(tid), interval_ns_(interval_ns), buf_(capacity) {
  if (interval_ns < 100000 || interval_ns > 1000000000)
    throw std::invalid_argument("interval must be between 100 us and 1 s, got " + std::to_string(interval_ns) + " ns");
  if (capacity == 0) throw std::invalid_argument("capacity must be at least 1");
  const std::string base = "/proc/self/task/" + std::to_string(tid) + "/";
  schedstat_path_ = base + "schedstat";
  status_path_ = base + "status";
}

SchedWatch::~SchedWatch() { stop(); }

bool SchedWatch::read(int64_t& run_delay, int64_t& nonvoluntary, bool with_status) {
  char buf[2048];
  if (!slurp(schedstat_path_, buf, sizeof buf)) return false;
  // "<time on cpu ns> <run-queue wait ns> <timeslices>"
  char* end = nullptr;
  std::strtoll(buf, &end, 10);
  if (end == buf) return false;
  const char* p = end;
  run_delay = std::strtoll(p, &end, 10);
  if (end == p) return false;
  if (!with_status) return true;
  if (!slurp(status_path_, buf, sizeof buf)) return false;
  const char* key = std::strstr(buf, "nonvoluntary_ctxt_switches:");
  if (!key) return false;
  nonvoluntary = std::strtoll(key + std::strlen("nonvoluntary_ctxt_switches:"), nullptr, 10);
  return true;
}

bool SchedWatch::start() {
  if (running_) throw StateError("the scheduler watch is already running");
  count_ = 0;
  dropped_ = reads_ = 0;
  reason_.clear();
  if (!read(last_delay_, last_nonvol_, true)) {
    reason_ = "cannot read " + schedstat_path_ + " and " + status_path_ +
              " (no /proc, or a kernel without schedstats)";
    return false;
  }
  last_ts_ = monotonic_ns();
  stop_ = false;
  running_ = true;
  thread_ = std::thread([this] { loop(); });
  return true;
}

void SchedWatch::loop() {
  const int64_t cpu0 = thread_cpu_now();
  int64_t next = last_ts_ + interval_ns_;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_.load()) {
    const int64_t now = monotonic_ns();
    if (now < next) {
      cv_.wait_for(lock, std::chrono::nanoseconds(next - now));
      continue;
    }
    next += interval_ns_ * ((now - next) / interval_ns_ + 1);  // skip missed slots
    int64_t delay = 0, nonvol = last_nonvol_;
    const int64_t ts = monotonic_ns();
    // The status file (ten times larger) is read only when the run-queue delay moved: an
    // involuntary switch leaves the thread runnable, so it always adds run-queue delay.
    if (!read(delay, nonvol, false) || (delay != last_delay_ && !read(delay, nonvol, true))) {
      reason_ = "the watched thread ended";
      break;
    }
    ++reads_;
    if (delay != last_delay_ || nonvol != last_nonvol_) {
      if (count_ < buf_.size())
        buf_[count_++] = SchedInterval{last_ts_, ts, delay - last_delay_, nonvol - last_nonvol_};
      else
        ++dropped_;
    }
    last_ts_ = ts;
    last_delay_ = delay;
    last_nonvol_ = nonvol;
  }
  thread_cpu_ns_ = thread_cpu_now() - cpu0;
}

void SchedWatch::stop() {
  if (!running_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  running_ = false;
}

std::vector<SchedInterval> SchedWatch::intervals() const {
  if (running_) throw StateError("intervals() is only available after stop()");
  return std::vector<SchedInterval>(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(count_));
}

}  // namespace fastprof
