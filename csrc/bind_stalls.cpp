// Bindings of the scheduler watch (_core.SchedWatch), the native half of stall recording.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bind_common.hpp"
#include "sched_watch.hpp"

namespace py = pybind11;

namespace fastprof::bind {

void bind_stalls(py::module_& m) {
  py::class_<SchedWatch>(m, "SchedWatch",
                         "SchedWatch(tid, interval_ns=1000000, capacity=65536): a native thread that records the "
                         "intervals in which thread `tid` of this process waited for a CPU or was switched out "
                         "involuntarily (/proc/self/task/<tid>/schedstat and status), on CLOCK_MONOTONIC.")
      .def(py::init<int64_t, int64_t, size_t>(), py::arg("tid"), py::arg("interval_ns") = 1000000,
           py::arg("capacity") = 65536)
      .def("start", &SchedWatch::start, py::call_guard<py::gil_scoped_release>(),
           "Starts the thread; False (see reason) when the files cannot be read.")
      .def("stop", &SchedWatch::stop, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("running", &SchedWatch::running)
      .def_property_readonly("reason", &SchedWatch::reason)
      .def_property_readonly("dropped", &SchedWatch::dropped)
      .def_property_readonly("reads", &SchedWatch::reads)
      .def_property_readonly("thread_cpu_ns", &SchedWatch::thread_cpu_ns)
      .def("intervals", [](const SchedWatch& w) {
        const auto rows = w.intervals();
        py::array_t<int64_t> out({static_cast<py::ssize_t>(rows.size()), static_cast<py::ssize_t>(4)});
        auto a = out.mutable_unchecked<2>();
        for (size_t i = 0; i < rows.size(); ++i) {
          a(i, 0) = rows[i].start_ns;
          a(i, 1) = rows[i].end_ns;
          a(i, 2) = rows[i].run_delay_ns;
          a(i, 3) = rows[i].nonvoluntary;
        }
        return out;
      }, "Rows (start_ns, end_ns, run_delay_ns, nonvoluntary_switches), one per interval in which a counter moved.");
}

}  // namespace fastprof::bind
