// Implementation of dynlib.hpp (what it owns is written there).
#include "dynlib.hpp"

#include <dlfcn.h>

#include <cstdlib>

#include "errors.hpp"

namespace fastprof {

DynLib::DynLib(const char* what, const char* env_var, const std::vector<std::string>& candidates)
    : what_(what) {
  std::vector<std::string> tries;
  const char* override_path = env_var ? std::getenv(env_var) : nullptr;
  if (override_path && *override_path) {
    tries.emplace_back(override_path);
  } else {
    tries = candidates;
  }
  std::string failures;
  for (const auto& candidate : tries) {
    dlerror();
    handle_ = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_) {
      path_ = candidate;
      return;
    }
    const char* err = dlerror();
    failures += "\n  " + candidate + ": " + (err ? err : "unknown error");
  }
  std::string hint = (override_path && *override_path)
                         ? std::string(" (from ") + env_var + ")"
                         : std::string("; install the driver, or set ") + env_var +
                               " to the library's full path";
  throw LibraryError(tries.empty() ? std::string() : tries.front(),
                     std::string("could not load the ") + what + hint + ". Tried:" + failures);
}

DynLib::~DynLib() {
  // Drivers are never unloaded: some register atexit handlers or threads, and unloading them
  // while the process still runs is a known source of crashes at exit. dlopen refcounts, so a
  // new DynLib for the same path is cheap.
}

void* DynLib::symbol(const std::vector<const char*>& names, bool required) const {
  for (const char* name : names) {
    if (void* p = dlsym(handle_, name)) return p;
  }
  if (!required) return nullptr;
  std::string list;
  for (const char* name : names) list += (list.empty() ? "" : ", ") + std::string(name);
  throw LibraryError(path_, "the " + what_ + " at " + path_ + " lacks the entry point " + list +
                                "; is it too old, or not the right library?");
}

}  // namespace fastprof
