// Host span marks: a timestamp (CLOCK_MONOTONIC ns) and an int32 code per mark, written into
// storage allocated once up front. Python hooks (module forward pre/post hooks, generate-loop
// markers) call mark() on the measured thread; what each code means is the caller's business.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>

#include "clock.hpp"

namespace fastprof {

class HostSpans {
 public:
  explicit HostSpans(size_t capacity) : capacity_(capacity) {
    if (capacity == 0) throw std::invalid_argument("HostSpans needs a capacity of at least 1 mark");
    t_ns_.reset(new int64_t[capacity]);
    code_.reset(new int32_t[capacity]);
  }
  HostSpans(const HostSpans&) = delete;
  HostSpans& operator=(const HostSpans&) = delete;

  // The hot path: one clock read and two stores; no allocation, no lock. Marks come from one
  // thread (the measured one); take() and clear() must not run concurrently with mark() (in
  // Python both hold the GIL, which serialises them).
  void mark(int32_t code) noexcept {
    const int64_t now = monotonic_ns();
    if (size_ == capacity_) {
      ++dropped_;  // counted, never silent
      return;
    }
    t_ns_[size_] = now;
    code_[size_] = code;
    ++size_;
  }

  void clear() noexcept { size_ = dropped_ = 0; }

  const int64_t* t_ns() const { return t_ns_.get(); }
  const int32_t* codes() const { return code_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  uint64_t dropped() const { return dropped_; }

 private:
  size_t capacity_;
  size_t size_ = 0;
  uint64_t dropped_ = 0;
  std::unique_ptr<int64_t[]> t_ns_;
  std::unique_ptr<int32_t[]> code_;
};

}  // namespace fastprof
