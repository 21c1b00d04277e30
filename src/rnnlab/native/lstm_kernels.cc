// The LSTM recurrence of rnnlab.fused_rnn as two TensorFlow ops: every step of the forward
// pass in one op, every step of the backward pass in another.
//
// In TensorFlow's graph a step costs about 25 small ops, each a few microseconds of
// dispatch, around its one matmul; here a step is that matmul and a few vectorised loops
// over the rows. The maths is fused_rnn's: the sigmoid gates' columns of the projection and
// of the recurrent kernel come halved, so sigmoid(x) = tanh(x/2)/2 + 1/2 and one tanh serves
// every gate. Gate order i, f, c, o as Keras's. `keep` [T, B, 1] is 1 where a step counts and
// 0 where a mask holds the states; an empty `keep` means no mask.
#include <Eigen/Dense>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace rnnlab {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;

// Outputs shaped [T, B, units] with units the recurrent kernel's rows; activations as projected.
absl::Status ForwardShapes(InferenceContext* ctx) {
  ShapeHandle projected, kernel;
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(0), 3, &projected));
  TF_RETURN_IF_ERROR(ctx->WithRank(ctx->input(1), 2, &kernel));
  ShapeHandle states =
      ctx->MakeShape({ctx->Dim(projected, 0), ctx->Dim(projected, 1), ctx->Dim(kernel, 0)});
  ctx->set_output(0, states);
  ctx->set_output(1, states);
  ctx->set_output(2, projected);
  return absl::OkStatus();
}

absl::Status BackwardShapes(InferenceContext* ctx) {
  ctx->set_output(0, ctx->input(0));
  ctx->set_output(1, ctx->input(2));
  ctx->set_output(2, ctx->input(2));
  return absl::OkStatus();
}

}  // namespace rnnlab

REGISTER_OP("RnnlabLstmForward")
    .Input("projected: float")         // [T, B, 4H]: inputs @ kernel + bias, per step
    .Input("recurrent_kernel: float")  // [H, 4H]
    .Input("initial_h: float")         // [B, H]
    .Input("initial_c: float")         // [B, H]
    .Input("keep: float")              // [T, B, 1] or [0]
    .Output("h: float")                // [T, B, H]: the states after every step
    .Output("c: float")                // [T, B, H]
    .Output("activations: float")      // [T, B, 4H]: the gates, kept for the backward pass
    .SetShapeFn(rnnlab::ForwardShapes);

REGISTER_OP("RnnlabLstmBackward")
    .Input("activations: float")       // [T, B, 4H] from the forward op
    .Input("c: float")                 // [T, B, H] from the forward op
    .Input("initial_c: float")         // [B, H]
    .Input("recurrent_kernel: float")  // [H, 4H]
    .Input("d_h: float")               // [T, B, H], or [0] when only the final states are used
    .Input("d_final_h: float")         // [B, H]
    .Input("d_final_c: float")         // [B, H]
    .Input("keep: float")              // [T, B, 1] or [0]
    .Output("d_projected: float")      // [T, B, 4H]: also the gradient of h_{t-1} @ kernel
    .Output("d_initial_h: float")      // [B, H]
    .Output("d_initial_c: float")      // [B, H]
    .SetShapeFn(rnnlab::BackwardShapes);

namespace rnnlab {

struct Sizes {
  int64_t steps, rows, units;
};

// Checks what both ops share and reads their sizes.
absl::Status CheckSizes(const Tensor& gates, const Tensor& kernel, const Tensor& keep,
                        Sizes* sizes) {
  if (gates.dims() != 3 || kernel.dims() != 2) {
    return absl::InvalidArgumentError("rnnlab LSTM: expected [T, B, 4H] and [H, 4H]");
  }
  sizes->steps = gates.dim_size(0);
  sizes->rows = gates.dim_size(1);
  sizes->units = kernel.dim_size(0);
  const int64_t width = 4 * sizes->units;
  if (gates.dim_size(2) != width || kernel.dim_size(1) != width) {
    return absl::InvalidArgumentError("rnnlab LSTM: gates must be 4 × the kernel's rows");
  }
  if (keep.NumElements() != 0 && keep.NumElements() != sizes->steps * sizes->rows) {
    return absl::InvalidArgumentError("rnnlab LSTM: keep must be [T, B, 1] or empty");
  }
  return absl::OkStatus();
}

class LstmForward : public OpKernel {
 public:
  explicit LstmForward(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& projected = ctx->input(0);
    const Tensor& kernel = ctx->input(1);
    const Tensor& keep = ctx->input(4);
    Sizes s;
    OP_REQUIRES_OK(ctx, CheckSizes(projected, kernel, keep, &s));
    const int64_t H = s.units, G = 4 * H, B = s.rows;
    Tensor *h_out, *c_out, *gates_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({s.steps, B, H}), &h_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({s.steps, B, H}), &c_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, projected.shape(), &gates_out));
    ConstMatrixMap recurrent(kernel.flat<float>().data(), H, G);
    const float* x = projected.flat<float>().data();
    const float* masks = keep.NumElements() ? keep.flat<float>().data() : nullptr;
    float* hs = h_out->flat<float>().data();
    float* cs = c_out->flat<float>().data();
    float* gates = gates_out->flat<float>().data();
    const float* h_prev = ctx->input(2).flat<float>().data();
    const float* c_prev = ctx->input(3).flat<float>().data();
    for (int64_t t = 0; t < s.steps; ++t) {
      MatrixMap z(gates + t * B * G, B, G);
      z.noalias() = ConstMatrixMap(h_prev, B, H) * recurrent;
      z += ConstMatrixMap(x + t * B * G, B, G);
      float* h_now = hs + t * B * H;
      float* c_now = cs + t * B * H;
      for (int64_t b = 0; b < B; ++b) {
        float* a = z.data() + b * G;
        Row all(a, G);
        all = all.tanh();
        Row i(a, H), f(a + H, H), g(a + 2 * H, H), o(a + 3 * H, H);
        i = i * 0.5f + 0.5f;
        f = f * 0.5f + 0.5f;
        o = o * 0.5f + 0.5f;
        ConstRow hp(h_prev + b * H, H), cp(c_prev + b * H, H);
        Row c(c_now + b * H, H), h(h_now + b * H, H);
        c = f * cp + i * g;
        h = o * c.tanh();
        if (masks != nullptr) {
          const float k = masks[t * B + b];
          c = cp + k * (c - cp);
          h = hp + k * (h - hp);
        }
      }
      h_prev = h_now;
      c_prev = c_now;
    }
  }
};

class LstmBackward : public OpKernel {
 public:
  explicit LstmBackward(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& activations = ctx->input(0);
    const Tensor& kernel = ctx->input(3);
    const Tensor& d_h_all = ctx->input(4);
    const Tensor& keep = ctx->input(7);
    Sizes s;
    OP_REQUIRES_OK(ctx, CheckSizes(activations, kernel, keep, &s));
    const int64_t H = s.units, G = 4 * H, B = s.rows;
    OP_REQUIRES(ctx, d_h_all.NumElements() == 0 || d_h_all.NumElements() == s.steps * B * H,
                absl::InvalidArgumentError("rnnlab LSTM: d_h must be [T, B, H] or empty"));
    Tensor *d_z_out, *d_h_out, *d_c_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, activations.shape(), &d_z_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &d_h_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, H}), &d_c_out));
    ConstMatrixMap recurrent(kernel.flat<float>().data(), H, G);
    const float* gates = activations.flat<float>().data();
    const float* cs = ctx->input(1).flat<float>().data();
    const float* c_initial = ctx->input(2).flat<float>().data();
    const float* d_hs = d_h_all.NumElements() ? d_h_all.flat<float>().data() : nullptr;
    const float* masks = keep.NumElements() ? keep.flat<float>().data() : nullptr;
    float* d_zs = d_z_out->flat<float>().data();
    // The gradients carried from step t to step t - 1, and what a mask holds past a step.
    MatrixMap dh(d_h_out->flat<float>().data(), B, H);
    MatrixMap dc(d_c_out->flat<float>().data(), B, H);
    dh = ConstMatrixMap(ctx->input(5).flat<float>().data(), B, H);
    dc = ConstMatrixMap(ctx->input(6).flat<float>().data(), B, H);
    Matrix held_h(B, H), held_c(B, H);
    for (int64_t t = s.steps - 1; t >= 0; --t) {
      if (d_hs != nullptr) dh += ConstMatrixMap(d_hs + t * B * H, B, H);
      const float* c_prev = t > 0 ? cs + (t - 1) * B * H : c_initial;
      for (int64_t b = 0; b < B; ++b) {
        Row dh_row(dh.data() + b * H, H), dc_row(dc.data() + b * H, H);
        if (masks != nullptr) {
          const float k = masks[t * B + b];
          Row hold_h(held_h.data() + b * H, H), hold_c(held_c.data() + b * H, H);
          hold_h = dh_row - dh_row * k;
          hold_c = dc_row - dc_row * k;
          dh_row = dh_row * k;
          dc_row = dc_row * k;
        }
        const float* a = gates + (t * B + b) * G;
        ConstRow i(a, H), f(a + H, H), g(a + 2 * H, H), o(a + 3 * H, H);
        ConstRow c(cs + (t * B + b) * H, H), cp(c_prev + b * H, H);
        const Eigen::ArrayXf tanh_c = c.tanh();
        dc_row += dh_row * (o * (1.0f - tanh_c * tanh_c));
        // Sigmoid gates' derivatives are 2·s·(1 - s): their pre-activations came halved.
        float* d_z = d_zs + (t * B + b) * G;
        Row(d_z, H) = dc_row * (2.0f * g * i * (1.0f - i));
        Row(d_z + H, H) = dc_row * (2.0f * cp * f * (1.0f - f));
        Row(d_z + 2 * H, H) = dc_row * (i * (1.0f - g * g));
        Row(d_z + 3 * H, H) = dh_row * (2.0f * tanh_c * o * (1.0f - o));
        dc_row *= f;
      }
      dh.noalias() = ConstMatrixMap(d_zs + t * B * G, B, G) * recurrent.transpose();
      if (masks != nullptr) {
        dh += held_h;
        dc += held_c;
      }
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("RnnlabLstmForward").Device(tensorflow::DEVICE_CPU), LstmForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabLstmBackward").Device(tensorflow::DEVICE_CPU), LstmBackward);

}  // namespace rnnlab
