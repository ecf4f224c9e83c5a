// Bindings of the token recorder: _core.Recorder (with its METH_NOARGS mark fast path) and
// _core.device_info().
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>

#include "bind_common.hpp"
#include "device_api.hpp"
#include "recorder.hpp"

namespace py = pybind11;

namespace fastprof::bind {
namespace {

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

void bind_recorder(py::module_& m) {
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
          "(None without a device). Valid after end().")
      .def("track_device_memory", &Recorder::track_device_memory, py::arg("on") = true,
           "Read the driver's free device memory (cuMemGetInfo_v2) at every host mark of the next iterations "
           "(on=False: stop). Returns whether it is on; False where it cannot be (see device_memory_reason). "
           "Only between iterations.")
      .def_property_readonly("tracking_device_memory", &Recorder::tracking_device_memory)
      .def_property_readonly("device_memory_reason",
                             [](const Recorder& r) -> py::object {
                               std::string why = r.device_memory_reason();
                               if (why.empty()) return py::none();
                               return py::str(why);
                             },
                             "Why free device memory cannot be read at the marks; None when it can.")
      .def_property_readonly("device_memory_error", &Recorder::device_memory_error,
                             "The driver's code of the last iteration's first failed free-memory read (0: none).")
      .def_property_readonly("device_free_start_bytes",
                             [](const Recorder& r) -> py::object {
                               if (!r.device_memory_tracked() || r.device_free_start() < 0) return py::none();
                               return py::int_(r.device_free_start());
                             },
                             "Free device memory at begin() of the last iteration (None when not read).")
      .def(
          "device_free_bytes",
          [](const Recorder& r) -> py::object {
            if (!r.device_memory_tracked()) return py::none();
            return copy_array(r.device_free(), r.host_count());
          },
          "Free device memory (bytes) at each host mark of the last iteration, as a new int64 array (-1 where "
          "the driver call failed); None when it was not tracked.");
}

}  // namespace fastprof::bind
