// See haml/cpu_isa.h.
#include "haml/cpu_isa.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace haml::cpu {

namespace {

bool cpu_runs(Isa isa) {
#ifdef HAML_X86_ISA_LEVELS
  // __builtin_cpu_supports also checks that the OS saves the vector registers (XCR0).
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  switch (isa) {
    case Isa::baseline:
      return true;
    case Isa::x86_64_v3:
      return v3;
    case Isa::x86_64_v4:
      return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return isa == Isa::baseline;
#endif
}

// The highest supported level, capped by HAML_CPU_ISA when it is set. Python checks the
// variable at import and raises on a bad value; here, at library load, where an exception would
// abort the process, a bad value is reported on stderr and ignored.
Isa initial_isa() {
  const std::vector<Isa> supported = supported_isas();
  Isa chosen = supported.back();
  if (const char* cap = std::getenv("HAML_CPU_ISA"); cap != nullptr && *cap != '\0') {
    try {
      chosen = std::min(chosen, isa_from_name(cap));
    } catch (const c10::Error&) {
      std::fprintf(stderr,
                   "haml: ignoring HAML_CPU_ISA=%s (expected baseline, x86-64-v3 or "
                   "x86-64-v4)\n",
                   cap);
    }
  }
  return chosen;
}

std::atomic<int>& active() {
  static std::atomic<int> level{static_cast<int>(initial_isa())};
  return level;
}

// Chosen at load, on the loading thread, not inside the first kernel's parallel region.
[[maybe_unused]] const int chosen_at_load = active().load();

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::baseline:
      return "baseline";
    case Isa::x86_64_v3:
      return "x86-64-v3";
    case Isa::x86_64_v4:
      return "x86-64-v4";
  }
  return "unknown";
}

Isa isa_from_name(const std::string& name) {
  for (Isa isa : {Isa::baseline, Isa::x86_64_v3, Isa::x86_64_v4}) {
    if (name == isa_name(isa)) return isa;
  }
  TORCH_CHECK(false, "haml: unknown CPU instruction-set level '", name,
              "'; expected baseline, x86-64-v3 or x86-64-v4 (HAML_CPU_ISA or set_cpu_isa)");
}

std::vector<Isa> compiled_isas() {
#ifdef HAML_X86_ISA_LEVELS
  return {Isa::baseline, Isa::x86_64_v3, Isa::x86_64_v4};
#else
  return {Isa::baseline};
#endif
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : compiled_isas()) {
    if (cpu_runs(isa)) out.push_back(isa);
  }
  return out;
}

Isa active_isa() { return static_cast<Isa>(active().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  const std::vector<Isa> supported = supported_isas();
  const bool ok = std::find(supported.begin(), supported.end(), isa) != supported.end();
  std::string runnable;
  for (Isa s : supported) runnable += std::string(runnable.empty() ? "" : ", ") + isa_name(s);
  TORCH_CHECK(ok, "haml: this CPU or build cannot run the '", isa_name(isa),
              "' kernels; it runs: ", runnable);
  active().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace haml::cpu
