// Bindings of the host span recorder: _core.HostSpans. Its mark() is a METH_O method descriptor
// rather than a pybind11 method: pybind11's dispatch (argument loaders, overload chain) costs
// several times the mark itself, and module hooks call it twice per module per forward pass.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "bind_common.hpp"
#include "host_spans.hpp"

namespace py = pybind11;

namespace fastprof::bind {
namespace {

// The HostSpans inside a pybind11 instance; nullptr before __init__ ran. The method descriptor
// has already checked that `self` is a HostSpans (or a subclass) instance.
HostSpans* spans_of(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  return static_cast<HostSpans*>(inst->get_value_and_holder().value_ptr());
}

PyObject* fast_mark(PyObject* self, PyObject* arg) {
  HostSpans* spans = spans_of(self);
  if (!spans) {
    PyErr_SetString(PyExc_TypeError, "HostSpans.mark on an uninitialised HostSpans");
    return nullptr;
  }
  int overflow = 0;
  const long long code = PyLong_AsLongLongAndOverflow(arg, &overflow);
  if (code == -1 && PyErr_Occurred()) return nullptr;
  if (overflow || code < INT32_MIN || code > INT32_MAX) {
    PyErr_SetString(PyExc_OverflowError, "HostSpans.mark: the code must fit in an int32");
    return nullptr;
  }
  spans->mark(static_cast<int32_t>(code));
  Py_RETURN_NONE;
}

PyMethodDef kMarkDef = {
    "mark", &fast_mark, METH_O,
    "mark(code: int) -> None\n\nStore (CLOCK_MONOTONIC ns now, code). Past the capacity the mark is counted in "
    "`dropped` instead. No allocation, no lock: call it from the measured thread only."};

}  // namespace

void bind_host_spans(py::module_& m) {
  py::class_<HostSpans> cls(m, "HostSpans", R"doc(
Host span marks for module enter/exit and generate-loop markers: mark(code) stores the
CLOCK_MONOTONIC time (ns) and an int32 code into storage preallocated for `capacity` marks.
Marks past the capacity are counted in `dropped`, never silently lost.

HostSpans(capacity): ValueError when capacity < 1. mark(code) takes no lock and allocates
nothing: call it from the measured thread only (take() and clear() between marks, or from a
thread holding the GIL). It costs about 55 ns per call from Python (a bound `mark` kept in a
local: 53 ns) on a 2-core Intel Xeon VM, of which the clock read is 32 ns there, and about
95 ns on an H200 host's Xeon under gVisor (clock read 45 ns). A pybind11 method call costs
about 100 ns on the VM before doing anything, so mark is a plain builtin method instead.
take() returns {"t_ns": int64 array, "code": int32 array, "dropped": int} and clears.
)doc");
  cls.def(py::init([](int64_t capacity) {
            if (capacity < 1) throw std::invalid_argument("HostSpans capacity must be at least 1, got " +
                                                          std::to_string(capacity));
            return new HostSpans(static_cast<size_t>(capacity));
          }),
          py::arg("capacity"))
      .def("take", [](HostSpans& s) {
             const size_t n = s.size();
             py::array_t<int32_t> code(static_cast<py::ssize_t>(n));
             if (n) std::memcpy(code.mutable_data(), s.codes(), n * sizeof(int32_t));
             py::dict out;
             out["t_ns"] = copy_array(s.t_ns(), n);
             out["code"] = code;
             out["dropped"] = s.dropped();
             s.clear();
             return out;
           },
           "The marks so far: {'t_ns': int64 array, 'code': int32 array, 'dropped': int}; clears them.")
      .def("clear", &HostSpans::clear, "Forget the marks and the dropped count.")
      .def_property_readonly("size", &HostSpans::size, "Marks stored.")
      .def_property_readonly("capacity", &HostSpans::capacity)
      .def_property_readonly("dropped", &HostSpans::dropped, "Marks past the capacity since the last take/clear.");

  PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), &kMarkDef);
  if (!descr) throw py::error_already_set();
  const int rc = PyObject_SetAttrString(cls.ptr(), "mark", descr);
  Py_DECREF(descr);
  if (rc != 0) throw py::error_already_set();
}

}  // namespace fastprof::bind
