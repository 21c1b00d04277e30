// The recurrences of rnnlab.fused_rnn (SimpleRNN, LSTM, GRU) as TensorFlow ops: every step
// of the forward pass in one op, every step of the backward pass in another.
//
// In TensorFlow's graph a step costs some 25 small ops, each a few microseconds of dispatch,
// around its one matmul; here a step is that matmul and a few vectorised loops over the
// rows. The maths is fused_rnn's, which is Keras's: the sigmoid gates' columns of the
// projection, recurrent kernel and bias come halved, so sigmoid(x) = tanh(x/2)/2 + 1/2 and a
// gate's derivative with respect to its halved pre-activation is 2·s·(1 - s).
//
// Every op has the same signature, so one template serves the three cells:
//   forward(projected [T,B,G·H], kernel [H,G·H], bias [G·H] or [0], h0 [B,H], c0 [B,H] or [0],
//           keep [T,B,1] or [0]) -> h [T,B,H], c [T,B,H] or [0], records [T,B,R·H]
//   backward(records, h, c, h0, c0, kernel, d_h [T,B,H] or [0], d_final_h, d_final_c, keep)
//           -> d_projected [T,B,G·H], d_inner [T,B,G·H] or [0], d_h0, d_c0
// `keep` is 1 where a step counts and 0 where a mask holds the states. `d_inner`, the
// gradient of h_{t-1} @ kernel + bias, is output only where it differs from d_projected.
#include <Eigen/Dense>
#include <algorithm>
#include <string>
#include <thread>
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

// One step of one row, forward and backward. Pointers are to rows of H floats unless named
// otherwise; `x` and `inner` hold G·H, `record` R·H.
struct SimpleRnnCell {
  static constexpr int kGates = 1, kStates = 1, kRecords = 0;
  static constexpr bool kSeparateInner = false;

  static void Forward(int64_t H, const float* x, const float* inner, const float*, const float*,
                      float* h, float*, float*) {
    Row(h, H) = (ConstRow(x, H) + ConstRow(inner, H)).tanh();
  }

  // Writes the gradients of the pre-activations; leaves in dh what reaches h_{t-1} directly.
  static void Backward(int64_t H, const float*, const float* h, const float*, const float*,
                       const float*, float* dh, float*, float* d_projected, float*) {
    const ConstRow state(h, H);
    Row(d_projected, H) = Row(dh, H) * (1.0f - state * state);
    Row(dh, H).setZero();
  }
};

struct LstmCell {  // gates i, f, c, o as Keras's; records: the four activations
  static constexpr int kGates = 4, kStates = 2, kRecords = 4;
  static constexpr bool kSeparateInner = false;

  static void Forward(int64_t H, const float* x, const float* inner, const float*,
                      const float* c_prev, float* h, float* c, float* record) {
    Row all(record, 4 * H);
    all = (ConstRow(x, 4 * H) + ConstRow(inner, 4 * H)).tanh();
    Row i(record, H), f(record + H, H), g(record + 2 * H, H), o(record + 3 * H, H);
    i = i * 0.5f + 0.5f;
    f = f * 0.5f + 0.5f;
    o = o * 0.5f + 0.5f;
    Row cell(c, H);
    cell = f * ConstRow(c_prev, H) + i * g;
    Row(h, H) = o * cell.tanh();
  }

  static void Backward(int64_t H, const float* record, const float*, const float* c,
                       const float*, const float* c_prev, float* dh, float* dc,
                       float* d_projected, float*) {
    ConstRow i(record, H), f(record + H, H), g(record + 2 * H, H), o(record + 3 * H, H);
    const Eigen::ArrayXf tanh_c = ConstRow(c, H).tanh();
    Row dh_row(dh, H), dc_row(dc, H);
    dc_row += dh_row * (o * (1.0f - tanh_c * tanh_c));
    Row(d_projected, H) = dc_row * (2.0f * g * i * (1.0f - i));
    Row(d_projected + H, H) = dc_row * (2.0f * ConstRow(c_prev, H) * f * (1.0f - f));
    Row(d_projected + 2 * H, H) = dc_row * (i * (1.0f - g * g));
    Row(d_projected + 3 * H, H) = dh_row * (2.0f * tanh_c * o * (1.0f - o));
    dc_row *= f;
    dh_row.setZero();
  }
};

// Keras's GRU with reset_after: gates z, r and the candidate; the reset gate scales the
// recurrent candidate term r_h. Records: z, r, the candidate and r_h.
struct GruCell {
  static constexpr int kGates = 3, kStates = 1, kRecords = 4;
  static constexpr bool kSeparateInner = true;

  static void Forward(int64_t H, const float* x, const float* inner, const float* h_prev,
                      const float*, float* h, float*, float* record) {
    Row z(record, H), r(record + H, H), candidate(record + 2 * H, H), r_h(record + 3 * H, H);
    z = (ConstRow(x, H) + ConstRow(inner, H)).tanh() * 0.5f + 0.5f;
    r = (ConstRow(x + H, H) + ConstRow(inner + H, H)).tanh() * 0.5f + 0.5f;
    r_h = ConstRow(inner + 2 * H, H);
    candidate = (ConstRow(x + 2 * H, H) + r * r_h).tanh();
    Row(h, H) = z * ConstRow(h_prev, H) + (1.0f - z) * candidate;
  }

  static void Backward(int64_t H, const float* record, const float*, const float*,
                       const float* h_prev, const float*, float* dh, float*, float* d_projected,
                       float* d_inner) {
    ConstRow z(record, H), r(record + H, H), candidate(record + 2 * H, H), r_h(record + 3 * H, H);
    Row dh_row(dh, H);
    const Eigen::ArrayXf into_candidate = (1.0f - z) * (1.0f - candidate * candidate);
    Row d_z(d_projected, H), d_r(d_projected + H, H);
    d_z = dh_row * (2.0f * (ConstRow(h_prev, H) - candidate) * z * (1.0f - z));
    d_r = dh_row * (2.0f * into_candidate * r_h * r * (1.0f - r));
    Row d_candidate(d_projected + 2 * H, H);
    d_candidate = dh_row * into_candidate;
    Row(d_inner, H) = d_z;
    Row(d_inner + H, H) = d_r;
    Row(d_inner + 2 * H, H) = d_candidate * r;
    dh_row *= z;
  }
};

const float* DataOrNull(const Tensor& tensor) {
  return tensor.NumElements() ? tensor.flat<float>().data() : nullptr;
}

// What forward and backward share: the sizes, read from projected or h and the kernel.
struct Sizes {
  int64_t steps, rows, units;
};

std::string ShapeText(const Tensor& tensor) { return tensor.shape().DebugString(); }

// Every input's shape is checked against the others before any pointer is read: a wrong
// call is an InvalidArgumentError naming the input, never a read past the end of a buffer.
absl::Status Expect(const Tensor& tensor, absl::string_view name, absl::string_view form,
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
absl::Status ExpectOrEmpty(const Tensor& tensor, absl::string_view name, absl::string_view form,
                           std::initializer_list<int64_t> dims) {
  if (tensor.NumElements() == 0 && tensor.dims() == 1) return absl::OkStatus();
  return Expect(tensor, name, absl::StrCat(form, " or empty"), dims);
}

// The cell's second state (the LSTM's c): required where the cell has one, else empty.
template <class Cell>
absl::Status ExpectCellState(const Tensor& tensor, absl::string_view name,
                             absl::string_view form, std::initializer_list<int64_t> dims) {
  if (Cell::kStates == 2) return Expect(tensor, name, form, dims);
  return Expect(tensor, name, "empty for this cell", {0});
}

// Reads T and B from `states` ([T, B, ·]) and H from the kernel, and checks the kernel,
// bias and keep against them.
template <class Cell>
absl::Status ReadSizes(const Tensor& states, const Tensor& kernel, const Tensor& bias,
                       const Tensor& keep, Sizes* sizes) {
  if (states.dims() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("rnnlab recurrence: expected [T, B, ·] states, got ", ShapeText(states)));
  }
  if (kernel.dims() != 2 || kernel.dim_size(1) != Cell::kGates * kernel.dim_size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rnnlab recurrence: the kernel must be [H, gates × H] with ", Cell::kGates,
                     " gates, got ", ShapeText(kernel)));
  }
  sizes->steps = states.dim_size(0);
  sizes->rows = states.dim_size(1);
  sizes->units = kernel.dim_size(0);
  const int64_t T = sizes->steps, B = sizes->rows;
  TF_RETURN_IF_ERROR(ExpectOrEmpty(bias, "the bias", "[gates × H]", {kernel.dim_size(1)}));
  return ExpectOrEmpty(keep, "keep", "[T, B, 1]", {T, B, 1});
}

template <class Cell>
class Forward : public OpKernel {
 public:
  explicit Forward(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& projected = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    const Tensor& keep = ctx->input(5);
    Sizes s;
    OP_REQUIRES_OK(ctx, ReadSizes<Cell>(projected, kernel, ctx->input(2), keep, &s));
    const int64_t H = s.units, G = Cell::kGates * H, R = Cell::kRecords * H, B = s.rows;
    OP_REQUIRES_OK(ctx, Expect(projected, "projected", "[T, B, G × H]", {s.steps, B, G}));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(3), "initial_h", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(ctx->input(4), "initial_c", "[B, H]", {B, H}));
    const TensorShape states_shape({s.steps, B, H}), none({0});
    Tensor *h_out, *c_out, *records_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, states_shape, &h_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, Cell::kStates == 2 ? states_shape : none, &c_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({s.steps, B, R}), &records_out));
    ConstMatrixMap recurrent(kernel.flat<float>().data(), H, G);
    const float* bias = DataOrNull(ctx->input(2));
    const float* masks = DataOrNull(keep);
    const float* x = projected.flat<float>().data();
    float* hs = h_out->flat<float>().data();
    float* cs = DataOrNull(*c_out) ? c_out->flat<float>().data() : nullptr;
    float* records = R ? records_out->flat<float>().data() : nullptr;
    const float* h_prev = ctx->input(3).flat<float>().data();
    const float* c_prev = DataOrNull(ctx->input(4));
    Matrix inner(B, G);
    for (int64_t t = 0; t < s.steps; ++t) {
      inner.noalias() = ConstMatrixMap(h_prev, B, H) * recurrent;
      if (bias != nullptr) inner.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, G);
      float* h_now = hs + t * B * H;
      float* c_now = cs ? cs + t * B * H : nullptr;
      for (int64_t b = 0; b < B; ++b) {
        float* h = h_now + b * H;
        float* c = c_now ? c_now + b * H : nullptr;
        const float* hp = h_prev + b * H;
        const float* cp = c_prev ? c_prev + b * H : nullptr;
        Cell::Forward(H, x + (t * B + b) * G, inner.data() + b * G, hp, cp, h, c,
                      records ? records + (t * B + b) * R : nullptr);
        if (masks != nullptr) {
          const float k = masks[t * B + b];
          Row(h, H) = ConstRow(hp, H) + k * (Row(h, H) - ConstRow(hp, H));
          if (c) Row(c, H) = ConstRow(cp, H) + k * (Row(c, H) - ConstRow(cp, H));
        }
      }
      h_prev = h_now;
      c_prev = c_now;
    }
  }
};

template <class Cell>
class Backward : public OpKernel {
 public:
  explicit Backward(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& hs_in = ctx->input(1);
    const Tensor& kernel = ctx->input(5);
    const Tensor& d_h_all = ctx->input(6);
    const Tensor& keep = ctx->input(9);
    const Tensor no_bias;
    Sizes s;
    OP_REQUIRES_OK(ctx, ReadSizes<Cell>(hs_in, kernel, no_bias, keep, &s));
    const int64_t T = s.steps, H = s.units, G = Cell::kGates * H, R = Cell::kRecords * H,
                  B = s.rows;
    OP_REQUIRES_OK(ctx, Expect(ctx->input(0), "records", "[T, B, records × H]", {T, B, R}));
    OP_REQUIRES_OK(ctx, Expect(hs_in, "h", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(ctx->input(2), "c", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(3), "initial_h", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(ctx->input(4), "initial_c", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(d_h_all, "d_h", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(7), "d_final_h", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(ctx->input(8), "d_final_c", "[B, H]", {B, H}));
    const TensorShape gates_shape({s.steps, B, G}), none({0});
    Tensor *d_projected_out, *d_inner_out, *d_h_out, *d_c_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, gates_shape, &d_projected_out));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_output(1, Cell::kSeparateInner ? gates_shape : none, &d_inner_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, H}), &d_h_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            3, Cell::kStates == 2 ? TensorShape({B, H}) : none, &d_c_out));
    ConstMatrixMap recurrent(kernel.flat<float>().data(), H, G);
    const float* records = DataOrNull(ctx->input(0));
    const float* hs = hs_in.flat<float>().data();
    const float* cs = DataOrNull(ctx->input(2));
    const float* h_initial = ctx->input(3).flat<float>().data();
    const float* c_initial = DataOrNull(ctx->input(4));
    const float* d_hs = DataOrNull(d_h_all);
    const float* masks = DataOrNull(keep);
    float* d_projected = d_projected_out->flat<float>().data();
    float* d_inner = Cell::kSeparateInner ? d_inner_out->flat<float>().data() : d_projected;
    // The gradients carried from step t to step t - 1, and what a mask holds past a step.
    MatrixMap dh(d_h_out->flat<float>().data(), B, H);
    dh = ConstMatrixMap(ctx->input(7).flat<float>().data(), B, H);
    Matrix dc_unused;
    float* dc_data = Cell::kStates == 2 ? d_c_out->flat<float>().data() : nullptr;
    if (dc_data) {
      MatrixMap(dc_data, B, H) = ConstMatrixMap(ctx->input(8).flat<float>().data(), B, H);
    }
    Matrix held_h(B, H), held_c(B, H);
    for (int64_t t = s.steps - 1; t >= 0; --t) {
      if (d_hs != nullptr) dh += ConstMatrixMap(d_hs + t * B * H, B, H);
      const float* h_prev = t > 0 ? hs + (t - 1) * B * H : h_initial;
      const float* c_prev = cs ? (t > 0 ? cs + (t - 1) * B * H : c_initial) : nullptr;
      for (int64_t b = 0; b < B; ++b) {
        float* dh_row = dh.data() + b * H;
        float* dc_row = dc_data ? dc_data + b * H : nullptr;
        if (masks != nullptr) {
          const float k = masks[t * B + b];
          Row(held_h.data() + b * H, H) = Row(dh_row, H) - Row(dh_row, H) * k;
          Row(dh_row, H) *= k;
          if (dc_row) {
            Row(held_c.data() + b * H, H) = Row(dc_row, H) - Row(dc_row, H) * k;
            Row(dc_row, H) *= k;
          }
        }
        const int64_t at = t * B + b;
        Cell::Backward(H, records ? records + at * R : nullptr, hs + at * H,
                       cs ? cs + at * H : nullptr, h_prev + b * H,
                       c_prev ? c_prev + b * H : nullptr, dh_row, dc_row, d_projected + at * G,
                       Cell::kSeparateInner ? d_inner + at * G : nullptr);
      }
      dh.noalias() += ConstMatrixMap(d_inner + t * B * G, B, G) * recurrent.transpose();
      if (masks != nullptr) {
        dh += held_h;
        if (dc_data) MatrixMap(dc_data, B, H) += held_c;
      }
    }
  }
};

// Shapes for graph tracing: states [T, B, H] with H the kernel's rows; gates G·H wide.
template <class Cell>
absl::Status ForwardShapes(InferenceContext* ctx) {
  ShapeHandle projected, kernel;
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(0), 3, &projected));
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(1), 2, &kernel));
  DimensionHandle units = ctx->Dim(kernel, 0), records;
  TF_RETURN_IF_ERROR(ctx->Multiply(units, Cell::kRecords, &records));
  const DimensionHandle steps = ctx->Dim(projected, 0), rows = ctx->Dim(projected, 1);
  ShapeHandle states = ctx->MakeShape({steps, rows, units});
  ctx->set_output(0, states);
  ctx->set_output(1, Cell::kStates == 2 ? states : ctx->MakeShape({0}));
  ctx->set_output(2, ctx->MakeShape({steps, rows, records}));
  return absl::OkStatus();
}

template <class Cell>
absl::Status BackwardShapes(InferenceContext* ctx) {
  ShapeHandle states, kernel;
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(1), 3, &states));
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(5), 2, &kernel));
  ShapeHandle gates = ctx->MakeShape({ctx->Dim(states, 0), ctx->Dim(states, 1), ctx->Dim(kernel, 1)});
  ShapeHandle one_step = ctx->MakeShape({ctx->Dim(states, 1), ctx->Dim(kernel, 0)});
  ctx->set_output(0, gates);
  ctx->set_output(1, Cell::kSeparateInner ? gates : ctx->MakeShape({0}));
  ctx->set_output(2, one_step);
  ctx->set_output(3, Cell::kStates == 2 ? one_step : ctx->MakeShape({0}));
  return absl::OkStatus();
}

}  // namespace rnnlab

#define RNNLAB_RECURRENCE_OPS(Name, Cell)                            \
  REGISTER_OP("Rnnlab" #Name "Forward")                             \
      .Input("projected: float")                                    \
      .Input("recurrent_kernel: float")                             \
      .Input("recurrent_bias: float")                               \
      .Input("initial_h: float")                                    \
      .Input("initial_c: float")                                    \
      .Input("keep: float")                                         \
      .Output("h: float")                                           \
      .Output("c: float")                                           \
      .Output("records: float")                                     \
      .SetShapeFn(rnnlab::ForwardShapes<Cell>);                     \
  REGISTER_OP("Rnnlab" #Name "Backward")                            \
      .Input("records: float")                                      \
      .Input("h: float")                                            \
      .Input("c: float")                                            \
      .Input("initial_h: float")                                    \
      .Input("initial_c: float")                                    \
      .Input("recurrent_kernel: float")                             \
      .Input("d_h: float")                                          \
      .Input("d_final_h: float")                                    \
      .Input("d_final_c: float")                                    \
      .Input("keep: float")                                         \
      .Output("d_projected: float")                                 \
      .Output("d_inner: float")                                     \
      .Output("d_initial_h: float")                                 \
      .Output("d_initial_c: float")                                 \
      .SetShapeFn(rnnlab::BackwardShapes<Cell>)

RNNLAB_RECURRENCE_OPS(SimpleRnn, rnnlab::SimpleRnnCell);
RNNLAB_RECURRENCE_OPS(Lstm, rnnlab::LstmCell);
RNNLAB_RECURRENCE_OPS(Gru, rnnlab::GruCell);

// TensorFlow's kernel registration wants the op names as plain literals.
namespace rnnlab {
using SimpleRnnForward = Forward<SimpleRnnCell>;
using SimpleRnnBackward = Backward<SimpleRnnCell>;
using LstmForward = Forward<LstmCell>;
using LstmBackward = Backward<LstmCell>;
using GruForward = Forward<GruCell>;
using GruBackward = Backward<GruCell>;
}  // namespace rnnlab

using tensorflow::DEVICE_CPU;
REGISTER_KERNEL_BUILDER(Name("RnnlabSimpleRnnForward").Device(DEVICE_CPU), rnnlab::SimpleRnnForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabSimpleRnnBackward").Device(DEVICE_CPU), rnnlab::SimpleRnnBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabLstmForward").Device(DEVICE_CPU), rnnlab::LstmForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabLstmBackward").Device(DEVICE_CPU), rnnlab::LstmBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabGruForward").Device(DEVICE_CPU), rnnlab::GruForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabGruBackward").Device(DEVICE_CPU), rnnlab::GruBackward);

// ---------------------------------------------------------------------------------------
// Linear recurrences h_t = a_t ⊙ h_{t-1} + b_t whose a_t and b_t come from the step's own
// inputs (rnnlab.cells: minGRU, minLSTM, LRU): input projection, gates and recurrence fused.
// No step depends on another through a matmul, so what costs is memory: the projection of
// a block of kBlock steps is computed into a small buffer that stays in cache, never into a
// [B, T, W] tensor, and the backward pass computes it again. Batch-major; the rows are split
// between `shards` threads:
//   forward(inputs [B,T,I], kernel [I,W], bias [W] or [0], parameters [Q] or [0], h0 [B,S],
//           keep [B,T] or [0]) -> states [B,T,S]
//   backward(inputs, kernel, bias, parameters, states, h0, d_states [B,T,S] or [0],
//            d_final [B,S], keep)
//       -> d_inputs [B,T,I], d_kernel [I,W], d_bias [W] or [0], d_parameters [Q] or [0], d_h0
// A step whose keep is 0 holds the state. A cell gives W and Q from S, and one step forward
// and back over `n` lanes (at most kLanes) at pointers already offset to the first lane.
namespace rnnlab {

constexpr int64_t kLanes = 128;
using Lanes = Eigen::Array<float, Eigen::Dynamic, 1, Eigen::ColMajor, kLanes, 1>;
using ConstLanes = Eigen::Map<const Eigen::ArrayXf>;
using MutableLanes = Eigen::Map<Eigen::ArrayXf>;

// 1 / (1 + e^-x): Eigen's vectorised exp costs about half its tanh.
template <class E>
Lanes Sigmoid(const E& x) {
  return (1.0f + (-x).exp()).inverse();
}

// The papers' g(x): x + 1/2 for x ≥ 0, else sigmoid(x); positive and continuous.
void PositiveCandidate(const ConstLanes& x, Lanes* value, Lanes* slope) {
  const Lanes s = Sigmoid(x);
  *value = (x >= 0.0f).select(x + 0.5f, s);
  if (slope) *slope = (x >= 0.0f).select(Lanes::Ones(x.size()), s * (1.0f - s));
}

// z = σ(x_z), h = (1 - z) h_prev + z g(x_h). W = 2S.
struct MinGruScan {
  static int64_t Width(int64_t S) { return 2 * S; }
  static int64_t Parameters(int64_t) { return 0; }
  static int64_t Lanes_(int64_t S) { return S; }

  static void Forward(int64_t n, int64_t S, const float* x, const float*, const float* h_prev,
                      float* h) {
    const Lanes z = Sigmoid(ConstLanes(x, n));
    Lanes candidate;
    PositiveCandidate(ConstLanes(x + S, n), &candidate, nullptr);
    const ConstLanes previous(h_prev, n);
    MutableLanes(h, n) = previous + z * (candidate - previous);
  }

  // g holds dL/dh_t on entry and what reaches h_{t-1} on exit.
  static void Backward(int64_t n, int64_t S, const float* x, const float*, const float* h_prev,
                       float* g, float* d_x, float*) {
    const Lanes z = Sigmoid(ConstLanes(x, n));
    Lanes candidate, slope;
    PositiveCandidate(ConstLanes(x + S, n), &candidate, &slope);
    MutableLanes grad(g, n);
    MutableLanes(d_x, n) = grad * (candidate - ConstLanes(h_prev, n)) * z * (1.0f - z);
    MutableLanes(d_x + S, n) = grad * z * slope;
    grad *= 1.0f - z;
  }
};

// f = σ(x_f), i = σ(x_i), h = f/(f+i) h_prev + i/(f+i) g(x_h). W = 3S.
struct MinLstmScan {
  static int64_t Width(int64_t S) { return 3 * S; }
  static int64_t Parameters(int64_t) { return 0; }
  static int64_t Lanes_(int64_t S) { return S; }

  static void Forward(int64_t n, int64_t S, const float* x, const float*, const float* h_prev,
                      float* h) {
    const Lanes f = Sigmoid(ConstLanes(x, n)), i = Sigmoid(ConstLanes(x + S, n));
    Lanes candidate;
    PositiveCandidate(ConstLanes(x + 2 * S, n), &candidate, nullptr);
    MutableLanes(h, n) = (f * ConstLanes(h_prev, n) + i * candidate) / (f + i);
  }

  static void Backward(int64_t n, int64_t S, const float* x, const float*, const float* h_prev,
                       float* g, float* d_x, float*) {
    const Lanes f = Sigmoid(ConstLanes(x, n)), i = Sigmoid(ConstLanes(x + S, n));
    Lanes candidate, slope;
    PositiveCandidate(ConstLanes(x + 2 * S, n), &candidate, &slope);
    const Lanes total = f + i;
    MutableLanes grad(g, n);
    // d f' = g h_prev and d i' = g h̃, with f' = f/(f+i) and i' = 1 - f'.
    const Lanes difference = grad * (ConstLanes(h_prev, n) - candidate) / (total * total);
    MutableLanes(d_x, n) = difference * i * f * (1.0f - f);
    MutableLanes(d_x + S, n) = -difference * f * i * (1.0f - i);
    MutableLanes(d_x + 2 * S, n) = grad * i / total * slope;
    grad *= f / total;
  }
};

// The LRU's complex diagonal recurrence on [Re x | Im x] (S = 2N lanes' worth):
// x = λ x_prev + γ (Bu), with parameters [Re λ | Im λ | γ] (Q = 3N) and W = 2N.
struct LruScan {
  static int64_t Width(int64_t S) { return S; }
  static int64_t Parameters(int64_t S) { return 3 * S / 2; }
  static int64_t Lanes_(int64_t S) { return S / 2; }

  static void Forward(int64_t n, int64_t S, const float* x, const float* p, const float* h_prev,
                      float* h) {
    const int64_t N = S / 2;
    const ConstLanes lr(p, n), li(p + N, n), gamma(p + 2 * N, n);
    const ConstLanes re(h_prev, n), im(h_prev + N, n);
    MutableLanes(h, n) = lr * re - li * im + gamma * ConstLanes(x, n);
    MutableLanes(h + N, n) = lr * im + li * re + gamma * ConstLanes(x + N, n);
  }

  static void Backward(int64_t n, int64_t S, const float* x, const float* p, const float* h_prev,
                       float* g, float* d_x, float* d_p) {
    const int64_t N = S / 2;
    const ConstLanes lr(p, n), li(p + N, n), gamma(p + 2 * N, n);
    const ConstLanes re(h_prev, n), im(h_prev + N, n);
    MutableLanes gr(g, n), gi(g + N, n);
    MutableLanes(d_x, n) = gr * gamma;
    MutableLanes(d_x + N, n) = gi * gamma;
    MutableLanes(d_p, n) += gr * re + gi * im;
    MutableLanes(d_p + N, n) += gi * re - gr * im;
    MutableLanes(d_p + 2 * N, n) += gr * ConstLanes(x, n) + gi * ConstLanes(x + N, n);
    const Lanes previous_real = gr * lr + gi * li;
    gi = gi * lr - gr * li;
    gr = previous_real;
  }
};

// Checks shared by both passes; reads B, T, I and S.
template <class Scan>
absl::Status ReadScanSizes(OpKernelContext* ctx, const Tensor& h0, const Tensor& keep,
                           Sizes* sizes, int64_t* inputs) {
  const Tensor &x = ctx->input(0), &kernel = ctx->input(1);
  if (x.dims() != 3 || h0.dims() != 2 || kernel.dims() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rnnlab scan: expected inputs [B, T, I], kernel [I, W] and h0 [B, S], got ",
        ShapeText(x), ", ", ShapeText(kernel), " and ", ShapeText(h0)));
  }
  sizes->rows = x.dim_size(0);
  sizes->steps = x.dim_size(1);
  sizes->units = h0.dim_size(1);
  *inputs = x.dim_size(2);
  const int64_t B = sizes->rows, T = sizes->steps, S = sizes->units, W = Scan::Width(S);
  TF_RETURN_IF_ERROR(Expect(kernel, "kernel", "[I, W]", {*inputs, W}));
  TF_RETURN_IF_ERROR(ExpectOrEmpty(ctx->input(2), "bias", "[W]", {W}));
  TF_RETURN_IF_ERROR(Expect(h0, "h0", "[B, S]", {B, S}));
  if (Scan::Parameters(S)) {
    TF_RETURN_IF_ERROR(Expect(ctx->input(3), "parameters", "[Q]", {Scan::Parameters(S)}));
  } else {
    TF_RETURN_IF_ERROR(Expect(ctx->input(3), "parameters", "empty for this cell", {0}));
  }
  return ExpectOrEmpty(keep, "keep", "[B, T]", {B, T});
}

constexpr int64_t kBlock = 64;  // steps projected at once: kBlock × W floats stay in cache

// Runs work(first_row, end_row, shard) on `shards` threads (this one included).
template <class Work>
void OverRows(int64_t rows, int64_t shards, Work work) {
  shards = std::max<int64_t>(1, std::min(shards, rows));
  std::vector<std::thread> threads;
  for (int64_t shard = 1; shard < shards; ++shard) {
    threads.emplace_back(work, rows * shard / shards, rows * (shard + 1) / shards, shard);
  }
  work(0, rows / shards, 0);
  for (auto& thread : threads) thread.join();
}

constexpr int64_t kNarrowInputs = 8;  // up to this many inputs, row updates beat a GEMM call

// Steps [t0, t0 + n) of one row: inputs [n, I] times the kernel, plus the bias. For a few
// inputs (the synthetic tasks' 2) as I vectorised row updates per step, where a GEMM call
// would cost more in packing than the arithmetic; for more, as one small GEMM.
void ProjectBlock(const float* inputs, int64_t n, int64_t I, const ConstMatrixMap& kernel,
                  const float* bias, Matrix* projected) {
  const int64_t W = kernel.cols();
  projected->resize(n, W);
  if (I > kNarrowInputs) {
    projected->noalias() = ConstMatrixMap(inputs, n, I) * kernel;
  } else {
    projected->setZero();
    for (int64_t k = 0; k < n; ++k) {
      Row row(projected->data() + k * W, W);
      for (int64_t i = 0; i < I; ++i) {
        row += inputs[k * I + i] * ConstRow(kernel.data() + i * W, W);
      }
    }
  }
  if (bias != nullptr) projected->rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, W);
}

// The block's share of the weight and input gradients, from its d_projected [n, W].
void ProjectBlockBackward(const float* inputs, int64_t n, int64_t I,
                          const ConstMatrixMap& kernel, const Matrix& d_projected,
                          Matrix* d_kernel, Eigen::ArrayXf* d_bias, float* d_inputs) {
  const int64_t W = kernel.cols();
  *d_bias += d_projected.colwise().sum().transpose().array();
  if (I > kNarrowInputs) {
    d_kernel->noalias() += ConstMatrixMap(inputs, n, I).transpose() * d_projected;
    MatrixMap(d_inputs, n, I).noalias() = d_projected * kernel.transpose();
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    const ConstRow d_row(d_projected.data() + k * W, W);
    for (int64_t i = 0; i < I; ++i) {
      Row(d_kernel->data() + i * W, W) += inputs[k * I + i] * d_row;
      d_inputs[k * I + i] = (d_row * ConstRow(kernel.data() + i * W, W)).sum();
    }
  }
}

template <class Scan>
class ScanForward : public OpKernel {
 public:
  explicit ScanForward(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shards", &shards_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &h0 = ctx->input(4), &keep = ctx->input(5);
    Sizes s;
    int64_t I;
    OP_REQUIRES_OK(ctx, ReadScanSizes<Scan>(ctx, h0, keep, &s, &I));
    const int64_t T = s.steps, S = s.units, W = Scan::Width(S), lanes = Scan::Lanes_(S);
    Tensor* states_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({s.rows, T, S}), &states_out));
    const float* x = ctx->input(0).flat<float>().data();
    const ConstMatrixMap kernel(ctx->input(1).flat<float>().data(), I, W);
    const float* bias = DataOrNull(ctx->input(2));
    const float* p = DataOrNull(ctx->input(3));
    const float* masks = DataOrNull(keep);
    float* states = states_out->flat<float>().data();
    OverRows(s.rows, shards_, [&](int64_t first, int64_t end, int64_t) {
      Matrix projected;
      for (int64_t b = first; b < end; ++b) {
        const float* previous = h0.flat<float>().data() + b * S;
        for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
          const int64_t n = std::min(kBlock, T - t0);
          ProjectBlock(x + (b * T + t0) * I, n, I, kernel, bias, &projected);
          for (int64_t k = 0; k < n; ++k) {
            const int64_t at = b * T + t0 + k;
            float* h = states + at * S;
            if (masks != nullptr && masks[at] == 0.0f) {
              std::copy(previous, previous + S, h);
            } else {
              for (int64_t j = 0; j < lanes; j += kLanes) {
                Scan::Forward(std::min(kLanes, lanes - j), S, projected.data() + k * W + j,
                              p ? p + j : nullptr, previous + j, h + j);
              }
            }
            previous = h;
          }
        }
      }
    });
  }

 private:
  int64_t shards_;
};

template <class Scan>
class ScanBackward : public OpKernel {
 public:
  explicit ScanBackward(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("shards", &shards_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &h0 = ctx->input(5), &keep = ctx->input(8);
    Sizes s;
    int64_t I;
    OP_REQUIRES_OK(ctx, ReadScanSizes<Scan>(ctx, h0, keep, &s, &I));
    const int64_t B = s.rows, T = s.steps, S = s.units, W = Scan::Width(S);
    const int64_t lanes = Scan::Lanes_(S), Q = Scan::Parameters(S);
    OP_REQUIRES_OK(ctx, Expect(ctx->input(4), "states", "[B, T, S]", {B, T, S}));
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(ctx->input(6), "d_states", "[B, T, S]", {B, T, S}));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(7), "d_final", "[B, S]", {B, S}));
    const bool has_bias = ctx->input(2).NumElements() > 0;
    Tensor *d_inputs_out, *d_kernel_out, *d_bias_out, *d_parameters_out, *d_h0_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, I}), &d_inputs_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({I, W}), &d_kernel_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({has_bias ? W : 0}), &d_bias_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({Q}), &d_parameters_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({B, S}), &d_h0_out));
    const float* x = ctx->input(0).flat<float>().data();
    const ConstMatrixMap kernel(ctx->input(1).flat<float>().data(), I, W);
    const float* bias = DataOrNull(ctx->input(2));
    const float* p = DataOrNull(ctx->input(3));
    const float* states = ctx->input(4).flat<float>().data();
    const float* d_states = DataOrNull(ctx->input(6));
    const float* masks = DataOrNull(keep);
    float* d_x = d_inputs_out->flat<float>().data();
    float* g_all = d_h0_out->flat<float>().data();  // dL/dh_t, carried back to h_0
    std::copy_n(ctx->input(7).flat<float>().data(), B * S, g_all);
    const int64_t shards = std::max<int64_t>(1, std::min(shards_, B));
    // Each thread sums its rows' weight gradients apart; they are added up at the end.
    std::vector<Matrix> d_kernels(shards, Matrix::Zero(I, W));
    std::vector<Eigen::ArrayXf> d_biases(shards, Eigen::ArrayXf::Zero(W));
    std::vector<Eigen::ArrayXf> d_parameters(shards, Eigen::ArrayXf::Zero(Q));
    OverRows(B, shards, [&](int64_t first, int64_t end, int64_t shard) {
      Matrix projected, d_projected;
      float* d_p = Q ? d_parameters[shard].data() : nullptr;
      for (int64_t b = first; b < end; ++b) {
        float* g = g_all + b * S;
        const int64_t last_block = (T - 1) / kBlock * kBlock;
        for (int64_t t0 = last_block; t0 >= 0; t0 -= kBlock) {
          const int64_t n = std::min(kBlock, T - t0);
          ProjectBlock(x + (b * T + t0) * I, n, I, kernel, bias, &projected);
          d_projected.resize(n, W);
          for (int64_t k = n - 1; k >= 0; --k) {
            const int64_t at = b * T + t0 + k;
            if (d_states != nullptr) MutableLanes(g, S) += ConstLanes(d_states + at * S, S);
            float* d_row = d_projected.data() + k * W;
            if (masks != nullptr && masks[at] == 0.0f) {
              std::fill(d_row, d_row + W, 0.0f);
              continue;
            }
            const float* previous = at > b * T ? states + (at - 1) * S : h0.flat<float>().data() + b * S;
            for (int64_t j = 0; j < lanes; j += kLanes) {
              Scan::Backward(std::min(kLanes, lanes - j), S, projected.data() + k * W + j,
                             p ? p + j : nullptr, previous + j, g + j, d_row + j,
                             d_p ? d_p + j : nullptr);
            }
          }
          ProjectBlockBackward(x + (b * T + t0) * I, n, I, kernel, d_projected,
                               &d_kernels[shard], &d_biases[shard], d_x + (b * T + t0) * I);
        }
      }
    });
    MatrixMap d_kernel(d_kernel_out->flat<float>().data(), I, W);
    d_kernel.setZero();
    for (const auto& part : d_kernels) d_kernel += part;
    if (has_bias) {
      MutableLanes d_bias(d_bias_out->flat<float>().data(), W);
      d_bias.setZero();
      for (const auto& part : d_biases) d_bias += part;
    }
    if (Q) {
      MutableLanes d_p(d_parameters_out->flat<float>().data(), Q);
      d_p.setZero();
      for (const auto& part : d_parameters) d_p += part;
    }
  }

 private:
  int64_t shards_;
};

absl::Status ScanForwardShapes(InferenceContext* ctx) {
  ShapeHandle inputs, h0;
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(0), 3, &inputs));
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(4), 2, &h0));
  ctx->set_output(
      0, ctx->MakeShape({ctx->Dim(inputs, 0), ctx->Dim(inputs, 1), ctx->Dim(h0, 1)}));
  return absl::OkStatus();
}

absl::Status ScanBackwardShapes(InferenceContext* ctx) {
  for (int index = 0; index < 4; ++index) ctx->set_output(index, ctx->input(index));
  ctx->set_output(4, ctx->input(5));
  return absl::OkStatus();
}

}  // namespace rnnlab

#define RNNLAB_SCAN_OPS(Name)                              \
  REGISTER_OP("Rnnlab" #Name "Forward")                   \
      .Input("inputs: float")                             \
      .Input("kernel: float")                             \
      .Input("bias: float")                               \
      .Input("parameters: float")                         \
      .Input("initial: float")                            \
      .Input("keep: float")                               \
      .Attr("shards: int = 1")                            \
      .Output("states: float")                            \
      .SetShapeFn(rnnlab::ScanForwardShapes);             \
  REGISTER_OP("Rnnlab" #Name "Backward")                  \
      .Input("inputs: float")                             \
      .Input("kernel: float")                             \
      .Input("bias: float")                               \
      .Input("parameters: float")                         \
      .Input("states: float")                             \
      .Input("initial: float")                            \
      .Input("d_states: float")                           \
      .Input("d_final: float")                            \
      .Input("keep: float")                               \
      .Attr("shards: int = 1")                            \
      .Output("d_inputs: float")                          \
      .Output("d_kernel: float")                          \
      .Output("d_bias: float")                            \
      .Output("d_parameters: float")                      \
      .Output("d_initial: float")                         \
      .SetShapeFn(rnnlab::ScanBackwardShapes)

RNNLAB_SCAN_OPS(MinGruScan);
RNNLAB_SCAN_OPS(MinLstmScan);
RNNLAB_SCAN_OPS(LruScan);

namespace rnnlab {
using MinGruScanForward = ScanForward<MinGruScan>;
using MinGruScanBackward = ScanBackward<MinGruScan>;
using MinLstmScanForward = ScanForward<MinLstmScan>;
using MinLstmScanBackward = ScanBackward<MinLstmScan>;
using LruScanForward = ScanForward<LruScan>;
using LruScanBackward = ScanBackward<LruScan>;
}  // namespace rnnlab

REGISTER_KERNEL_BUILDER(Name("RnnlabMinGruScanForward").Device(DEVICE_CPU), rnnlab::MinGruScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabMinGruScanBackward").Device(DEVICE_CPU), rnnlab::MinGruScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabMinLstmScanForward").Device(DEVICE_CPU), rnnlab::MinLstmScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabMinLstmScanBackward").Device(DEVICE_CPU), rnnlab::MinLstmScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabLruScanForward").Device(DEVICE_CPU), rnnlab::LruScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabLruScanBackward").Device(DEVICE_CPU), rnnlab::LruScanBackward);
