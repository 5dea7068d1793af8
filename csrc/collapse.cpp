// C++ weight-gather op for slimbert's collapse step: gathers the kept rows/columns
// of a Linear weight (or kept entries of a bias) and folds per-unit gate values
// into them. Results must be bit-identical to slimbert.pruning.ext.gather_scaled_torch,
// so this uses exactly the same ATen ops in the same order (index_select, then mul).
// gather_scaled_many does every gather of a whole model in one call, spread over the
// CPU threads with at::parallel_for (each gather is independent).
#include <ATen/Parallel.h>
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

std::vector<at::Tensor> gather_scaled_many(const std::vector<at::Tensor>& weights,
                                           const std::vector<at::Tensor>& indices,
                                           const std::vector<int64_t>& dims,
                                           const std::vector<std::optional<at::Tensor>>& scales) {
  const int64_t n = static_cast<int64_t>(weights.size());
  TORCH_CHECK(indices.size() == weights.size() && dims.size() == weights.size() && scales.size() == weights.size(),
              "gather_scaled_many: weights, indices, dims and scales must have the same length");
  std::vector<at::Tensor> out(static_cast<size_t>(n));
  // One job per grain: the jobs differ in size by orders of magnitude (biases vs matrices).
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[static_cast<size_t>(i)] = gather_scaled(weights[i], indices[i], dims[i], scales[i]);
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "slimbert collapse helpers: gather kept weight slices and fold gate values";
  m.def("gather_scaled", &gather_scaled,
        "index_select(weight, dim, index), optionally scaled per selected slice; contiguous result",
        pybind11::arg("weight"), pybind11::arg("index"), pybind11::arg("dim"),
        pybind11::arg("scale") = pybind11::none());
  m.def("gather_scaled_many", &gather_scaled_many,
        "gather_scaled for every (weight, index, dim, scale) of a model, in one parallel pass",
        pybind11::arg("weights"), pybind11::arg("indices"), pybind11::arg("dims"), pybind11::arg("scales"));
}
