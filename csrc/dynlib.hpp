// Run-time loading of shared libraries (dlopen), with the FASTPROF_*_LIBRARY overrides.
#pragma once
#include <string>
#include <vector>

namespace fastprof {

class DynLib {
 public:
  // Opens the library named by the environment variable `env_var` when it is set,
  // else the first of `candidates` that loads. Throws LibraryError naming every attempt.
  DynLib(const char* what, const char* env_var, const std::vector<std::string>& candidates);
  ~DynLib();
  DynLib(const DynLib&) = delete;
  DynLib& operator=(const DynLib&) = delete;

  // The first of `names` the library exports; nullptr when none (required=false)
  // or LibraryError (required=true).
  void* symbol(const std::vector<const char*>& names, bool required = true) const;

  template <typename Fn>
  Fn fn(const std::vector<const char*>& names, bool required = true) const {
    return reinterpret_cast<Fn>(symbol(names, required));
  }

  const std::string& path() const { return path_; }
  const std::string& what() const { return what_; }

 private:
  void* handle_ = nullptr;
  std::string path_;
  std::string what_;
};

}  // namespace fastprof
