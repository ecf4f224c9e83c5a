// The binding layer: one pybind11 module over the native core (clock, device API, recorder).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "clock.hpp"
#include "device_api.hpp"
#include "errors.hpp"
#include "recorder.hpp"
#include "spin_kernel.hpp"

namespace py = pybind11;
using namespace fastprof;

namespace {

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

// ---- the mark fast path -----------------------------------------------------------------
// pybind11's method dispatch costs about 100 ns a call; a builtin function with METH_NOARGS
// costs a third of that. Recorder.fast_marks() returns mark, mark_host and mark_device as such
// builtins, each bound to a capsule that shares ownership of the recorder, so a bound function
// kept after the recorder object is gone still points at live memory.
constexpr const char* kCapsuleName = "fastprof.Recorder";

Recorder* capsule_recorder(PyObject* capsule) {
  return static_cast<std::shared_ptr<Recorder>*>(PyCapsule_GetPointer(capsule, kCapsuleName))->get();
}

template <void (Recorder::*Method)()>
PyObject* fast_call(PyObject* capsule, PyObject*) {
  try {
    (capsule_recorder(capsule)->*Method)();
  } catch (...) {
    try {
      translate_exception(std::current_exception());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef kFastMethods[] = {
    {"mark", &fast_call<&Recorder::mark>, METH_NOARGS,
     "One token: host timestamp plus a device event (when a device is attached)."},
    {"mark_host", &fast_call<&Recorder::mark_host>, METH_NOARGS, "Host timestamp only."},
    {"mark_device", &fast_call<&Recorder::mark_device>, METH_NOARGS, "Device event only (no-op without a device)."},
};

py::tuple fast_marks(const std::shared_ptr<Recorder>& self) {
  auto* owner = new std::shared_ptr<Recorder>(self);
  py::object capsule = py::reinterpret_steal<py::object>(PyCapsule_New(owner, kCapsuleName, [](PyObject* c) {
    delete static_cast<std::shared_ptr<Recorder>*>(PyCapsule_GetPointer(c, kCapsuleName));
  }));
  if (!capsule) {
    delete owner;
    throw py::error_already_set();
  }
  py::tuple out(3);
  for (size_t i = 0; i < 3; ++i) {
    PyObject* fn = PyCFunction_New(&kFastMethods[i], capsule.ptr());
    if (!fn) throw py::error_already_set();
    out[i] = py::reinterpret_steal<py::object>(fn);
  }
  return out;
}

}  // namespace

void bind_sampler(pybind11::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastprof native core: the monotonic clock, run-time GPU driver loading and the token recorder.";

  py::register_exception_translator(&translate_exception);

  m.def("monotonic_ns", &monotonic_ns,
        "CLOCK_MONOTONIC in integer nanoseconds: the clock of every fastprof timestamp "
        "(the same clock as time.perf_counter_ns() on Linux).");
  m.def("clock_resolution_ns", &monotonic_resolution_ns, "Resolution of CLOCK_MONOTONIC as clock_getres reports it.");
  m.def(
      "measure_clock",
      [](size_t reads) {
        if (reads < 2) throw std::invalid_argument("reads must be at least 2");
        int64_t min_step = 0;
        size_t zero_steps = 0;
        int64_t t0, t1;
        {
          py::gil_scoped_release release;
          t0 = monotonic_ns();
          int64_t prev = t0;
          for (size_t i = 0; i < reads; ++i) {
            const int64_t now = monotonic_ns();
            const int64_t step = now - prev;
            if (step == 0)
              ++zero_steps;
            else if (step > 0 && (min_step == 0 || step < min_step))
              min_step = step;
            prev = now;
          }
          t1 = monotonic_ns();
        }
        py::dict d;
        d["reads"] = reads;
        d["read_cost_ns"] = static_cast<double>(t1 - t0) / static_cast<double>(reads);
        d["min_step_ns"] = min_step;
        d["zero_steps"] = zero_steps;
        d["resolution_ns"] = monotonic_resolution_ns();
        return d;
      },
      py::arg("reads") = 1000000,
      "Reads the clock `reads` times back to back in native code: the cost of one read (ns), the smallest "
      "non-zero step between two reads, how many steps were zero, and clock_getres's resolution.");

  m.def(
      "device_info",
      [](const std::string& kind, int ordinal) {
        auto api = DeviceApi::open(parse_kind(kind), ordinal);
        py::dict d;
        d["kind"] = api->kind_name();
        d["ordinal"] = api->ordinal();
        d["name"] = api->device_name();
        d["driver_version"] = api->driver_version();
        d["library"] = api->library_path();
        return d;
      },
      py::arg("kind"), py::arg("ordinal") = 0,
      "Opens the driver for one device and returns its name, driver version and the library path loaded.");

  py::class_<Recorder, std::shared_ptr<Recorder>>(m, "Recorder", R"doc(
Native per-token recorder. Prefer fastprof.TokenRecorder, which adds device resolution
from torch and returns a Trace.

Recorder(capacity, device_kind=None, ordinal=0, stream=0): device_kind is None (host
timestamps only), 'cuda' (CUDA driver API) or 'hip' (HIP runtime); stream is the raw
CUstream/hipStream_t handle the events are recorded on.
)doc")
      .def(py::init([](size_t capacity, std::optional<std::string> device_kind, int ordinal, uintptr_t stream) {
             std::shared_ptr<DeviceApi> api;
             if (device_kind) api = DeviceApi::open(parse_kind(*device_kind), ordinal);
             return std::make_shared<Recorder>(capacity, std::move(api), stream);
           }),
           py::arg("capacity"), py::arg("device_kind") = py::none(), py::arg("ordinal") = 0, py::arg("stream") = 0)
      .def("begin", &Recorder::begin, "Start an iteration: reset the marks, take the host start time and record the start event.")
      .def("mark", &Recorder::mark, "One token: host timestamp plus a device event (when a device is attached).")
      .def("mark_host", &Recorder::mark_host, "Host timestamp only.")
      .def("mark_device", &Recorder::mark_device, "Device event only (no-op without a device).")
      .def("fast_marks", &fast_marks,
           "(mark, mark_host, mark_device) as builtin functions bound to this recorder: the same methods "
           "with about a third of the call overhead.")
      .def("end", &Recorder::end, py::call_guard<py::gil_scoped_release>(),
           "End the iteration: record the end event, synchronise the device once, take the host end time and "
           "resolve the device timestamps.")
      .def("synchronize", &Recorder::synchronize, py::call_guard<py::gil_scoped_release>(),
           "Synchronise the device (no-op without one).")
      .def_property_readonly("capacity", &Recorder::capacity)
      .def_property_readonly("host_count", &Recorder::host_count)
      .def_property_readonly("device_count", &Recorder::device_count)
      .def_property_readonly("running", &Recorder::running)
      .def_property_readonly("has_device", &Recorder::has_device)
      .def_property_readonly("overflowed", &Recorder::overflowed)
      .def_property("stream", &Recorder::stream, &Recorder::set_stream)
      .def_property_readonly("device_kind",
                             [](const Recorder& r) -> py::object {
                               if (!r.api()) return py::none();
                               return py::str(r.api()->kind_name());
                             })
      .def_property_readonly("device_ordinal",
                             [](const Recorder& r) -> py::object {
                               if (!r.api()) return py::none();
                               return py::int_(r.api()->ordinal());
                             })
      .def_property_readonly("library_path",
                             [](const Recorder& r) -> py::object {
                               if (!r.api()) return py::none();
                               return py::str(r.api()->library_path());
                             })
      .def_property_readonly("host_start_ns", &Recorder::host_start_ns)
      .def_property_readonly("host_end_ns", &Recorder::host_end_ns)
      .def_property_readonly("device_end_ns", &Recorder::device_end_ns)
      .def("host_marks", [](const Recorder& r) { return copy_array(r.host_marks(), r.host_count()); },
           "Host timestamps of the marks (absolute CLOCK_MONOTONIC ns), as a new int64 array.")
      .def(
          "device_marks",
          [](const Recorder& r) -> py::object {
            if (!r.has_device()) return py::none();
            return copy_array(r.device_marks(), r.device_count());
          },
          "Device timestamps of the marks in ns relative to the start event, as a new int64 array "
          "(None without a device). Valid after end().");

  m.def("spin_kernel_ptx", [] { return std::string(kSpinPtx); },
        "The PTX text of the spin kernel (entry fastprof_spin, one u64 parameter: the duration in ns).");

  py::class_<SpinKernel, std::shared_ptr<SpinKernel>>(m, "SpinKernel", R"doc(
A calibrated GPU spin: one thread busy-waits on the GPU's nanosecond global timer (%globaltimer)
for a requested duration. Shipped as PTX and JIT-compiled by the CUDA driver on load, so no CUDA
toolkit is needed. Used by `fastprof selftest` to check device timing against known durations.

SpinKernel(device_kind='cuda', ordinal=0): loads the module into the device's primary context
(CUDA driver only). launch(duration_ns, stream=0) queues one spin on the raw CUstream handle and
returns at once; close() unloads the module.
)doc")
      .def(py::init([](const std::string& device_kind, int ordinal) {
             const DeviceKind kind = parse_kind(device_kind);
             if (kind != DeviceKind::Cuda)
               throw std::invalid_argument("the spin kernel is PTX and needs the CUDA driver; got device kind '" +
                                           device_kind + "'");
             return std::make_shared<SpinKernel>(DeviceApi::open(kind, ordinal));
           }),
           py::arg("device_kind") = "cuda", py::arg("ordinal") = 0)
      .def("launch", &SpinKernel::launch, py::arg("duration_ns"), py::arg("stream") = 0,
           "Queue one spin of duration_ns nanoseconds on `stream` (a raw CUstream handle; 0: the legacy "
           "default stream). Returns without waiting.")
      .def("close", &SpinKernel::close, "Unload the module. Further launches raise StateError.")
      .def_property_readonly("closed", &SpinKernel::closed)
      .def_property_readonly("device_ordinal", [](const SpinKernel& k) { return k.api()->ordinal(); })
      .def_property_readonly("library_path", [](const SpinKernel& k) { return k.api()->library_path(); })
      .def_property_readonly_static("entry", [](py::object) { return std::string(kSpinEntry); });

  bind_sampler(m);
}
