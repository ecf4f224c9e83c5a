// Bindings of the self-test's native measurements: _core.measure_clock(), the spin kernel's PTX
// and _core.SpinKernel.
#include <pybind11/pybind11.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bind_common.hpp"
#include "clock.hpp"
#include "device_api.hpp"
#include "spin_kernel.hpp"

namespace py = pybind11;

namespace fastprof::bind {

void bind_selftest(py::module_& m) {
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

  m.def("spin_kernel_ptx", [] { return std::string(kSpinPtx); },
        "The PTX text of the spin kernel (entry fastprof_spin, one u64 parameter: the duration in ns).");

  py::class_<SpinKernel, std::shared_ptr<SpinKernel>>(m, "SpinKernel", R"doc(
A calibrated GPU spin: one thread busy-waits on the GPU's nanosecond global timer (%globaltimer)
for a requested duration. Shipped as PTX and JIT-compiled by the CUDA driver on load, so no CUDA
toolkit is needed. Used by `fastprof selftest` to check device timing against known durations.

SpinKernel(device_kind='cuda', ordinal=0): loads the module into the device's primary context
(CUDA driver only). launch(duration_ns, stream=0) queues one spin on the raw CUstream handle and
returns at once; close() unloads the module. time_launches(n) and time_roundtrips(n) calibrate the
host path: the cost of one kernel launch, and of a launch plus a device synchronisation (ns).
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
      .def("time_launches", [](SpinKernel& k, int64_t n) {
             if (n < 1) throw std::invalid_argument("n must be at least 1, got " + std::to_string(n));
             std::vector<int64_t> t;
             {
               py::gil_scoped_release release;
               t = k.time_launches(static_cast<size_t>(n));
             }
             return copy_array(t.data(), t.size());
           },
           py::arg("n"),
           "Launch a 0 ns spin n times back to back on the default stream, timing each cuLaunchKernel "
           "call (ns, int64 array); then synchronise the device once, outside the timings.")
      .def("time_roundtrips", [](SpinKernel& k, int64_t n) {
             if (n < 1) throw std::invalid_argument("n must be at least 1, got " + std::to_string(n));
             std::vector<int64_t> t;
             {
               py::gil_scoped_release release;
               t = k.time_roundtrips(static_cast<size_t>(n));
             }
             return copy_array(t.data(), t.size());
           },
           py::arg("n"),
           "n round trips, each a launch of a 0 ns spin followed by a device synchronisation, timed "
           "together (ns, int64 array).")
      .def("close", &SpinKernel::close, "Unload the module. Further launches raise StateError.")
      .def_property_readonly("closed", &SpinKernel::closed)
      .def_property_readonly("device_ordinal", [](const SpinKernel& k) { return k.api()->ordinal(); })
      .def_property_readonly("library_path", [](const SpinKernel& k) { return k.api()->library_path(); })
      .def_property_readonly_static("entry", [](py::object) { return std::string(kSpinEntry); });
}

}  // namespace fastprof::bind
