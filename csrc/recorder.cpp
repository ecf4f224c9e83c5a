// Implementation of recorder.hpp (what it owns is written there).
#include "recorder.hpp"

#include <cmath>
#include <string>

namespace fastprof {

Recorder::Recorder(size_t capacity, std::shared_ptr<DeviceApi> api, uintptr_t stream)
    : capacity_(capacity), api_(std::move(api)), stream_(reinterpret_cast<void*>(stream)) {
  if (capacity == 0) throw std::invalid_argument("capacity must be at least 1");
  host_.assign(capacity, 0);
  if (api_) {
    device_.assign(capacity, 0);
    api_->bind();
    events_.reserve(capacity + 2);
    try {
      for (size_t i = 0; i < capacity + 2; ++i) events_.push_back(api_->create_event());
    } catch (...) {
      for (auto e : events_) api_->destroy_event(e);
      throw;
    }
  }
}

Recorder::~Recorder() {
  if (api_)
    for (auto e : events_) api_->destroy_event(e);
}

void Recorder::set_stream(uintptr_t stream) {
  if (running_) throw StateError("cannot change the stream during an iteration; call end() first");
  stream_ = reinterpret_cast<void*>(stream);
}

void Recorder::begin() {
  if (running_) throw StateError("begin() called twice without end()");
  host_count_ = device_count_ = 0;
  host_end_ = device_end_ = 0;
  ended_ = overflowed_ = false;
  mem_tracked_ = track_mem_;
  mem_error_ = 0;
  free_start_ = -1;
  if (api_) {
    api_->bind();
    if (track_mem_) {
      size_t free_bytes = 0, total_bytes = 0;
      if (int rc = api_->mem_info_raw(&free_bytes, &total_bytes))
        mem_error_ = rc;
      else
        free_start_ = static_cast<int64_t>(free_bytes);
    }
    // Host start first, then the start event: both mark "the request was issued".
    host_start_ = monotonic_ns();
    api_->record(events_[0], stream_);
  } else {
    host_start_ = monotonic_ns();
  }
  running_ = true;
}

void Recorder::end() {
  if (!running_) throw StateError("end() called without begin()");
  running_ = false;
  if (api_) {
    try {
      api_->record(events_[1], stream_);
      api_->synchronize_device();
    } catch (...) {
      host_end_ = monotonic_ns();
      throw;
    }
    host_end_ = monotonic_ns();
    for (size_t i = 0; i < device_count_; ++i)
      device_[i] = std::llround(static_cast<double>(api_->elapsed_ms(events_[0], events_[2 + i])) * 1e6);
    device_end_ = std::llround(static_cast<double>(api_->elapsed_ms(events_[0], events_[1])) * 1e6);
  } else {
    host_end_ = monotonic_ns();
  }
  ended_ = true;
}

void Recorder::synchronize() const {
  if (api_) api_->synchronize_device();
}

std::string Recorder::device_memory_reason() const {
  if (!api_) return "this recorder has no device (host timestamps only)";
  return api_->mem_info_reason();
}

bool Recorder::track_device_memory(bool on) {
  if (running_) throw StateError("cannot change free-memory tracking during an iteration; call end() first");
  if (!on) {
    track_mem_ = false;
    return false;
  }
  if (!device_memory_reason().empty()) return false;
  if (free_.size() != capacity_) free_.assign(capacity_, -1);
  track_mem_ = true;
  return true;
}

void Recorder::overflow() {
  overflowed_ = true;
  throw CapacityError("recorder capacity of " + std::to_string(capacity_) +
                          " marks exceeded; the marks recorded so far are kept. "
                          "Create the recorder with a larger capacity.",
                      capacity_);
}

void Recorder::not_running() const {
  throw StateError("mark() outside an iteration: call begin() first");
}

void Recorder::require_ended(const char* what) const {
  if (!ended_) throw StateError(std::string(what) + " is only available after end()");
}

int64_t Recorder::host_start_ns() const {
  if (!running_ && !ended_) throw StateError("no iteration has begun");
  return host_start_;
}

int64_t Recorder::host_end_ns() const {
  require_ended("host_end_ns");
  return host_end_;
}

int64_t Recorder::device_end_ns() const {
  require_ended("device_end_ns");
  if (!api_) throw StateError("this recorder has no device");
  return device_end_;
}

}  // namespace fastprof
