// haml._C: importing this module loads haml_core, whose static TORCH_LIBRARY registrations put the
// haml ops into torch's dispatcher (torch.ops.haml.*). It holds no tensor math; build_info() says
// what this build contains so that Python can check it against the running torch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "haml/cpu_isa.h"
#include "haml/ops.h"

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
  info["version"] = HAML_VERSION;
  info["torch_version"] = HAML_TORCH_VERSION;
#ifdef HAML_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = HAML_CUDA_VERSION;
  info["devices"] = std::vector<std::string>{"cpu", "cuda"};
#else
  info["cuda"] = false;
  info["cuda_version"] = py::none();
  info["devices"] = std::vector<std::string>{"cpu"};
#endif
  std::vector<std::string> isas;
  for (haml::cpu::Isa isa : haml::cpu::compiled_isas()) isas.emplace_back(haml::cpu::isa_name(isa));
  info["cpu_isas"] = isas;
  info["ops"] = haml::native_op_names();
  info["classes"] = haml::native_class_names();
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "haml native kernels; the ops themselves are torch.ops.haml.*";
  m.def("build_info", &build_info,
        "Version, the torch version built against, CUDA on/off, the CPU instruction-set levels "
        "compiled and the native ops of this build.");
  m.def(
      "cpu_isa", [] { return std::string(haml::cpu::isa_name(haml::cpu::active_isa())); },
      "The instruction-set level the CPU kernels run now.");
  m.def(
      "supported_cpu_isas",
      [] {
        std::vector<std::string> names;
        for (haml::cpu::Isa isa : haml::cpu::supported_isas())
          names.emplace_back(haml::cpu::isa_name(isa));
        return names;
      },
      "The compiled instruction-set levels this CPU can run, lowest first.");
  m.def(
      "set_cpu_isa",
      [](const std::string& name) { haml::cpu::set_active_isa(haml::cpu::isa_from_name(name)); },
      "Run the CPU kernels at this instruction-set level from now on.");
}
