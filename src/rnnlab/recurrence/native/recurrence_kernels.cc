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
#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
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
// No step depends on another through a matmul, so the work is elementwise: every lane of
// every step is a few exps and multiply-adds, written here on whole SIMD packets (Eigen's
// packet functions: AVX2 or AVX-512, whatever the library was built for) with every
// intermediate in registers. With a few inputs (the synthetic tasks' 2) the projection is
// folded into the same loop; with more, a block of kBlock steps is projected by one GEMM
// into a buffer that stays in cache. The backward pass computes the gates again rather
// than reading them from memory. Batch-major; the rows are split between `shards` threads:
//   forward(inputs [B,T,I], kernel [I,W], bias [W] or [0], parameters [Q] or [0], h0 [B,S],
//           keep [B,T] or [0]) -> states [B,T,S]
//   backward(inputs, kernel, bias, parameters, states, h0, d_states [B,T,S] or [0],
//            d_final [B,S], keep)
//       -> d_inputs [B,T,I], d_kernel [I,W], d_bias [W] or [0], d_parameters [Q] or [0], d_h0
// A step whose keep is 0 holds the state. A cell has N lanes (S / kStates), kGates
// pre-activations per lane (W = kGates·N, laid out gate by gate), kStates states and
// kParameters parameters per lane, and one step forward and back on a packet of lanes.
namespace rnnlab {

namespace packet = Eigen::internal;
using Packet = packet::packet_traits<float>::type;
constexpr int64_t kWidth = packet::unpacket_traits<Packet>::size;

// Lanes [0, count) of a row, count ≤ kWidth; a last, partial packet goes through a
// zero-padded copy, so its unused lanes compute on zeros and store nothing.
template <bool kFull = false>
inline Packet Load(const float* from, int64_t count) {
  if (kFull || count == kWidth) return packet::ploadu<Packet>(from);
  alignas(64) float padded[kWidth] = {};
  std::copy_n(from, count, padded);
  return packet::pload<Packet>(padded);
}

template <bool kFull = false>
inline void Store(float* to, const Packet& value, int64_t count) {
  if (kFull || count == kWidth) return packet::pstoreu(to, value);
  alignas(64) float padded[kWidth];
  packet::pstore(padded, value);
  std::copy_n(padded, count, to);
}

inline Packet Constant(float value) { return packet::pset1<Packet>(value); }

// e^(±x) for ±x in [-86, 88], which the caller ensures: e^y = 2^n e^r with n = round(y/ln 2)
// and |r| ≤ ln(2)/2. Adding 1.5·2^23 to y/ln 2 rounds it and leaves n in a float's low bits;
// shifted into the exponent field and added to e^r's bits, they multiply it by 2^n. r uses
// Cody and Waite's two-part ln 2, and e^r a degree-5 polynomial fitted for least relative
// error (for e^-x it is taken at -r, odd terms negated, so no negation is spent). Within 2.2
// ulp of e^y over the range, measured against double precision on a dense grid: enough for
// gates, at 11 vector instructions, against 16 for the degree-6 version before it.
template <bool kNegated = false>
inline Packet ExpInRange(const Packet& x) {
  constexpr float kSign = kNegated ? -1.0f : 1.0f;
  const Packet shifter = Constant(12582912.0f);
  const Packet shifted = packet::pmadd(x, Constant(kSign * 1.44269504088896341f), shifter);
  const Packet n = packet::psub(shifted, shifter);
  // s = ±r = x ∓ n ln 2.
  Packet s = packet::pmadd(n, Constant(-kSign * 0.693359375f), x);
  s = packet::pmadd(n, Constant(kSign * 2.12194440e-4f), s);
  Packet y = Constant(kSign * 8.312487974762917e-3f);
  y = packet::pmadd(y, s, Constant(4.189005494117737e-2f));
  y = packet::pmadd(y, s, Constant(kSign * 0.16667114198207855f));
  y = packet::pmadd(y, s, Constant(0.499992311000824f));
  y = packet::pmadd(y, s, Constant(kSign));
  y = packet::pmadd(y, s, Constant(1.0f));
  using Integers = packet::unpacket_traits<Packet>::integer_packet;
  const Integers exponent = packet::plogical_shift_left<23>(packet::preinterpret<Integers>(shifted));
  return packet::preinterpret<Packet>(packet::padd(packet::preinterpret<Integers>(y), exponent));
}

// 1/p and 1/q by one division and three products: the divider is the slowest unit these
// kernels use. p·q must stay a normal float (TensorFlow flushes denormals to zero).
inline void Reciprocals(const Packet& p, const Packet& q, Packet* inverse_p, Packet* inverse_q) {
  const Packet both = packet::pdiv(Constant(1.0f), packet::pmul(p, q));
  *inverse_p = packet::pmul(q, both);
  *inverse_q = packet::pmul(p, both);
}

// The papers' g(x): x + 1/2 for x ≥ 0, else sigmoid(x) = e / (1 + e) with e = e^min(x, 0):
// positive and continuous. Takes e and 1/(1 + e); `slope`, if given, receives g'(x).
inline Packet PositiveCandidate(const Packet& x, const Packet& e, const Packet& inverse,
                                Packet* slope) {
  const Packet s = packet::pmul(e, inverse);
  if (slope) {
    *slope = packet::pselect(packet::pcmp_le(packet::pzero(x), x), Constant(1.0f),
                             packet::pnmadd(s, s, s));
  }
  // For x ≥ 0, s = 1/2 ≤ x + 1/2; for x < 0, s = σ(x) > x + 1/2 (equal at 0, σ' < 1).
  return packet::pmax(packet::padd(x, Constant(0.5f)), s);
}

// e^min(x, 0), held above e^-86 so that the exponent stays normal.
inline Packet CandidateExp(const Packet& x) {
  return ExpInRange(packet::pmax(packet::pmin(x, packet::pzero(x)), Constant(-86.0f)));
}

// z = σ(x_z), h = (1 - z) h_prev + z g(x_h). x_z is held in [-80, 86], beyond which z is 0 or
// 1 to float precision, so that (1 + e^-x_z)(1 + e^x_h) stays finite and normal.
struct MinGruScan {
  static constexpr int kGates = 2, kStates = 1, kParameters = 0;

  // The update gate z and the candidate g(x_h).
  static void Gates(const Packet* x, Packet* z, Packet* candidate, Packet* slope) {
    const Packet one = Constant(1.0f);
    const Packet e_gate =
        ExpInRange<true>(packet::pmin(packet::pmax(x[0], Constant(-80.0f)), Constant(86.0f)));
    const Packet e_candidate = CandidateExp(x[1]);
    Packet inverse;
    Reciprocals(packet::padd(one, e_gate), packet::padd(one, e_candidate), z, &inverse);
    *candidate = PositiveCandidate(x[1], e_candidate, inverse, slope);
  }

  static void Forward(const Packet* x, const Packet*, const Packet* previous, Packet* state) {
    Packet z, candidate;
    Gates(x, &z, &candidate, nullptr);
    state[0] = packet::pmadd(z, packet::psub(candidate, previous[0]), previous[0]);
  }

  // grad holds dL/dh_t on entry and what reaches h_{t-1} on exit.
  static void Backward(const Packet* x, const Packet*, const Packet* previous, Packet* grad,
                       Packet* d_x, Packet*) {
    Packet z, candidate, slope;
    Gates(x, &z, &candidate, &slope);
    const Packet keep = packet::psub(Constant(1.0f), z);
    const Packet difference = packet::pmul(grad[0], packet::psub(candidate, previous[0]));
    d_x[0] = packet::pmul(difference, packet::pmul(z, keep));
    d_x[1] = packet::pmul(grad[0], packet::pmul(z, slope));
    grad[0] = packet::pmul(grad[0], keep);
  }
};

// f = σ(x_f), i = σ(x_i), h = f/(f+i) h_prev + i/(f+i) g(x_h). With a = e^-x_f and
// c = e^-x_i, f/(f+i) = (1+c)/(2+a+c): two exps for both gates, and one division for
// them and the candidate. The
// pre-activations are clamped to ±40, where the gates are 0 or 1 to float precision and
// (2+a+c)² still fits in a float.
struct MinLstmScan {
  static constexpr int kGates = 3, kStates = 1, kParameters = 0;

  struct Gates {
    Packet a, c, inverse, forget;  // inverse = 1/(2+a+c); forget = f/(f+i), h_prev's share
    Packet candidate, slope;
  };

  static Gates Shares(const Packet* x, bool with_slope) {
    const Packet limit = Constant(40.0f), one = Constant(1.0f);
    Gates gates;
    gates.a = ExpInRange<true>(packet::pmax(packet::pmin(x[0], limit), packet::pnegate(limit)));
    gates.c = ExpInRange<true>(packet::pmax(packet::pmin(x[1], limit), packet::pnegate(limit)));
    const Packet e_candidate = CandidateExp(x[2]);
    Packet inverse_candidate;
    Reciprocals(packet::padd(packet::padd(Constant(2.0f), gates.a), gates.c),
                packet::padd(one, e_candidate), &gates.inverse, &inverse_candidate);
    gates.forget = packet::pmul(packet::padd(one, gates.c), gates.inverse);
    gates.candidate = PositiveCandidate(x[2], e_candidate, inverse_candidate,
                                        with_slope ? &gates.slope : nullptr);
    return gates;
  }

  static void Forward(const Packet* x, const Packet*, const Packet* previous, Packet* state) {
    const Gates gates = Shares(x, false);
    state[0] = packet::pmadd(gates.forget, packet::psub(previous[0], gates.candidate),
                             gates.candidate);
  }

  static void Backward(const Packet* x, const Packet*, const Packet* previous, Packet* grad,
                       Packet* d_x, Packet*) {
    const Packet one = Constant(1.0f);
    const Gates gates = Shares(x, true);
    // With w = dL/d forget / (2+a+c): d forget/d x_f = a(1+c)/(2+a+c)², so d_x_f = w a forget;
    // d forget/d x_i = -c(1+a)/(2+a+c)², so d_x_i = w c (forget - 1).
    const Packet w = packet::pmul(packet::pmul(grad[0], packet::psub(previous[0], gates.candidate)),
                                  gates.inverse);
    d_x[0] = packet::pmul(packet::pmul(w, gates.a), gates.forget);
    d_x[1] = packet::pmul(packet::pmul(w, gates.c), packet::psub(gates.forget, one));
    d_x[2] = packet::pmul(packet::pmul(grad[0], packet::psub(one, gates.forget)), gates.slope);
    grad[0] = packet::pmul(grad[0], gates.forget);
  }
};

// The LRU's complex diagonal recurrence, states [Re x | Im x]: x = λ x_prev + γ (Bu), with
// parameters [Re λ | Im λ | γ] and pre-activations [Re Bu | Im Bu].
struct LruScan {
  static constexpr int kGates = 2, kStates = 2, kParameters = 3;

  static void Forward(const Packet* x, const Packet* p, const Packet* previous, Packet* state) {
    const Packet real = previous[0], imaginary = previous[1];
    state[0] = packet::pmadd(p[0], real, packet::pmadd(p[2], x[0], packet::pmul(p[1], packet::pnegate(imaginary))));
    state[1] = packet::pmadd(p[0], imaginary, packet::pmadd(p[1], real, packet::pmul(p[2], x[1])));
  }

  // d_p accumulates over the steps.
  static void Backward(const Packet* x, const Packet* p, const Packet* previous, Packet* grad,
                       Packet* d_x, Packet* d_p) {
    const Packet &real = previous[0], &imaginary = previous[1];
    const Packet gr = grad[0], gi = grad[1];
    d_x[0] = packet::pmul(gr, p[2]);
    d_x[1] = packet::pmul(gi, p[2]);
    d_p[0] = packet::padd(d_p[0], packet::pmadd(gr, real, packet::pmul(gi, imaginary)));
    d_p[1] = packet::padd(d_p[1], packet::psub(packet::pmul(gi, real), packet::pmul(gr, imaginary)));
    d_p[2] = packet::padd(d_p[2], packet::pmadd(gr, x[0], packet::pmul(gi, x[1])));
    grad[0] = packet::pmadd(gr, p[0], packet::pmul(gi, p[1]));
    grad[1] = packet::psub(packet::pmul(gi, p[0]), packet::pmul(gr, p[1]));
  }
};

template <class Scan>
struct ScanShape {
  static int64_t Lanes(int64_t S) { return S / Scan::kStates; }
  static int64_t Width(int64_t S) { return Scan::kGates * Lanes(S); }
  static int64_t Parameters(int64_t S) { return Scan::kParameters * Lanes(S); }
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
  const int64_t B = sizes->rows, T = sizes->steps, S = sizes->units;
  const int64_t W = ScanShape<Scan>::Width(S), Q = ScanShape<Scan>::Parameters(S);
  if (S % Scan::kStates != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rnnlab scan: h0's width ", S, " is not a multiple of ", Scan::kStates));
  }
  TF_RETURN_IF_ERROR(Expect(kernel, "kernel", "[I, W]", {*inputs, W}));
  TF_RETURN_IF_ERROR(ExpectOrEmpty(ctx->input(2), "bias", "[W]", {W}));
  TF_RETURN_IF_ERROR(Expect(h0, "h0", "[B, S]", {B, S}));
  if (Q) {
    TF_RETURN_IF_ERROR(Expect(ctx->input(3), "parameters", "[Q]", {Q}));
  } else {
    TF_RETURN_IF_ERROR(Expect(ctx->input(3), "parameters", "empty for this cell", {0}));
  }
  return ExpectOrEmpty(keep, "keep", "[B, T]", {B, T});
}

constexpr int64_t kBlock = 64;  // steps projected at once: kBlock × W floats stay in cache

// Runs work(first_row, end_row, shard) for `shards` shards of the rows, side by side: this
// thread and closures on TensorFlow's inter-op pool (`ctx->runner()`) claim shards until
// none is left, so a pool that is busy, or has no other thread, only costs parallelism.
// The pool's idle threads spin for new work a while; a thread of our own would share its
// core with one of them (measured: a shard of our own gained 1.1×, the pool's 1.9×).
template <class Work>
void OverRows(OpKernelContext* ctx, int64_t rows, int64_t shards, Work work) {
  shards = std::max<int64_t>(1, std::min(shards, rows));
  if (shards == 1) return work(0, rows, 0);
  struct Progress {
    std::atomic<int64_t> claimed{0}, finished{0};
    std::mutex mutex;
    std::condition_variable all_finished;
  };
  const auto progress = std::make_shared<Progress>();
  const auto claim_shards = [progress, rows, shards, work = &work] {
    for (int64_t shard; (shard = progress->claimed.fetch_add(1)) < shards;) {
      (*work)(rows * shard / shards, rows * (shard + 1) / shards, shard);
      if (progress->finished.fetch_add(1) + 1 == shards) {
        const std::lock_guard<std::mutex> lock(progress->mutex);
        progress->all_finished.notify_all();
      }
    }
  };
  for (int64_t helper = 1; helper < shards; ++helper) (*ctx->runner())(claim_shards);
  claim_shards();
  std::unique_lock<std::mutex> lock(progress->mutex);
  progress->all_finished.wait(lock, [&] { return progress->finished.load() == shards; });
}

// Up to this many inputs, the projection is kInputs multiply-adds per lane inside the step
// loop, with the kernel's packets in registers; beyond, one GEMM per block of steps.
constexpr int64_t kNarrowInputs = 4;

// What both passes read.
struct ScanData {
  int64_t T, I, N, W, S;
  const float* inputs;  // [B, T, I]
  const float* kernel;  // [I, W]
  const float* bias;    // [W] or null
  const float* parameters;
  const float* keep;  // [B, T] or null
  const float* h0;    // [B, S]

  // Steps [t0, t0 + n) of row b as one GEMM plus the bias (the wide-input route).
  void ProjectBlock(int64_t b, int64_t t0, int64_t n, Matrix* projected) const {
    projected->resize(n, W);
    projected->noalias() =
        ConstMatrixMap(inputs + (b * T + t0) * I, n, I) * ConstMatrixMap(kernel, I, W);
    if (bias) projected->rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, W);
  }
};

// A few packets that the compiler keeps in registers (zero-length arrays are not C++).
template <int Count>
struct Packets {
  Packet at[Count > 0 ? Count : 1];
  Packet* data() { return at; }
  const Packet* data() const { return at; }
  Packet& operator[](int index) { return at[index]; }
  const Packet& operator[](int index) const { return at[index]; }
};

// Where a packet of lanes gets its pre-activations. kInputs > 0: computed from the step's
// inputs and the kernel's packets, loaded once per packet of lanes; 0: read from the
// block's GEMM.
template <int kGates, int kInputs>
struct PreActivations {
  Packet kernel[kInputs > 0 ? kInputs : 1][kGates], bias[kGates];

  PreActivations(const ScanData& d, int64_t j, int64_t count) {
    for (int g = 0; g < kGates; ++g) {
      bias[g] = d.bias ? Load(d.bias + g * d.N + j, count) : packet::pset1<Packet>(0.0f);
      for (int i = 0; i < kInputs; ++i) kernel[i][g] = Load(d.kernel + i * d.W + g * d.N + j, count);
    }
  }

  // Step `at`; `block_row` is its row of the block's GEMM, used when kInputs is 0.
  template <bool kFull>
  void Compute(const ScanData& d, int64_t at, const float* block_row, int64_t j,
               int64_t count, Packet* x) const {
    if (kInputs == 0) {
      for (int g = 0; g < kGates; ++g) x[g] = Load<kFull>(block_row + g * d.N + j, count);
      return;
    }
    for (int g = 0; g < kGates; ++g) x[g] = bias[g];
    for (int i = 0; i < kInputs; ++i) {
      const Packet input = packet::pset1<Packet>(d.inputs[at * kInputs + i]);
      for (int g = 0; g < kGates; ++g) x[g] = packet::pmadd(input, kernel[i][g], x[g]);
    }
  }
};

// Lanes [j, j + kWidth) of steps [t0, t0 + n) of row b forward, the state in registers;
// `block` is the steps' GEMM (wide inputs) or null.
template <class Scan, int kInputs, bool kFull>
void ForwardSteps(const ScanData d, int64_t b, int64_t j, int64_t t0, int64_t n,
                  const float* block, float* states) {
  const int64_t N = d.N, S = d.S, count = std::min(kWidth, N - j);
  const PreActivations<Scan::kGates, kInputs> pre(d, j, count);
  Packets<Scan::kParameters> p;
  for (int q = 0; q < Scan::kParameters; ++q) p[q] = Load<kFull>(d.parameters + q * N + j, count);
  const float* before = t0 == 0 ? d.h0 + b * S : states + (b * d.T + t0 - 1) * S;
  Packets<Scan::kStates> h;
  for (int r = 0; r < Scan::kStates; ++r) h[r] = Load<kFull>(before + r * N + j, count);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t at = b * d.T + t0 + k;
    if (d.keep == nullptr || d.keep[at] != 0.0f) {  // else the state holds
      Packets<Scan::kGates> x;
      pre.template Compute<kFull>(d, at, block ? block + k * d.W : nullptr, j, count, x.data());
      Scan::Forward(x.data(), p.data(), h.data(), h.data());  // in place
    }
    for (int r = 0; r < Scan::kStates; ++r) Store<kFull>(states + at * S + r * N + j, h[r], count);
  }
}

// One row forward, block by block of steps, packet by packet of lanes.
template <class Scan, int kInputs>
__attribute__((noinline)) void ScanForwardRow(const ScanData& d, int64_t b, float* states,
                                              Matrix* projected) {
  for (int64_t t0 = 0; t0 < d.T; t0 += kBlock) {
    const int64_t n = std::min(kBlock, d.T - t0);
    if (kInputs == 0) d.ProjectBlock(b, t0, n, projected);
    const float* block = kInputs == 0 ? projected->data() : nullptr;
    int64_t j = 0;
    for (; j + kWidth <= d.N; j += kWidth) {
      ForwardSteps<Scan, kInputs, true>(d, b, j, t0, n, block, states);
    }
    if (j < d.N) ForwardSteps<Scan, kInputs, false>(d, b, j, t0, n, block, states);
  }
}

// What one thread sums over its rows; the threads' sums are added up at the end.
struct ScanGradientSums {
  Matrix d_kernel;  // [I, W]
  Eigen::ArrayXf d_bias, d_parameters;
};

// Where the backward pass reads the forward states and writes the gradients.
struct ScanGradients {
  const float* states;    // [B, T, S]
  const float* d_states;  // [B, T, S] or null
  float* d_inputs;        // [B, T, I]
  float* carried;         // [B, S]: dL/dh_t, carried back to h_0
};

template <bool kFull>
inline void AddTo(float* to, const Packet& value, int64_t count) {
  Store<kFull>(to, packet::padd(Load<kFull>(to, count), value), count);
}

// Lanes [j, j + kWidth) of steps [t0, t0 + n) of row b backward, last first. Wide inputs
// (kInputs 0): the pre-activations' gradients go to `d_block`, [n, W]. Narrow: the kernel's
// and bias's gradients are summed in registers, and each step's input gradient, a sum over
// all lanes, is summed by packet into `input_sums`, [n, kInputs].
template <class Scan, int kInputs, bool kFull>
void BackwardSteps(const ScanData d, const ScanGradients out, int64_t b, int64_t j,
                   int64_t t0, int64_t n, const float* block, float* d_block,
                   Packet* input_sums, ScanGradientSums* sum) {
  constexpr int G = Scan::kGates;
  const int64_t N = d.N, S = d.S, count = std::min(kWidth, N - j);
  const PreActivations<G, kInputs> pre(d, j, count);
  Packets<Scan::kParameters> p, d_p;
  for (int q = 0; q < Scan::kParameters; ++q) {
    p[q] = Load<kFull>(d.parameters + q * N + j, count);
    d_p[q] = packet::pset1<Packet>(0.0f);
  }
  Packet d_kernel[kInputs > 0 ? kInputs : 1][G], d_bias[G];
  for (int g = 0; g < G; ++g) {
    d_bias[g] = packet::pset1<Packet>(0.0f);
    for (int i = 0; i < kInputs; ++i) d_kernel[i][g] = packet::pset1<Packet>(0.0f);
  }
  float* carried = out.carried + b * S;
  Packets<Scan::kStates> grad;
  for (int r = 0; r < Scan::kStates; ++r) grad[r] = Load<kFull>(carried + r * N + j, count);
  for (int64_t k = n - 1; k >= 0; --k) {
    const int64_t at = b * d.T + t0 + k;
    if (out.d_states) {
      for (int r = 0; r < Scan::kStates; ++r) {
        grad[r] = packet::padd(grad[r], Load<kFull>(out.d_states + at * S + r * N + j, count));
      }
    }
    Packets<G> d_x;
    if (d.keep != nullptr && d.keep[at] == 0.0f) {  // h_t = h_{t-1}: the gradient passes
      if (kInputs > 0) continue;
      for (int g = 0; g < G; ++g) d_x[g] = packet::pset1<Packet>(0.0f);
    } else {
      Packets<G> x;
      pre.template Compute<kFull>(d, at, block ? block + k * d.W : nullptr, j, count, x.data());
      const float* previous = at > b * d.T ? out.states + (at - 1) * S : d.h0 + b * S;
      Packets<Scan::kStates> before;
      for (int r = 0; r < Scan::kStates; ++r) before[r] = Load<kFull>(previous + r * N + j, count);
      Scan::Backward(x.data(), p.data(), before.data(), grad.data(), d_x.data(), d_p.data());
    }
    if (kInputs == 0) {
      for (int g = 0; g < G; ++g) Store<kFull>(d_block + k * d.W + g * N + j, d_x[g], count);
      continue;
    }
    for (int i = 0; i < kInputs; ++i) {
      const Packet input = packet::pset1<Packet>(d.inputs[at * kInputs + i]);
      Packet through = input_sums[k * kInputs + i];
      for (int g = 0; g < G; ++g) {
        d_kernel[i][g] = packet::pmadd(input, d_x[g], d_kernel[i][g]);
        through = packet::pmadd(d_x[g], pre.kernel[i][g], through);
      }
      input_sums[k * kInputs + i] = through;
    }
    for (int g = 0; g < G; ++g) d_bias[g] = packet::padd(d_bias[g], d_x[g]);
  }
  for (int r = 0; r < Scan::kStates; ++r) Store<kFull>(carried + r * N + j, grad[r], count);
  for (int q = 0; q < Scan::kParameters; ++q) {
    AddTo<kFull>(sum->d_parameters.data() + q * N + j, d_p[q], count);
  }
  for (int g = 0; g < G; ++g) {
    if (kInputs > 0 && d.bias) AddTo<kFull>(sum->d_bias.data() + g * N + j, d_bias[g], count);
    for (int i = 0; i < kInputs; ++i) {
      AddTo<kFull>(sum->d_kernel.data() + i * d.W + g * N + j, d_kernel[i][g], count);
    }
  }
}

// One row backward, block by block from the last, packet by packet of lanes.
template <class Scan, int kInputs>
__attribute__((noinline)) void ScanBackwardRow(const ScanData& d, const ScanGradients& out,
                                               int64_t b, Matrix* projected,
                                               Matrix* d_projected, ScanGradientSums* sum) {
  const int64_t I = d.I, W = d.W;
  Packet input_sums[kBlock * (kInputs > 0 ? kInputs : 1)];
  const int64_t last_block = (d.T - 1) / kBlock * kBlock;
  for (int64_t t0 = last_block; t0 >= 0; t0 -= kBlock) {
    const int64_t n = std::min(kBlock, d.T - t0);
    if (kInputs == 0) {
      d.ProjectBlock(b, t0, n, projected);
      d_projected->resize(n, W);
    } else {
      std::fill_n(input_sums, n * kInputs, packet::pset1<Packet>(0.0f));
    }
    const float* block = kInputs == 0 ? projected->data() : nullptr;
    float* d_block = kInputs == 0 ? d_projected->data() : nullptr;
    int64_t j = 0;
    for (; j + kWidth <= d.N; j += kWidth) {
      BackwardSteps<Scan, kInputs, true>(d, out, b, j, t0, n, block, d_block, input_sums, sum);
    }
    if (j < d.N) {
      BackwardSteps<Scan, kInputs, false>(d, out, b, j, t0, n, block, d_block, input_sums, sum);
    }
    float* d_inputs = out.d_inputs + (b * d.T + t0) * I;
    if (kInputs > 0) {
      for (int64_t k = 0; k < n * kInputs; ++k) d_inputs[k] = packet::predux(input_sums[k]);
      continue;
    }
    const ConstMatrixMap block_inputs(d.inputs + (b * d.T + t0) * I, n, I);
    if (d.bias) sum->d_bias += d_projected->colwise().sum().transpose().array();
    sum->d_kernel.noalias() += block_inputs.transpose() * *d_projected;
    MatrixMap(d_inputs, n, I).noalias() = *d_projected * ConstMatrixMap(d.kernel, I, W).transpose();
  }
}

// Calls row<kInputs>() with the narrow route for inputs up to kNarrowInputs, else 0.
template <class Call>
void WithInputs(int64_t inputs, Call call) {
  switch (inputs) {
    case 1: return call(std::integral_constant<int, 1>());
    case 2: return call(std::integral_constant<int, 2>());
    case 3: return call(std::integral_constant<int, 3>());
    case 4: return call(std::integral_constant<int, 4>());
    default: return call(std::integral_constant<int, 0>());
  }
}

// What both ops read: inputs, kernel, bias and parameters (their inputs 0-3), h0 and keep.
template <class Scan>
ScanData ReadScanData(OpKernelContext* ctx, const Sizes& s, int64_t inputs, const Tensor& h0,
                      const Tensor& keep) {
  return ScanData{s.steps,
                  inputs,
                  ScanShape<Scan>::Lanes(s.units),
                  ScanShape<Scan>::Width(s.units),
                  s.units,
                  ctx->input(0).flat<float>().data(),
                  ctx->input(1).flat<float>().data(),
                  DataOrNull(ctx->input(2)),
                  DataOrNull(ctx->input(3)),
                  DataOrNull(keep),
                  h0.flat<float>().data()};
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
    const int64_t T = s.steps, S = s.units;
    Tensor* states_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({s.rows, T, S}), &states_out));
    const ScanData data = ReadScanData<Scan>(ctx, s, I, h0, keep);
    float* states = states_out->flat<float>().data();
    OverRows(ctx, s.rows, shards_, [&](int64_t first, int64_t end, int64_t) {
      Matrix projected;
      WithInputs(I, [&](auto inputs) {
        for (int64_t b = first; b < end; ++b) {
          ScanForwardRow<Scan, decltype(inputs)::value>(data, b, states, &projected);
        }
      });
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
    const int64_t B = s.rows, T = s.steps, S = s.units;
    const int64_t W = ScanShape<Scan>::Width(S), Q = ScanShape<Scan>::Parameters(S);
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
    const ScanData data = ReadScanData<Scan>(ctx, s, I, h0, keep);
    const ScanGradients out{ctx->input(4).flat<float>().data(), DataOrNull(ctx->input(6)),
                        d_inputs_out->flat<float>().data(), d_h0_out->flat<float>().data()};
    std::copy_n(ctx->input(7).flat<float>().data(), B * S, out.carried);
    const int64_t shards = std::max<int64_t>(1, std::min(shards_, B));
    std::vector<ScanGradientSums> sums(shards);
    OverRows(ctx, B, shards, [&](int64_t first, int64_t end, int64_t shard) {
      ScanGradientSums& sum = sums[shard];
      sum.d_kernel = Matrix::Zero(I, W);
      sum.d_bias = Eigen::ArrayXf::Zero(W);
      sum.d_parameters = Eigen::ArrayXf::Zero(Q);
      Matrix projected, d_projected;
      WithInputs(I, [&](auto inputs) {
        for (int64_t b = first; b < end; ++b) {
          ScanBackwardRow<Scan, decltype(inputs)::value>(data, out, b, &projected,
                                                         &d_projected, &sum);
        }
      });
    });
    MatrixMap d_kernel(d_kernel_out->flat<float>().data(), I, W);
    d_kernel.setZero();
    for (const auto& part : sums) d_kernel += part.d_kernel;
    if (has_bias) {
      Row d_bias(d_bias_out->flat<float>().data(), W);
      d_bias.setZero();
      for (const auto& part : sums) d_bias += part.d_bias;
    }
    if (Q) {
      Row d_p(d_parameters_out->flat<float>().data(), Q);
      d_p.setZero();
      for (const auto& part : sums) d_p += part.d_parameters;
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
