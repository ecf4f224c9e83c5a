// The one clock of fastprof: CLOCK_MONOTONIC in integer nanoseconds.
// On Linux this is the clock behind Python's time.perf_counter_ns() and time.monotonic_ns().
#pragma once
#include <cstdint>
#include <ctime>

namespace fastprof {

inline int64_t monotonic_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline int64_t monotonic_resolution_ns() noexcept {
  timespec ts;
  clock_getres(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace fastprof
