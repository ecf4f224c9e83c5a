// The scheduler watch: a native thread that reads how long one thread of this process waited for
// a CPU (the run-queue delay of /proc/self/task/<tid>/schedstat) and how often it was switched
// out against its will (nonvoluntary_ctxt_switches of /proc/self/task/<tid>/status), on its own
// schedule, so that the watched thread (the one generating tokens) does no work for it.
//
// Only changes are kept: each time either counter moved since the previous read, one interval is
// stored: (previous read, this read, run-queue delay added, involuntary switches added), on
// CLOCK_MONOTONIC. Storage is allocated up front; intervals past capacity are counted as dropped.
// On systems without those files the watch reports itself unavailable with the reason.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace fastprof {

struct SchedInterval {
  int64_t start_ns;
  int64_t end_ns;
  int64_t run_delay_ns;     // time spent runnable but not running, added during the interval
  int64_t nonvoluntary;     // involuntary context switches added during the interval
};

class SchedWatch {
 public:
  SchedWatch(int64_t tid, int64_t interval_ns, size_t capacity);
  ~SchedWatch();
  SchedWatch(const SchedWatch&) = delete;
  SchedWatch& operator=(const SchedWatch&) = delete;

  // Starts the thread after one read of both files. False (with reason()) when they cannot be
  // read. Throws StateError when already running.
  bool start();
  // Stops and joins the thread (idempotent).
  void stop();
  bool running() const { return running_; }
  const std::string& reason() const { return reason_; }
  std::vector<SchedInterval> intervals() const;
  uint64_t dropped() const { return dropped_; }
  uint64_t reads() const { return reads_; }
  int64_t thread_cpu_ns() const { return thread_cpu_ns_; }

 private:
  bool read(int64_t& run_delay, int64_t& nonvoluntary, bool with_status);
  void loop();

  int64_t tid_, interval_ns_;
  std::string schedstat_path_, status_path_;
  std::vector<SchedInterval> buf_;
  size_t count_ = 0;
  uint64_t dropped_ = 0, reads_ = 0;
  int64_t thread_cpu_ns_ = 0;
  int64_t last_ts_ = 0, last_delay_ = 0, last_nonvol_ = 0;
  std::string reason_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  bool running_ = false;
};

}  // namespace fastprof
