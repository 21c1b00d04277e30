// What every rnnlab op checks before it reads a pointer, and the types they all share.
//
// The ops take raw buffers and index them by sizes read from other inputs, so a call whose
// shapes disagree would read past the end of a buffer. Every input is therefore read by its
// REGISTER_OP name (a reordered signature cannot shift the inputs under a kernel) and
// checked against the others first; a wrong call is an InvalidArgumentError naming the
// input and the shape it must have. fused_cells.cc and scans.cc include this header.
#ifndef RNNLAB_RECURRENCE_NATIVE_CHECKS_H_
#define RNNLAB_RECURRENCE_NATIVE_CHECKS_H_

#include <Eigen/Dense>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace rnnlab {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;

// An input's name and where to put it.
using NamedInput = std::pair<absl::string_view, const Tensor**>;

// Points each of `inputs` at the op's input of that name; an unknown name is an error.
inline absl::Status ReadInputs(OpKernelContext* ctx, std::initializer_list<NamedInput> inputs) {
  for (const auto& [name, tensor] : inputs) TF_RETURN_IF_ERROR(ctx->input(name, tensor));
  return absl::OkStatus();
}

// The shape of the op's input `name`, which must have `rank` axes (for shape functions).
inline absl::Status InputShape(InferenceContext* ctx, absl::string_view name, int rank,
                               ShapeHandle* shape) {
  std::vector<ShapeHandle> shapes;
  TF_RETURN_IF_ERROR(ctx->input(name, &shapes));
  return ctx->WithRank(shapes[0], rank, shape);
}

// Sets the shape of the op's output `name`.
inline absl::Status SetOutput(InferenceContext* ctx, absl::string_view name, ShapeHandle shape) {
  return ctx->set_output(name, {shape});
}

// An op split over rows: its `shards` attribute, the parts its rows are cut into (one per
// core by default, set by the Python side from the thread pool's size).
class ShardedKernel : public tensorflow::OpKernel {
 public:
  explicit ShardedKernel(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shards", &shards_));
  }

 protected:
  int64_t shards_;
};

// A backward op's shapes: each gradient, {gradient, input}, has its input's shape.
inline absl::Status GradientShapes(
    InferenceContext* ctx, std::initializer_list<std::pair<const char*, const char*>> gradients) {
  for (const auto& [gradient, input] : gradients) {
    std::vector<ShapeHandle> shape;
    TF_RETURN_IF_ERROR(ctx->input(input, &shape));
    TF_RETURN_IF_ERROR(ctx->set_output(gradient, shape));
  }
  return absl::OkStatus();
}

inline const float* DataOrNull(const Tensor& tensor) {
  return tensor.NumElements() ? tensor.flat<float>().data() : nullptr;
}

// What forward and backward share: the sizes, read from the inputs.
struct Sizes {
  int64_t steps, rows, units;
};

inline std::string ShapeText(const Tensor& tensor) { return tensor.shape().DebugString(); }

// The input must have exactly `dims`, as `form` writes them in letters.
inline absl::Status Expect(const Tensor& tensor, absl::string_view name, absl::string_view form,
                           std::initializer_list<int64_t> dims) {
  bool same = tensor.dims() == static_cast<int>(dims.size());
  int axis = 0;
  for (int64_t size : dims) same = same && tensor.dim_size(axis++) == size;
  if (same) return absl::OkStatus();
  std::string wanted;
  for (int64_t size : dims) wanted += (wanted.empty() ? "" : ", ") + std::to_string(size);
  return absl::InvalidArgumentError(absl::StrCat("rnnlab recurrence: ", name, " must be ", form,
                                                 " = [", wanted, "], got ", ShapeText(tensor)));
}

// An optional input: empty, or exactly `dims`.
inline absl::Status ExpectOrEmpty(const Tensor& tensor, absl::string_view name,
                                  absl::string_view form, std::initializer_list<int64_t> dims) {
  if (tensor.NumElements() == 0 && tensor.dims() == 1) return absl::OkStatus();
  return Expect(tensor, name, absl::StrCat(form, " or empty"), dims);
}

// The fused cells (fused_cells.cc) ---------------------------------------------------------

// The cell's second state (the LSTM's c): required where the cell has one, else empty.
template <class Cell>
absl::Status ExpectCellState(const Tensor& tensor, absl::string_view name,
                             absl::string_view form, std::initializer_list<int64_t> dims) {
  if (Cell::kStates == 2) return Expect(tensor, name, form, dims);
  return Expect(tensor, name, "empty for this cell", {0});
}

// Reads T and B from `states` ([T, B, ·]) and H from the recurrent kernel, and checks the
// kernel, the recurrent bias (null where the op has none) and keep against them.
template <class Cell>
absl::Status ReadSizes(const Tensor& states, const Tensor& kernel, const Tensor* bias,
                       const Tensor& keep, Sizes* sizes) {
  if (states.dims() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("rnnlab recurrence: expected [T, B, ·] states, got ", ShapeText(states)));
  }
  if (kernel.dims() != 2 || kernel.dim_size(1) != Cell::kGates * kernel.dim_size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rnnlab recurrence: recurrent_kernel must be [H, gates × H] with ", Cell::kGates,
        " gates, got ", ShapeText(kernel)));
  }
  sizes->steps = states.dim_size(0);
  sizes->rows = states.dim_size(1);
  sizes->units = kernel.dim_size(0);
  const int64_t T = sizes->steps, B = sizes->rows;
  if (bias != nullptr) {
    TF_RETURN_IF_ERROR(
        ExpectOrEmpty(*bias, "recurrent_bias", "[gates × H]", {kernel.dim_size(1)}));
  }
  return ExpectOrEmpty(keep, "keep", "[T, B, 1]", {T, B, 1});
}

// The scans (scans.cc) ---------------------------------------------------------------------

// A scan cell's widths: N lanes, W = kGates·N pre-activations, Q = kParameters·N parameters.
template <class Scan>
struct ScanShape {
  static int64_t Lanes(int64_t S) { return S / Scan::kStates; }
  static int64_t Width(int64_t S) { return Scan::kGates * Lanes(S); }
  static int64_t Parameters(int64_t S) { return Scan::kParameters * Lanes(S); }
};

// The inputs both scan ops take, by name.
struct ScanInputs {
  const Tensor *inputs, *kernel, *bias, *parameters, *initial, *keep;

  absl::Status Read(OpKernelContext* ctx) {
    return ReadInputs(ctx, {{"inputs", &inputs},
                            {"kernel", &kernel},
                            {"bias", &bias},
                            {"parameters", &parameters},
                            {"initial", &initial},
                            {"keep", &keep}});
  }
};

// Checks shared by both passes; reads B, T, I and S.
template <class Scan>
absl::Status ReadScanSizes(const ScanInputs& in, Sizes* sizes, int64_t* inputs) {
  const Tensor &x = *in.inputs, &kernel = *in.kernel, &h0 = *in.initial;
  if (x.dims() != 3 || h0.dims() != 2 || kernel.dims() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rnnlab scan: expected inputs [B, T, I], kernel [I, W] and h0 [B, S], got ",
        ShapeText(x), ", ", ShapeText(kernel), " and ", ShapeText(h0)));
  }
  sizes->rows = x.dim_size(0);
  sizes->steps = x.dim_size(1);
  sizes->units = h0.dim_size(1);
  *inputs = x.dim_size(2);
  const int64_t B = sizes->rows, T = sizes->steps, S = sizes->units;
  const int64_t W = ScanShape<Scan>::Width(S), Q = ScanShape<Scan>::Parameters(S);
  if (S % Scan::kStates != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rnnlab scan: h0's width ", S, " is not a multiple of ", Scan::kStates));
  }
  TF_RETURN_IF_ERROR(Expect(kernel, "kernel", "[I, W]", {*inputs, W}));
  TF_RETURN_IF_ERROR(ExpectOrEmpty(*in.bias, "bias", "[W]", {W}));
  TF_RETURN_IF_ERROR(Expect(h0, "h0", "[B, S]", {B, S}));
  if (Q) {
    TF_RETURN_IF_ERROR(Expect(*in.parameters, "parameters", "[Q]", {Q}));
  } else {
    TF_RETURN_IF_ERROR(Expect(*in.parameters, "parameters", "empty for this cell", {0}));
  }
  return ExpectOrEmpty(*in.keep, "keep", "[B, T]", {B, T});
}

}  // namespace rnnlab

#endif  // RNNLAB_RECURRENCE_NATIVE_CHECKS_H_
