// C++ exceptions of the native core. The binding layer turns each into the Python exception
// of the same name in fastprof.errors, with its fields as attributes.
#pragma once
#include <stdexcept>
#include <string>

namespace fastprof {

// A GPU library (driver, runtime) could not be found or lacks an entry point.
class LibraryError : public std::runtime_error {
 public:
  LibraryError(std::string library, std::string message)
      : std::runtime_error(message), library(std::move(library)) {}
  std::string library;
};

// A driver call returned an error code.
class DriverError : public std::runtime_error {
 public:
  DriverError(std::string call, int code, std::string name, std::string description)
      : std::runtime_error(call + " failed: " + name + " (" + std::to_string(code) + "): " + description),
        call(std::move(call)),
        code(code),
        name(std::move(name)),
        description(std::move(description)) {}
  std::string call;
  int code;
  std::string name;
  std::string description;
};

// More marks than the recorder was sized for. Everything recorded so far is kept.
class CapacityError : public std::runtime_error {
 public:
  CapacityError(const std::string& what, size_t capacity)
      : std::runtime_error(what), capacity(capacity) {}
  size_t capacity;
};

// A call in the wrong state (mark before begin, results before end, ...).
class StateError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace fastprof
