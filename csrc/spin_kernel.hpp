// A calibrated GPU spin kernel: one thread busy-waits on the GPU's nanosecond global timer for
// a requested duration. Shipped as PTX text and JIT-compiled by the CUDA driver when loaded, so
// neither the build nor the user needs a CUDA toolkit. Used by `fastprof selftest` to check
// device timing against a known duration.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "clock.hpp"
#include "device_api.hpp"
#include "errors.hpp"

namespace fastprof {

// The kernel's entry point, as named in kSpinPtx.
inline constexpr const char* kSpinEntry = "fastprof_spin";

// PTX ISA 7.0 (CUDA 11.0 drivers and later) for sm_70: the driver JIT-compiles it for any GPU
// from Volta on. One parameter, the duration in ns (u64). %globaltimer is the GPU's 64-bit
// nanosecond timer; the loop ends at the first reading at or past start + duration, so the spin
// overshoots by at most one timer update.
inline constexpr const char* kSpinPtx = R"ptx(//
// fastprof spin kernel: one thread spins on %globaltimer (ns) for the given duration.
//
.version 7.0
.target sm_70
.address_size 64

.visible .entry fastprof_spin(
	.param .u64 fastprof_spin_param_0
)
{
	.reg .pred 	%p<2>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [fastprof_spin_param_0];
	mov.u64 	%rd2, %globaltimer;
	add.s64 	%rd3, %rd2, %rd1;
$L__spin:
	mov.u64 	%rd4, %globaltimer;
	setp.lt.u64 	%p1, %rd4, %rd3;
	@%p1 bra 	$L__spin;
	ret;
}
)ptx";

// The spin kernel loaded into one device's primary context. Loading JIT-compiles the PTX
// (milliseconds, once); launch() queues one kernel of one thread and returns at once.
class SpinKernel {
 public:
  explicit SpinKernel(std::shared_ptr<DeviceApi> api) : api_(std::move(api)) {
    if (!api_) throw std::invalid_argument("the spin kernel needs a device");
    module_ = api_->load_module(kSpinPtx);
    try {
      function_ = api_->module_function(module_, kSpinEntry);
    } catch (...) {
      try {
        api_->unload_module(module_);
      } catch (...) {
      }
      module_ = nullptr;
      throw;
    }
  }
  ~SpinKernel() {
    // Errors are ignored: at interpreter exit the driver may already be shutting down.
    try {
      close();
    } catch (...) {
    }
  }
  SpinKernel(const SpinKernel&) = delete;
  SpinKernel& operator=(const SpinKernel&) = delete;

  // Queues a spin of `duration_ns` on `stream` (0: the legacy default stream).
  void launch(uint64_t duration_ns, uintptr_t stream) {
    if (!module_) throw StateError("the spin kernel has been closed");
    api_->bind();
    uint64_t duration = duration_ns;
    void* params[] = {&duration};
    api_->launch_single_thread(function_, reinterpret_cast<void*>(stream), params);
  }
  // Host-path calibration: `n` launches of a 0 ns spin on the legacy default stream, back to
  // back, each cuLaunchKernel call timed on its own (ns); one device synchronisation after them,
  // outside the timings, so the queue is drained on return.
  std::vector<int64_t> time_launches(size_t n) {
    check_timing(n);
    uint64_t duration = 0;
    void* params[] = {&duration};
    std::vector<int64_t> out(n);
    for (size_t i = 0; i < n; ++i) {
      const int64_t t0 = monotonic_ns();
      api_->launch_single_thread(function_, nullptr, params);
      out[i] = monotonic_ns() - t0;
    }
    api_->synchronize_device();
    return out;
  }
  // `n` round trips, each a launch of a 0 ns spin and a device synchronisation timed together
  // (ns): what the host pays to hand the GPU work and learn that it is done.
  std::vector<int64_t> time_roundtrips(size_t n) {
    check_timing(n);
    uint64_t duration = 0;
    void* params[] = {&duration};
    std::vector<int64_t> out(n);
    for (size_t i = 0; i < n; ++i) {
      const int64_t t0 = monotonic_ns();
      api_->launch_single_thread(function_, nullptr, params);
      api_->synchronize_device();
      out[i] = monotonic_ns() - t0;
    }
    return out;
  }
  // Unloads the module; later launches raise StateError.
  void close() {
    if (!module_) return;
    void* m = module_;
    module_ = nullptr;
    function_ = nullptr;
    api_->unload_module(m);
  }
  bool closed() const { return module_ == nullptr; }
  const std::shared_ptr<DeviceApi>& api() const { return api_; }

 private:
  void check_timing(size_t n) {
    if (!module_) throw StateError("the spin kernel has been closed");
    if (n < 1) throw std::invalid_argument("n must be at least 1");
    api_->bind();  // once, before the clock starts
  }

  std::shared_ptr<DeviceApi> api_;
  DeviceApi::Module module_ = nullptr;
  DeviceApi::Function function_ = nullptr;
};

}  // namespace fastprof
