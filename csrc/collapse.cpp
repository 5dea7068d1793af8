// C++ weight-gather op for slimbert's collapse step: gathers the kept rows/columns
// of a Linear weight (or kept entries of a bias) and folds per-unit gate values
// into them. Results must be bit-identical to slimbert._ext.gather_scaled_torch,
// so this uses exactly the same ATen ops in the same order (index_select, then mul).
#include <torch/extension.h>

#include <optional>
#include <vector>

namespace {

at::Tensor gather_scaled(const at::Tensor& weight,
                         const at::Tensor& index,
                         int64_t dim,
                         const std::optional<at::Tensor>& scale) {
  const int64_t ndim = weight.dim();
  TORCH_CHECK(ndim >= 1, "gather_scaled: weight must have at least 1 dimension, got a 0-d tensor");
  TORCH_CHECK(dim >= -ndim && dim < ndim, "gather_scaled: dim ", dim,
              " is out of range for a weight with ", ndim, " dimension(s)");
  if (dim < 0) {
    dim += ndim;
  }
  TORCH_CHECK(index.dim() == 1, "gather_scaled: index must be 1-D, got ", index.dim(), " dimensions");
  TORCH_CHECK(index.scalar_type() == at::kLong, "gather_scaled: index must be int64, got ",
              index.scalar_type());
  TORCH_CHECK(index.device() == weight.device(), "gather_scaled: index is on ", index.device(),
              " but weight is on ", weight.device());

  at::Tensor out = weight.index_select(dim, index);

  if (scale.has_value() && scale->defined()) {
    const at::Tensor& s = *scale;
    TORCH_CHECK(s.dim() == 1, "gather_scaled: scale must be 1-D, got ", s.dim(), " dimensions");
    TORCH_CHECK(s.size(0) == index.size(0), "gather_scaled: scale has length ", s.size(0),
                " but index has length ", index.size(0), "; they must match");
    TORCH_CHECK(s.scalar_type() == weight.scalar_type(), "gather_scaled: scale dtype ",
                s.scalar_type(), " must match weight dtype ", weight.scalar_type());
    TORCH_CHECK(s.device() == weight.device(), "gather_scaled: scale is on ", s.device(),
                " but weight is on ", weight.device());
    // Shape (1, ..., k, ..., 1) so each kept slice along dim gets its own gate value.
    std::vector<int64_t> shape(static_cast<size_t>(ndim), 1);
    shape[static_cast<size_t>(dim)] = s.size(0);
    out = out.mul(s.reshape(shape));
  }
  return out.contiguous();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "slimbert collapse helpers: gather kept weight slices and fold gate values";
  m.def("gather_scaled", &gather_scaled,
        "index_select(weight, dim, index), optionally scaled per selected slice; contiguous result",
        pybind11::arg("weight"), pybind11::arg("index"), pybind11::arg("dim"),
        pybind11::arg("scale") = pybind11::none());
}
