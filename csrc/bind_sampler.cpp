// Bindings of the GPU sampler: _core.Sampler and _core.sampler_fields().
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>

#include "bind_common.hpp"
#include "sampler.hpp"

namespace py = pybind11;

namespace fastprof::bind {
namespace {

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
  py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
  return out;
}

py::dict to_dict(const SamplerOutput& o) {
  py::dict d;
  const size_t n = o.timestamps.size();
  d["timestamps_ns"] = to_array(o.timestamps);
  d["device"] = to_array(o.device);
  py::dict fields;
  for (int f = 0; f < kNumFields; ++f) {
    py::array_t<double> col(static_cast<py::ssize_t>(n));
    double* p = col.mutable_data();
    for (size_t i = 0; i < n; ++i) p[i] = o.values[i * kNumFields + static_cast<size_t>(f)];
    fields[sample_field_name(f)] = col;
  }
  d["fields"] = fields;
  py::dict energy;
  energy["timestamps_ns"] = to_array(o.energy_timestamps);
  energy["device"] = to_array(o.energy_device);
  energy["energy_mj"] = to_array(o.energy_mj);
  d["energy"] = energy;
  d["dropped"] = o.dropped;
  d["energy_dropped"] = o.energy_dropped;
  d["missed_slots"] = o.missed_slots;
  d["read_errors"] = o.read_errors;
  py::list devices;
  for (const auto& info : o.devices) {
    py::dict di;
    di["identifier"] = info.identifier;
    di["name"] = info.name;
    di["uuid"] = info.uuid;
    di["power_source"] = info.power_source;
    devices.append(di);
  }
  d["devices"] = devices;
  d["unavailable"] = o.unavailable;
  d["reason"] = o.reason.empty() ? py::object(py::none()) : py::object(py::str(o.reason));
  d["backend"] = o.backend;
  d["library"] = o.library;
  d["start_ns"] = o.start_ns;
  d["stop_ns"] = o.stop_ns;
  d["thread_cpu_ns"] = o.thread_cpu_ns;
  d["energy_thread_cpu_ns"] = o.energy_thread_cpu_ns;
  return d;
}

}  // namespace

void bind_sampler(py::module_& m) {
  m.def("sampler_fields", [] {
    std::vector<std::string> names;
    for (int f = 0; f < kNumFields; ++f) names.push_back(sample_field_name(f));
    return names;
  }, "Names of the per-sample fields, in column order.");

  py::class_<Sampler>(m, "Sampler", R"doc(
Native GPU sampler. Prefer fastprof.sampler.Sampler, which maps CUDA ordinals to NVML devices
and returns a SamplerResult.

Sampler(backend, devices, interval_ns, max_samples, energy_interval_ns, field_periods_ns): backend
is 'auto', 'nvml', 'amdsmi' or 'xpusmi'; devices are NVML identifiers (UUID, PCI bus id, index)
or, for the other backends, indices; field_periods_ns (one per sampler_fields(), None for the
defaults) is the least time between two reads of each field.
)doc")
      .def(py::init([](const std::string& backend, const std::vector<std::string>& devices, int64_t interval_ns,
                       size_t max_samples, int64_t energy_interval_ns,
                       std::optional<std::vector<int64_t>> field_periods_ns) {
             SamplerConfig c;
             if (field_periods_ns) {
               if (field_periods_ns->size() != static_cast<size_t>(kNumFields))
                 throw std::invalid_argument("field_periods_ns needs one period per sampler field");
               c.field_period_ns = *field_periods_ns;
             }
             c.backend = backend;
             c.devices = devices;
             c.interval_ns = interval_ns;
             c.max_samples = max_samples;
             c.energy_interval_ns = energy_interval_ns;
             return std::make_unique<Sampler>(std::move(c));
           }),
           py::arg("backend") = "auto", py::arg("devices") = std::vector<std::string>{"0"},
           py::arg("interval_ns") = 10000000, py::arg("max_samples") = size_t(1) << 18,
           py::arg("energy_interval_ns") = 1000000000, py::arg("field_periods_ns") = py::none())
      .def_property_readonly("field_periods_ns", [](const Sampler& s) { return s.config().field_period_ns; })
      .def("start", &Sampler::start, py::call_guard<py::gil_scoped_release>(),
           "Start sampling; returns once the library is open (or failed to open: stop() gives the reason).")
      .def(
          "stop",
          [](Sampler& s) {
            SamplerOutput out;
            {
              py::gil_scoped_release release;
              out = s.stop();
            }
            return to_dict(out);
          },
          "Stop, join the sampling threads and return the samples as a dict of numpy arrays.")
      .def_property_readonly("running", &Sampler::running)
      .def_property_readonly("sample_count", &Sampler::sample_count)
      .def_property_readonly("interval_ns", [](const Sampler& s) { return s.config().interval_ns; })
      .def_property_readonly("max_samples", [](const Sampler& s) { return s.config().max_samples; })
      .def_property_readonly("backend", [](const Sampler& s) { return s.config().backend; })
      .def_property_readonly("devices", [](const Sampler& s) { return s.config().devices; });
}

}  // namespace fastprof::bind
