// The token recorder: per mark, one host timestamp and (with a device) one timing event.
//
// Layout: all storage is allocated up front (host timestamps, the event pool), so mark()
// allocates nothing, creates no Python object and never synchronises with the device.
// One iteration is begin() -> mark()* -> end(); end() synchronises once and resolves the
// device timestamps. The same recorder is reused for every iteration.
//
// Free device memory (optional, CUDA only, off by default): with track_device_memory(true), each
// host mark (mark(), mark_host()) also reads the driver's free device memory (cuMemGetInfo_v2)
// after its timestamp (and after its event), into an array allocated when tracking is turned on;
// begin() reads it once too. A drop between two marks is memory taken from the driver in that gap
// (by this process's caching allocator growing, or by anything else on the device). Its cost per
// mark is the driver call's: on the fake driver of the tests, about 0.1 us; on a real GPU, the
// cost of cuMemGetInfo_v2 (to be measured there: tests/gpu/test_allocator_gpu.py prints it).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device_api.hpp"
#include "clock.hpp"
#include "errors.hpp"

namespace fastprof {

class Recorder {
 public:
  // `api` may be null: host timestamps only. `stream` is the CUstream / hipStream_t the
  // events are recorded on (0: the legacy default stream).
  Recorder(size_t capacity, std::shared_ptr<DeviceApi> api, uintptr_t stream);
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  void begin();
  // Host timestamp and device event: the common case.
  inline void mark() {
    const int64_t now = monotonic_ns();
    if (!running_) not_running();
    if (host_count_ >= capacity_ || (api_ && device_count_ >= capacity_)) overflow();
    host_[host_count_++] = now;
    if (api_) record_token_event();
    if (track_mem_) read_free(host_count_ - 1);
  }
  // Host timestamp only (e.g. when the token reaches the host).
  inline void mark_host() {
    const int64_t now = monotonic_ns();
    if (!running_) not_running();
    if (host_count_ >= capacity_) overflow();
    host_[host_count_++] = now;
    if (track_mem_) read_free(host_count_ - 1);
  }
  // Device event only (e.g. right after a step's kernels are queued). No-op without a device.
  inline void mark_device() {
    if (!running_) not_running();
    if (!api_) return;
    if (device_count_ >= capacity_) overflow();
    record_token_event();
  }
  // Records the end event, synchronises the device, takes the host end timestamp and
  // resolves device timestamps. Safe to call after a CapacityError.
  void end();
  void synchronize() const;

  size_t capacity() const { return capacity_; }
  size_t host_count() const { return host_count_; }
  size_t device_count() const { return device_count_; }
  bool running() const { return running_; }
  bool has_device() const { return static_cast<bool>(api_); }
  bool overflowed() const { return overflowed_; }
  uintptr_t stream() const { return reinterpret_cast<uintptr_t>(stream_); }
  void set_stream(uintptr_t stream);
  const std::shared_ptr<DeviceApi>& api() const { return api_; }

  // Free device memory per host mark. Turning it on allocates its storage (never the marks);
  // only between iterations (StateError during one). Returns whether it is on: false, with
  // device_memory_reason(), where it cannot be (no device, HIP, a driver without cuMemGetInfo_v2).
  bool track_device_memory(bool on);
  bool tracking_device_memory() const { return track_mem_; }
  // Why free device memory cannot be read here; empty when it can.
  std::string device_memory_reason() const;
  // Whether the last iteration read free memory at its marks.
  bool device_memory_tracked() const { return mem_tracked_; }
  // Free bytes at each host mark of the last iteration (-1 where the driver call failed), and at
  // begin(); the driver's code of the first failed read (0: none failed).
  const int64_t* device_free() const { return free_.data(); }
  int64_t device_free_start() const { return free_start_; }
  int device_memory_error() const { return mem_error_; }

  // Results of the last completed iteration.
  int64_t host_start_ns() const;
  int64_t host_end_ns() const;
  const int64_t* host_marks() const { return host_.data(); }
  // Device times in ns relative to the start event (so the start is 0).
  const int64_t* device_marks() const { return device_.data(); }
  int64_t device_end_ns() const;

 private:
  inline void record_token_event() {
    if (int rc = api_->record_raw(events_[2 + device_count_], stream_)) api_->fail(api_->record_name(), rc);
    ++device_count_;
  }
  inline void read_free(size_t i) noexcept {
    size_t free_bytes = 0, total_bytes = 0;
    if (int rc = api_->mem_info_raw(&free_bytes, &total_bytes)) {
      free_[i] = -1;
      if (!mem_error_) mem_error_ = rc;
    } else {
      free_[i] = static_cast<int64_t>(free_bytes);
    }
  }
  [[noreturn]] void overflow();
  [[noreturn]] void not_running() const;
  void require_ended(const char* what) const;

  size_t capacity_;
  std::shared_ptr<DeviceApi> api_;
  void* stream_;
  std::vector<DeviceApi::Event> events_;  // [0] start, [1] end, [2..] tokens
  std::vector<int64_t> host_;
  std::vector<int64_t> device_;
  size_t host_count_ = 0;
  size_t device_count_ = 0;
  int64_t host_start_ = 0;
  int64_t host_end_ = 0;
  int64_t device_end_ = 0;
  bool running_ = false;
  bool ended_ = false;
  bool overflowed_ = false;
  bool track_mem_ = false;    // read free memory at the marks of the next iterations
  bool mem_tracked_ = false;  // the last iteration did
  std::vector<int64_t> free_;
  int64_t free_start_ = -1;
  int mem_error_ = 0;
};

}  // namespace fastprof
