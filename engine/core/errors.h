// Exceptions with context (which file/key, area, step, tensor) and the check helpers.
// The library never calls exit(): the CLI maps each exception kind to an exit code (sysexits.h).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dynsim {

enum class ExitCode : int {
  Ok = 0,
  Usage = 64,       // bad command line
  DataErr = 65,     // bad input data (file contents, shapes, values)
  NoInput = 66,     // missing input file
  Software = 70,    // internal error
  IoErr = 74,       // I/O failure
  Preempted = 75,   // stopped after a checkpoint (SIGTERM/SIGUSR1)
  Config = 78,      // bad configuration
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, ExitCode code = ExitCode::Software)
      : std::runtime_error(what), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

struct UsageError : Error {
  explicit UsageError(const std::string& w) : Error(w, ExitCode::Usage) {}
};
struct DataError : Error {
  explicit DataError(const std::string& w) : Error(w, ExitCode::DataErr) {}
};
struct NoInputError : Error {
  explicit NoInputError(const std::string& w) : Error(w, ExitCode::NoInput) {}
};
struct IoError : Error {
  explicit IoError(const std::string& w) : Error(w, ExitCode::IoErr) {}
};
struct ConfigError : Error {
  explicit ConfigError(const std::string& w) : Error(w, ExitCode::Config) {}
};
// An op or feature that this build or device does not provide.
struct NotImplemented : Error {
  explicit NotImplemented(const std::string& w) : Error(w, ExitCode::Software) {}
};

namespace detail {
inline void cat(std::ostringstream&) {}
template <class T, class... R>
void cat(std::ostringstream& s, const T& v, const R&... r) {
  s << v;
  cat(s, r...);
}
}  // namespace detail

// Builds a message from pieces: concat("conv2d: weight ", w.shape_str(), " ...").
template <class... A>
std::string concat(const A&... a) {
  std::ostringstream s;
  detail::cat(s, a...);
  return s.str();
}

}  // namespace dynsim

// Argument/shape checks inside ops: throws dynsim::Error (or the given kind) with the message.
#define DYNSIM_CHECK(cond, ...)                                                             \
  do {                                                                                      \
    if (!(cond)) throw ::dynsim::Error(::dynsim::concat(__VA_ARGS__), ::dynsim::ExitCode::DataErr); \
  } while (0)
