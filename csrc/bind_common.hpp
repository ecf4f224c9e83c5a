// What every binding file shares: the translation of the core's C++ exceptions into the
// classes of fastprof.errors, device-kind parsing and array copies.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>
#include <string>

#include "device_api.hpp"

namespace fastprof::bind {

pybind11::array_t<int64_t> copy_array(const int64_t* data, size_t n);
DeviceKind parse_kind(const std::string& kind);
// Sets the Python error for a C++ exception of the core; anything else is rethrown for
// pybind11's own translators.
void translate_exception(std::exception_ptr p);

// One function per concern, each in its own file, called by the module definition (module.cpp).
void bind_recorder(pybind11::module_& m);   // bind_recorder.cpp: Recorder, device_info
void bind_sampler(pybind11::module_& m);    // bind_sampler.cpp: Sampler, sampler_fields
void bind_selftest(pybind11::module_& m);   // bind_selftest.cpp: measure_clock, SpinKernel
void bind_tracer(pybind11::module_& m);     // bind_tracer.cpp: KernelTracer, demangle
void bind_stalls(pybind11::module_& m);     // bind_stalls.cpp: SchedWatch

}  // namespace fastprof::bind
