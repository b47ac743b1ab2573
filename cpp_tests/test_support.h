// Helpers shared by the C++ test executables.
#pragma once

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>

namespace haml::testing {

// Bad input must raise a c10::Error (RuntimeError in Python) whose message names the argument,
// never crash.
template <typename F>
void expect_error_naming(F&& call, const std::string& name) {
  try {
    call();
    ADD_FAILURE() << "expected a c10::Error naming " << name;
  } catch (const c10::Error& err) {
    const std::string what = err.what_without_backtrace();
    EXPECT_NE(what.find(name), std::string::npos) << what;
  }
}

}  // namespace haml::testing
