// The few GPU driver entry points the recorder needs, loaded at run time:
// the CUDA driver API (libcuda.so.1) on NVIDIA, the HIP runtime (libamdhip64.so) on AMD.
// Both share the same shapes for events, so one table of function pointers serves both.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace fastprof {

class DynLib;

enum class DeviceKind { Cuda, Hip };

class DeviceApi {
 public:
  using Event = void*;
  using Stream = void*;

  // Loads the driver (honouring FASTPROF_CUDA_LIBRARY / FASTPROF_HIP_LIBRARY), initialises it
  // and binds `ordinal` (a CUDA/HIP device ordinal as the frameworks number them).
  static std::shared_ptr<DeviceApi> open(DeviceKind kind, int ordinal);
  ~DeviceApi();

  DeviceKind kind() const { return kind_; }
  const char* kind_name() const { return kind_ == DeviceKind::Cuda ? "cuda" : "hip"; }
  int ordinal() const { return ordinal_; }
  const std::string& library_path() const;
  std::string device_name() const;
  int driver_version() const;

  // Makes this device (CUDA: its primary context) current on the calling thread, if it is not.
  void bind();

  Event create_event();
  void destroy_event(Event e) noexcept;
  // The hot path: one indirect call, no allocation; returns the driver's code (0 = success).
  int record_raw(Event e, Stream s) const noexcept { return record_(e, s); }
  void record(Event e, Stream s) const {
    if (int rc = record_(e, s)) fail(record_name(), rc);
  }
  void synchronize_event(Event e) const;
  void synchronize_device() const;
  // Milliseconds from a to b, as the driver reports them (float, about 0.5 us resolution).
  float elapsed_ms(Event a, Event b) const;

  // Kernel modules (CUDA driver only). The four entry points are optional at open(): a driver
  // that lacks one fails here, naming it, and only when a module is used.
  using Module = void*;
  using Function = void*;
  // Loads a module image (PTX text, JIT-compiled by the driver, or a cubin) into the context.
  Module load_module(const void* image);
  Function module_function(Module m, const char* name);
  // Launches `f` as one block of one thread on stream `s`; `params` as cuLaunchKernel takes them.
  void launch_single_thread(Function f, Stream s, void** params);
  void unload_module(Module m);

  // Free and total device memory (bytes) from the CUDA driver's cuMemGetInfo_v2, for the current
  // context. The entry point is optional at open(): mem_info_reason() says why it cannot be used
  // (empty when it can). The raw call returns the driver's code and allocates nothing.
  const std::string& mem_info_reason() const { return mem_info_reason_; }
  int mem_info_raw(size_t* free_bytes, size_t* total_bytes) const noexcept {
    return cu_mem_get_info_(free_bytes, total_bytes);
  }

  const char* record_name() const { return kind_ == DeviceKind::Cuda ? "cuEventRecord" : "hipEventRecord"; }
  // Throws DriverError for `call` returning `code`, with the driver's own name and description.
  [[noreturn]] void fail(const char* call, int code) const;

 private:
  DeviceApi(DeviceKind kind, int ordinal);
  void check(const char* call, int code) const {
    if (code != 0) fail(call, code);
  }
  void require_modules() const;

  DeviceKind kind_;
  int ordinal_;
  std::unique_ptr<DynLib> lib_;
  void* context_ = nullptr;  // CUDA: the retained primary context
  int device_ = 0;           // CUDA: CUdevice handle

  int (*record_)(void*, void*) = nullptr;
  int (*create_)(void**, unsigned) = nullptr;
  int (*destroy_)(void*) = nullptr;
  int (*sync_event_)(void*) = nullptr;
  int (*elapsed_)(float*, void*, void*) = nullptr;
  int (*sync_device_)() = nullptr;
  int (*driver_version_)(int*) = nullptr;
  // CUDA only
  int (*cu_init_)(unsigned) = nullptr;
  int (*cu_device_get_)(int*, int) = nullptr;
  int (*cu_primary_retain_)(void**, int) = nullptr;
  int (*cu_primary_release_)(int) = nullptr;
  int (*cu_ctx_get_)(void**) = nullptr;
  int (*cu_ctx_set_)(void*) = nullptr;
  int (*cu_error_name_)(int, const char**) = nullptr;
  int (*cu_error_string_)(int, const char**) = nullptr;
  int (*cu_device_name_)(char*, int, int) = nullptr;
  // CUDA only, optional (kernel modules)
  int (*cu_module_load_data_)(void**, const void*) = nullptr;
  int (*cu_module_get_function_)(void**, void*, const char*) = nullptr;
  int (*cu_launch_kernel_)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*,
                           void**, void**) = nullptr;
  int (*cu_module_unload_)(void*) = nullptr;
  // CUDA only, optional (free device memory)
  int (*cu_mem_get_info_)(size_t*, size_t*) = nullptr;
  std::string mem_info_reason_;
  // HIP only
  int (*hip_set_device_)(int) = nullptr;
  int (*hip_get_device_)(int*) = nullptr;
  const char* (*hip_error_name_)(int) = nullptr;
  const char* (*hip_error_string_)(int) = nullptr;
  int (*hip_device_name_)(char*, int, int) = nullptr;
};

}  // namespace fastprof
