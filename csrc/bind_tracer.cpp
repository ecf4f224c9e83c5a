// Bindings of the kernel tracer: _core.KernelTracer (CUPTI backend) and _core.demangle.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bind_common.hpp"
#include "kernel_tracer.hpp"

namespace py = pybind11;

namespace fastprof::bind {
namespace {

template <typename T, typename Get>
py::array_t<T> column(const std::vector<TraceRecord>& recs, Get get) {
  py::array_t<T> out(static_cast<py::ssize_t>(recs.size()));
  T* p = out.mutable_data();
  for (size_t i = 0; i < recs.size(); ++i) p[i] = static_cast<T>(get(recs[i]));
  return out;
}

// Runs `fn`; a TraceUnavailable becomes fastprof.errors.KernelTraceUnavailable.
template <typename Fn>
auto guarded(Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const TraceUnavailable& e) {
    py::object cls = py::module_::import("fastprof.errors").attr("KernelTraceUnavailable");
    PyErr_SetObject(cls.ptr(), cls(std::string(e.what())).ptr());
    throw py::error_already_set();
  }
}

}  // namespace

void bind_tracer(py::module_& m) {
  py::class_<KernelTraceBackend>(m, "KernelTracer", R"doc(
Native GPU activity tracer (CUPTI): kernels (graph-launched ones included), memcpy and memset,
and with api=True the host's CUDA runtime and driver API calls, stamped on CLOCK_MONOTONIC. Use
fastprof.capture.kernel_trace.KernelTracer rather than this class.

KernelTracer(candidates, buffer_bytes=4 MiB, buffer_count=16, max_records=1<<20, timestamp_callback=True,
api=False) opens CUPTI (FASTPROF_CUPTI_LIBRARY, else the first candidate path that loads; LibraryError when none
does). Buffers come from a preallocated pool; when it runs dry CUPTI drops records and they are counted.
api=True adds CUPTI's runtime and driver API records (kind 3) of the launches, copies, memsets and
synchronising calls (api_mode 'selected'; 'all' where CUPTI cannot record single functions, or with
all_api=True): they cost the host extra time in every recorded call, so keep them out of timed iterations.
start() raises KernelTraceUnavailable when CUPTI refuses (another subscriber, no permission).
)doc")
      .def(py::init([](const std::vector<std::string>& candidates, size_t buffer_bytes, size_t buffer_count,
                       size_t max_records, bool timestamp_callback, bool api, bool all_api) {
             CuptiOptions opt;
             opt.candidates = candidates;
             opt.buffer_bytes = buffer_bytes;
             opt.buffer_count = buffer_count;
             opt.max_records = max_records;
             opt.use_timestamp_callback = timestamp_callback;
             opt.api_records = api;
             opt.all_api = all_api;
             return make_cupti_tracer(opt);
           }),
           py::arg("candidates"), py::arg("buffer_bytes") = size_t(4) << 20, py::arg("buffer_count") = 16,
           py::arg("max_records") = size_t(1) << 20, py::arg("timestamp_callback") = true,
           py::arg("api") = false, py::arg("all_api") = false)
      .def("start", [](KernelTraceBackend& t) { guarded([&] { t.start(); }); },
           "Begin recording. KernelTraceUnavailable when CUPTI refuses, StateError when already running.")
      .def("stop", [](KernelTraceBackend& t) {
             py::gil_scoped_release release;
             t.stop();
           }, "Stop recording and flush buffered records (synchronise the device first).")
      .def("flush", [](KernelTraceBackend& t) {
             py::gil_scoped_release release;
             t.flush();
           }, "Deliver the records CUPTI holds in its buffers now.")
      .def("take", [](KernelTraceBackend& t) {
             TraceData d;
             {
               py::gil_scoped_release release;
               d = t.take();
             }
             const auto& r = d.records;
             py::dict out;
             out["kind"] = column<uint8_t>(r, [](const TraceRecord& x) { return x.kind; });
             out["start_ns"] = column<int64_t>(r, [](const TraceRecord& x) { return x.start_ns; });
             out["end_ns"] = column<int64_t>(r, [](const TraceRecord& x) { return x.end_ns; });
             out["bytes"] = column<uint64_t>(r, [](const TraceRecord& x) { return x.bytes; });
             out["name_id"] = column<uint32_t>(r, [](const TraceRecord& x) { return x.name_id; });
             out["device"] = column<uint32_t>(r, [](const TraceRecord& x) { return x.device; });
             out["stream"] = column<uint32_t>(r, [](const TraceRecord& x) { return x.stream; });
             out["correlation"] = column<uint32_t>(r, [](const TraceRecord& x) { return x.correlation; });
             out["graph_id"] = column<uint32_t>(r, [](const TraceRecord& x) { return x.graph_id; });
             out["copy_kind"] = column<uint8_t>(r, [](const TraceRecord& x) { return x.copy_kind; });
             out["thread"] = column<uint32_t>(r, [](const TraceRecord& x) { return x.thread; });
             out["cbid"] = column<uint32_t>(r, [](const TraceRecord& x) { return x.cbid; });
             out["domain"] = column<uint8_t>(r, [](const TraceRecord& x) { return x.domain; });
             out["names"] = d.names;
             out["dropped_backend"] = d.dropped_backend;
             out["dropped_pool"] = d.dropped_pool;
             out["dropped_capacity"] = d.dropped_capacity;
             return out;
           },
           "The records so far as a dict of numpy columns (kind 0 kernel / 1 memcpy / 2 memset / 3 API call, start_ns, "
           "end_ns, bytes, name_id, device, stream, correlation, graph_id, copy_kind; for API calls thread, cbid and "
           "domain 1 driver / 2 runtime, 0 on device records), the name table `names` and the drop counts; clears "
           "them.")
      .def_property_readonly("running", &KernelTraceBackend::running)
      .def_property_readonly("backend", &KernelTraceBackend::backend_name)
      .def_property_readonly("library_path", &KernelTraceBackend::library_path)
      .def_property_readonly("timestamp_method", &KernelTraceBackend::timestamp_method,
                             "'callback' (CUPTI stamps with CLOCK_MONOTONIC), 'offset' (measured offset), or "
                             "'none' before the first start()")
      .def_property_readonly("clock_offset_ns", &KernelTraceBackend::clock_offset_ns)
      .def_property_readonly("api_mode", &KernelTraceBackend::api_mode,
                             "Which CUDA API calls are recorded: 'off', 'selected' or 'all'");

  m.def("demangle", &demangle, py::arg("name"),
        "Demangle an Itanium C++ ABI symbol (abi::__cxa_demangle); other names come back unchanged.");
}

}  // namespace fastprof::bind
