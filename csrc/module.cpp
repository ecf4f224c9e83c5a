// The pybind11 module fastprof._core: the clock, the exception translation, and one call per
// concern into the binding files (recorder, sampler, self-test). Shared helpers live here too.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "bind_common.hpp"
#include "clock.hpp"
#include "errors.hpp"

namespace py = pybind11;

namespace fastprof::bind {

void bind_host_spans(py::module_& m);  // bind_host_spans.cpp: HostSpans

py::array_t<int64_t> copy_array(const int64_t* data, size_t n) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(n));
  if (n) std::memcpy(out.mutable_data(), data, n * sizeof(int64_t));
  return out;
}

DeviceKind parse_kind(const std::string& kind) {
  if (kind == "cuda") return DeviceKind::Cuda;
  if (kind == "hip") return DeviceKind::Hip;
  throw std::invalid_argument("unknown device kind '" + kind + "'; expected 'cuda' or 'hip'");
}

// Raises the Python exception class `name` of fastprof.errors, built with `args`.
template <typename... Args>
void raise_python(const char* name, Args&&... args) {
  py::object cls = py::module_::import("fastprof.errors").attr(name);
  py::object exc = cls(std::forward<Args>(args)...);
  PyErr_SetObject(cls.ptr(), exc.ptr());
}

// Sets the Python error for a C++ exception of the core (the classes of fastprof.errors).
// Anything else is rethrown for pybind11's own translators.
void translate_exception(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const DriverError& e) {
    raise_python("DriverError", e.call, e.code, e.name, e.description);
  } catch (const LibraryError& e) {
    raise_python("LibraryError", e.library, std::string(e.what()));
  } catch (const CapacityError& e) {
    raise_python("CapacityError", std::string(e.what()), e.capacity);
  } catch (const StateError& e) {
    raise_python("StateError", std::string(e.what()));
  }
}

}  // namespace fastprof::bind

PYBIND11_MODULE(_core, m) {
  using namespace fastprof;
  m.doc() = "fastprof native core: the monotonic clock, run-time GPU driver loading, the token recorder, "
            "the GPU sampler and the self-test's measurements.";

  py::register_exception_translator(&bind::translate_exception);

  m.def("monotonic_ns", &monotonic_ns,
        "CLOCK_MONOTONIC in integer nanoseconds: the clock of every fastprof timestamp "
        "(the same clock as time.perf_counter_ns() on Linux).");
  m.def("clock_resolution_ns", &monotonic_resolution_ns, "Resolution of CLOCK_MONOTONIC as clock_getres reports it.");

  bind::bind_recorder(m);
  bind::bind_sampler(m);
  bind::bind_selftest(m);
  bind::bind_tracer(m);
  bind::bind_stalls(m);
  bind::bind_host_spans(m);
}
