// Run-time choice of the instruction set for the CPU kernels' vector loops.
//
// Each hot loop is written once, as an always-inline function, and compiled into one entry point
// per instruction-set level; `dispatch` calls the one chosen at load time:
//
//   x86-64-v4  AVX-512 F/BW/CD/DQ/VL, with AVX2, FMA and BMI1/2 (GCC: 512-bit vectors; clang
//              keeps its own default of 256-bit vectors with the AVX-512 instructions)
//   x86-64-v3  AVX2, FMA and BMI1/2: the part of the psABI level that vector loops use
//   baseline   what the whole library is compiled for (SSE2 on x86-64)
//
// The highest level this CPU runs is chosen when the library loads; HAML_CPU_ISA=baseline|
// x86-64-v3|x86-64-v4 in the environment caps it (to compare or to debug), and set_active_isa
// changes it at run time (tests run every level the CPU supports). With FMA, a*b+c may be fused,
// so the levels agree to rounding, not bit for bit; each one is deterministic.
//
// Unlike `target_clones`, this needs no ifunc resolver (so clang and GCC behave alike) and lets
// callers name the level. Outside x86-64, or in device code, only `baseline` exists.
#pragma once

#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define HAML_X86_ISA_LEVELS 1
#define HAML_TARGET_X86_64_V3 __attribute__((target("avx2,fma,bmi,bmi2")))
#define HAML_TARGET_X86_64_V4 \
  __attribute__((target("avx2,fma,bmi,bmi2,avx512f,avx512bw,avx512cd,avx512dq,avx512vl")))
#endif

#if defined(__GNUC__) || defined(__clang__)
// A loop body that `dispatch` inlines into each level's entry point, where it is compiled for
// that level (a callee may be inlined into a caller with a superset of its instruction set).
#define HAML_KERNEL_BODY __attribute__((always_inline)) inline
#define HAML_KERNEL_LAMBDA_ATTR __attribute__((always_inline))
#else
#define HAML_KERNEL_BODY inline
#define HAML_KERNEL_LAMBDA_ATTR
#endif

// A callable over HAML_KERNEL_BODY function `fn` (template arguments allowed) for `dispatch`.
#define HAML_KERNEL(...)                                                 \
  [](auto&&... haml_args) HAML_KERNEL_LAMBDA_ATTR {                      \
    return __VA_ARGS__(std::forward<decltype(haml_args)>(haml_args)...); \
  }

namespace haml::cpu {

enum class Isa : int { baseline = 0, x86_64_v3 = 1, x86_64_v4 = 2 };

// "baseline", "x86-64-v3", "x86-64-v4".
const char* isa_name(Isa isa);
// The level named so (as isa_name writes it); an error naming the valid ones otherwise.
Isa isa_from_name(const std::string& name);
// Levels compiled into this build, lowest first.
std::vector<Isa> compiled_isas();
// Compiled levels this CPU (and OS) can run, lowest first.
std::vector<Isa> supported_isas();
// The level the kernels run now.
Isa active_isa();
// Run the kernels at `isa` from now on; an error if this CPU cannot run it or it is not compiled.
void set_active_isa(Isa isa);

namespace detail {
template <class Fn, class... Args>
decltype(auto) run_baseline(Fn fn, Args&&... args) {
  return fn(std::forward<Args>(args)...);
}
#ifdef HAML_X86_ISA_LEVELS
template <class Fn, class... Args>
HAML_TARGET_X86_64_V3 decltype(auto) run_x86_64_v3(Fn fn, Args&&... args) {
  return fn(std::forward<Args>(args)...);
}
template <class Fn, class... Args>
HAML_TARGET_X86_64_V4 decltype(auto) run_x86_64_v4(Fn fn, Args&&... args) {
  return fn(std::forward<Args>(args)...);
}
#endif
}  // namespace detail

// fn(args...) compiled for the active level; fn is a HAML_KERNEL(...).
template <class Fn, class... Args>
decltype(auto) dispatch(Fn fn, Args&&... args) {
#ifdef HAML_X86_ISA_LEVELS
  switch (active_isa()) {
    case Isa::x86_64_v4:
      return detail::run_x86_64_v4(fn, std::forward<Args>(args)...);
    case Isa::x86_64_v3:
      return detail::run_x86_64_v3(fn, std::forward<Args>(args)...);
    case Isa::baseline:
      break;
  }
#endif
  return detail::run_baseline(fn, std::forward<Args>(args)...);
}

}  // namespace haml::cpu
