// The recurrences of rnnlab.recurrence.fused (SimpleRNN, LSTM, GRU) as TensorFlow ops: every
// step of the forward pass in one op, every step of the backward pass in another.
//
// In TensorFlow's graph a step costs some 25 small ops, each a few microseconds of dispatch,
// around its one matmul; here a step is that matmul and a few vectorised loops over the
// rows. The maths is rnnlab.recurrence.cell_kinds', which is Keras's: the sigmoid gates'
// columns of the projection, recurrent kernel and bias come halved, so
// sigmoid(x) = tanh(x/2)/2 + 1/2 and a gate's derivative with respect to its halved
// pre-activation is 2·s·(1 - s).
//
// Every op has the same inputs, so one template serves the three cells:
//   forward(projected [T,B,G·H], recurrent_kernel [H,G·H], recurrent_bias [G·H] or [0],
//           initial_h [B,H], initial_c [B,H] or [0], keep [T,B,1] or [0])
//       -> h [T,B,H], c [T,B,H] or [0], records [T,B,R·H]
//   backward(records, h, c, initial_h, initial_c, recurrent_kernel, d_h [T,B,H] or [0],
//            d_final_h, d_final_c, keep)
//       -> d_projected [T,B,G·H], d_inner [T,B,G·H] or [0], d_initial_h, d_initial_c
// `keep` is 1 where a step counts and 0 where a mask holds the states. `d_inner`, the
// gradient of h_{t-1} @ kernel + bias, is output only where it differs from d_projected.
// The kernels read their inputs by these names (checks.h), and rnnlab.recurrence.native_calls
// passes them by name.
#include "checks.h"

namespace rnnlab {

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

template <class Cell>
class Forward : public OpKernel {
 public:
  explicit Forward(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor *projected, *kernel, *bias_in, *initial_h, *initial_c, *keep;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, {{"projected", &projected},
                                         {"recurrent_kernel", &kernel},
                                         {"recurrent_bias", &bias_in},
                                         {"initial_h", &initial_h},
                                         {"initial_c", &initial_c},
                                         {"keep", &keep}}));
    Sizes s;
    OP_REQUIRES_OK(ctx, ReadSizes<Cell>(*projected, *kernel, bias_in, *keep, &s));
    const int64_t H = s.units, G = Cell::kGates * H, R = Cell::kRecords * H, B = s.rows;
    OP_REQUIRES_OK(ctx, Expect(*projected, "projected", "[T, B, G × H]", {s.steps, B, G}));
    OP_REQUIRES_OK(ctx, Expect(*initial_h, "initial_h", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(*initial_c, "initial_c", "[B, H]", {B, H}));
    const TensorShape states_shape({s.steps, B, H}), none({0});
    Tensor *h_out, *c_out, *records_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("h", states_shape, &h_out));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_output("c", Cell::kStates == 2 ? states_shape : none, &c_out));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output("records", TensorShape({s.steps, B, R}), &records_out));
    ConstMatrixMap recurrent(kernel->flat<float>().data(), H, G);
    const float* bias = DataOrNull(*bias_in);
    const float* masks = DataOrNull(*keep);
    const float* x = projected->flat<float>().data();
    float* hs = h_out->flat<float>().data();
    float* cs = DataOrNull(*c_out) ? c_out->flat<float>().data() : nullptr;
    float* records = R ? records_out->flat<float>().data() : nullptr;
    const float* h_prev = initial_h->flat<float>().data();
    const float* c_prev = DataOrNull(*initial_c);
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
    const Tensor *records_in, *hs_in, *cs_in, *initial_h, *initial_c, *kernel, *d_h_all,
        *d_final_h, *d_final_c, *keep;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, {{"records", &records_in},
                                         {"h", &hs_in},
                                         {"c", &cs_in},
                                         {"initial_h", &initial_h},
                                         {"initial_c", &initial_c},
                                         {"recurrent_kernel", &kernel},
                                         {"d_h", &d_h_all},
                                         {"d_final_h", &d_final_h},
                                         {"d_final_c", &d_final_c},
                                         {"keep", &keep}}));
    Sizes s;
    OP_REQUIRES_OK(ctx, ReadSizes<Cell>(*hs_in, *kernel, nullptr, *keep, &s));
    const int64_t T = s.steps, H = s.units, G = Cell::kGates * H, R = Cell::kRecords * H,
                  B = s.rows;
    OP_REQUIRES_OK(ctx, Expect(*records_in, "records", "[T, B, records × H]", {T, B, R}));
    OP_REQUIRES_OK(ctx, Expect(*hs_in, "h", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(*cs_in, "c", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, Expect(*initial_h, "initial_h", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(*initial_c, "initial_c", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(*d_h_all, "d_h", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, Expect(*d_final_h, "d_final_h", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectCellState<Cell>(*d_final_c, "d_final_c", "[B, H]", {B, H}));
    const TensorShape gates_shape({s.steps, B, G}), none({0});
    Tensor *d_projected_out, *d_inner_out, *d_h_out, *d_c_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_projected", gates_shape, &d_projected_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            "d_inner", Cell::kSeparateInner ? gates_shape : none, &d_inner_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_initial_h", TensorShape({B, H}), &d_h_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            "d_initial_c", Cell::kStates == 2 ? TensorShape({B, H}) : none,
                            &d_c_out));
    ConstMatrixMap recurrent(kernel->flat<float>().data(), H, G);
    const float* records = DataOrNull(*records_in);
    const float* hs = hs_in->flat<float>().data();
    const float* cs = DataOrNull(*cs_in);
    const float* h_initial = initial_h->flat<float>().data();
    const float* c_initial = DataOrNull(*initial_c);
    const float* d_hs = DataOrNull(*d_h_all);
    const float* masks = DataOrNull(*keep);
    float* d_projected = d_projected_out->flat<float>().data();
    float* d_inner = Cell::kSeparateInner ? d_inner_out->flat<float>().data() : d_projected;
    // The gradients carried from step t to step t - 1, and what a mask holds past a step.
    MatrixMap dh(d_h_out->flat<float>().data(), B, H);
    dh = ConstMatrixMap(d_final_h->flat<float>().data(), B, H);
    float* dc_data = Cell::kStates == 2 ? d_c_out->flat<float>().data() : nullptr;
    if (dc_data) {
      MatrixMap(dc_data, B, H) = ConstMatrixMap(d_final_c->flat<float>().data(), B, H);
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
  TF_RETURN_IF_ERROR(InputShape(ctx, "projected", 3, &projected));
  TF_RETURN_IF_ERROR(InputShape(ctx, "recurrent_kernel", 2, &kernel));
  DimensionHandle units = ctx->Dim(kernel, 0), records;
  TF_RETURN_IF_ERROR(ctx->Multiply(units, Cell::kRecords, &records));
  const DimensionHandle steps = ctx->Dim(projected, 0), rows = ctx->Dim(projected, 1);
  ShapeHandle states = ctx->MakeShape({steps, rows, units});
  TF_RETURN_IF_ERROR(SetOutput(ctx, "h", states));
  TF_RETURN_IF_ERROR(SetOutput(ctx, "c", Cell::kStates == 2 ? states : ctx->MakeShape({0})));
  return SetOutput(ctx, "records", ctx->MakeShape({steps, rows, records}));
}

template <class Cell>
absl::Status BackwardShapes(InferenceContext* ctx) {
  ShapeHandle states, kernel;
  TF_RETURN_IF_ERROR(InputShape(ctx, "h", 3, &states));
  TF_RETURN_IF_ERROR(InputShape(ctx, "recurrent_kernel", 2, &kernel));
  ShapeHandle gates =
      ctx->MakeShape({ctx->Dim(states, 0), ctx->Dim(states, 1), ctx->Dim(kernel, 1)});
  ShapeHandle one_step = ctx->MakeShape({ctx->Dim(states, 1), ctx->Dim(kernel, 0)});
  const ShapeHandle none = ctx->MakeShape({0});
  TF_RETURN_IF_ERROR(SetOutput(ctx, "d_projected", gates));
  TF_RETURN_IF_ERROR(SetOutput(ctx, "d_inner", Cell::kSeparateInner ? gates : none));
  TF_RETURN_IF_ERROR(SetOutput(ctx, "d_initial_h", one_step));
  return SetOutput(ctx, "d_initial_c", Cell::kStates == 2 ? one_step : none);
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
