// Implementation of device_api.hpp (what it owns is written there).
#include "device_api.hpp"

#include "dynlib.hpp"
#include "errors.hpp"

namespace fastprof {

namespace {
constexpr unsigned kEventDefault = 0;  // CU_EVENT_DEFAULT / hipEventDefault: timing enabled
}

std::shared_ptr<DeviceApi> DeviceApi::open(DeviceKind kind, int ordinal) {
  if (ordinal < 0) throw std::invalid_argument("device ordinal must be >= 0");
  return std::shared_ptr<DeviceApi>(new DeviceApi(kind, ordinal));
}

DeviceApi::DeviceApi(DeviceKind kind, int ordinal) : kind_(kind), ordinal_(ordinal) {
  if (kind == DeviceKind::Cuda) {
    lib_ = std::make_unique<DynLib>("CUDA driver (libcuda)", "FASTPROF_CUDA_LIBRARY",
                                    std::vector<std::string>{"libcuda.so.1", "libcuda.so"});
    auto& l = *lib_;
    cu_init_ = l.fn<decltype(cu_init_)>({"cuInit"});
    cu_error_name_ = l.fn<decltype(cu_error_name_)>({"cuGetErrorName"});
    cu_error_string_ = l.fn<decltype(cu_error_string_)>({"cuGetErrorString"});
    cu_device_get_ = l.fn<decltype(cu_device_get_)>({"cuDeviceGet"});
    cu_device_name_ = l.fn<decltype(cu_device_name_)>({"cuDeviceGetName"});
    cu_primary_retain_ = l.fn<decltype(cu_primary_retain_)>({"cuDevicePrimaryCtxRetain"});
    cu_primary_release_ = l.fn<decltype(cu_primary_release_)>({"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"});
    cu_ctx_get_ = l.fn<decltype(cu_ctx_get_)>({"cuCtxGetCurrent"});
    cu_ctx_set_ = l.fn<decltype(cu_ctx_set_)>({"cuCtxSetCurrent"});
    driver_version_ = l.fn<decltype(driver_version_)>({"cuDriverGetVersion"});
    create_ = l.fn<decltype(create_)>({"cuEventCreate"});
    destroy_ = l.fn<decltype(destroy_)>({"cuEventDestroy_v2", "cuEventDestroy"});
    record_ = l.fn<decltype(record_)>({"cuEventRecord"});
    sync_event_ = l.fn<decltype(sync_event_)>({"cuEventSynchronize"});
    elapsed_ = l.fn<decltype(elapsed_)>({"cuEventElapsedTime_v2", "cuEventElapsedTime"});
    sync_device_ = l.fn<decltype(sync_device_)>({"cuCtxSynchronize"});
    cu_module_load_data_ = l.fn<decltype(cu_module_load_data_)>({"cuModuleLoadData"}, false);
    cu_module_get_function_ = l.fn<decltype(cu_module_get_function_)>({"cuModuleGetFunction"}, false);
    cu_launch_kernel_ = l.fn<decltype(cu_launch_kernel_)>({"cuLaunchKernel"}, false);
    cu_module_unload_ = l.fn<decltype(cu_module_unload_)>({"cuModuleUnload"}, false);
    cu_mem_get_info_ = l.fn<decltype(cu_mem_get_info_)>({"cuMemGetInfo_v2"}, false);
    if (!cu_mem_get_info_)
      mem_info_reason_ = "the CUDA driver (libcuda) at " + l.path() + " lacks the entry point cuMemGetInfo_v2";

    check("cuInit", cu_init_(0));
    check("cuDeviceGet", cu_device_get_(&device_, ordinal));
    check("cuDevicePrimaryCtxRetain", cu_primary_retain_(&context_, device_));
  } else {
    lib_ = std::make_unique<DynLib>("HIP runtime (libamdhip64)", "FASTPROF_HIP_LIBRARY",
                                    std::vector<std::string>{"libamdhip64.so", "libamdhip64.so.6",
                                                             "libamdhip64.so.7", "/opt/rocm/lib/libamdhip64.so"});
    auto& l = *lib_;
    hip_error_name_ = l.fn<decltype(hip_error_name_)>({"hipGetErrorName"});
    hip_error_string_ = l.fn<decltype(hip_error_string_)>({"hipGetErrorString"});
    hip_set_device_ = l.fn<decltype(hip_set_device_)>({"hipSetDevice"});
    hip_get_device_ = l.fn<decltype(hip_get_device_)>({"hipGetDevice"});
    hip_device_name_ = l.fn<decltype(hip_device_name_)>({"hipDeviceGetName"});
    driver_version_ = l.fn<decltype(driver_version_)>({"hipDriverGetVersion"});
    create_ = l.fn<decltype(create_)>({"hipEventCreateWithFlags"});
    destroy_ = l.fn<decltype(destroy_)>({"hipEventDestroy"});
    record_ = l.fn<decltype(record_)>({"hipEventRecord"});
    sync_event_ = l.fn<decltype(sync_event_)>({"hipEventSynchronize"});
    elapsed_ = l.fn<decltype(elapsed_)>({"hipEventElapsedTime"});
    sync_device_ = l.fn<decltype(sync_device_)>({"hipDeviceSynchronize"});
    mem_info_reason_ = "free device memory is read through the CUDA driver only, not the HIP runtime";
  }
  bind();
}

DeviceApi::~DeviceApi() {
  // Errors are ignored: at interpreter exit the driver may already be shutting down.
  if (kind_ == DeviceKind::Cuda && context_ && cu_primary_release_) cu_primary_release_(device_);
}

const std::string& DeviceApi::library_path() const { return lib_->path(); }

void DeviceApi::bind() {
  if (kind_ == DeviceKind::Cuda) {
    void* current = nullptr;
    check("cuCtxGetCurrent", cu_ctx_get_(&current));
    if (current != context_) check("cuCtxSetCurrent", cu_ctx_set_(context_));
  } else {
    int current = -1;
    check("hipGetDevice", hip_get_device_(&current));
    if (current != ordinal_) check("hipSetDevice", hip_set_device_(ordinal_));
  }
}

std::string DeviceApi::device_name() const {
  char buf[256] = {0};
  if (kind_ == DeviceKind::Cuda)
    check("cuDeviceGetName", cu_device_name_(buf, sizeof(buf) - 1, device_));
  else
    check("hipDeviceGetName", hip_device_name_(buf, sizeof(buf) - 1, ordinal_));
  return buf;
}

int DeviceApi::driver_version() const {
  int v = 0;
  check(kind_ == DeviceKind::Cuda ? "cuDriverGetVersion" : "hipDriverGetVersion", driver_version_(&v));
  return v;
}

DeviceApi::Event DeviceApi::create_event() {
  void* e = nullptr;
  check(kind_ == DeviceKind::Cuda ? "cuEventCreate" : "hipEventCreateWithFlags", create_(&e, kEventDefault));
  return e;
}

void DeviceApi::destroy_event(Event e) noexcept {
  if (e) destroy_(e);
}

void DeviceApi::synchronize_event(Event e) const {
  check(kind_ == DeviceKind::Cuda ? "cuEventSynchronize" : "hipEventSynchronize", sync_event_(e));
}

void DeviceApi::synchronize_device() const {
  check(kind_ == DeviceKind::Cuda ? "cuCtxSynchronize" : "hipDeviceSynchronize", sync_device_());
}

float DeviceApi::elapsed_ms(Event a, Event b) const {
  float ms = 0.0f;
  check(kind_ == DeviceKind::Cuda ? "cuEventElapsedTime" : "hipEventElapsedTime", elapsed_(&ms, a, b));
  return ms;
}

void DeviceApi::require_modules() const {
  if (kind_ != DeviceKind::Cuda)
    throw std::invalid_argument("kernel modules are only supported on the CUDA driver, not on " +
                                std::string(kind_name()));
  const char* missing = !cu_module_load_data_      ? "cuModuleLoadData"
                        : !cu_module_get_function_ ? "cuModuleGetFunction"
                        : !cu_launch_kernel_       ? "cuLaunchKernel"
                        : !cu_module_unload_       ? "cuModuleUnload"
                                                   : nullptr;
  if (missing)
    throw LibraryError(library_path(), "the CUDA driver (libcuda) at " + library_path() + " lacks the entry point " +
                                           missing + ", needed to load and launch a kernel; is it too old, "
                                           "or not the right library?");
}

DeviceApi::Module DeviceApi::load_module(const void* image) {
  require_modules();
  bind();
  void* m = nullptr;
  check("cuModuleLoadData", cu_module_load_data_(&m, image));
  return m;
}

DeviceApi::Function DeviceApi::module_function(Module m, const char* name) {
  require_modules();
  void* f = nullptr;
  check("cuModuleGetFunction", cu_module_get_function_(&f, m, name));
  return f;
}

void DeviceApi::launch_single_thread(Function f, Stream s, void** params) {
  require_modules();
  check("cuLaunchKernel", cu_launch_kernel_(f, 1, 1, 1, 1, 1, 1, 0, s, params, nullptr));
}

void DeviceApi::unload_module(Module m) {
  require_modules();
  if (!m) return;
  bind();
  check("cuModuleUnload", cu_module_unload_(m));
}

void DeviceApi::fail(const char* call, int code) const {
  std::string name = "UNKNOWN_ERROR";
  std::string description = "no description from the driver";
  if (kind_ == DeviceKind::Cuda) {
    const char* s = nullptr;
    if (cu_error_name_ && cu_error_name_(code, &s) == 0 && s) name = s;
    s = nullptr;
    if (cu_error_string_ && cu_error_string_(code, &s) == 0 && s) description = s;
  } else {
    if (hip_error_name_) {
      if (const char* s = hip_error_name_(code)) name = s;
    }
    if (hip_error_string_) {
      if (const char* s = hip_error_string_(code)) description = s;
    }
  }
  throw DriverError(call, code, name, description);
}

}  // namespace fastprof
