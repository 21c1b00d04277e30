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
#include <algorithm>
#include <array>
#include <utility>
#include <vector>

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

// A step's recurrent product, h_{t-1} · kernel forward and d_inner · kernelᵀ backward, is a
// small GEMM ([B, H] × [H, G·H]) done T times with the same kernel. Eigen's GEMM repacks the
// kernel on every call (benchmarks/fused_instructions.py measures both), so here the
// kernel is packed once per op into column panels, and each step multiplies tiles of rows
// against them with every accumulator in a register: a tile of kTileRows rows × kPanel
// columns takes kTileRows × kPanelPackets of them, plus kPanelPackets kernel packets and one
// broadcast (AVX-512 has 32 registers, AVX2 16). llvm-mca -mcpu=sapphirerapids puts the
// AVX-512 tile's inner loop at 12 cycles for its 24 multiply-adds, the two FMA ports' limit.
// One 32-row shard of the reference LSTM on a Xeon with AVX-512: forward 4.4 → 3.4 ms and
// backward 4.4 → 3.6 ms of CPU, against Eigen's GEMM.
namespace packet = Eigen::internal;
using Packet = packet::packet_traits<float>::type;
constexpr int64_t kWidth = packet::unpacket_traits<Packet>::size;
constexpr int kPanelPackets = 2;
constexpr int64_t kPanel = kPanelPackets * kWidth;
constexpr int kTileRows = kWidth >= 16 ? 12 : 6;

// Lanes [0, count) of a packet, count ≤ kWidth (zeros beyond); used only at a panel's edge.
inline Packet LoadPart(const float* from, int64_t count) {
  if (count >= kWidth) return packet::ploadu<Packet>(from);
  alignas(64) float padded[kWidth] = {};
  std::copy_n(from, std::max<int64_t>(count, 0), padded);
  return packet::pload<Packet>(padded);
}

inline void StorePart(float* to, const Packet& value, int64_t count) {
  if (count >= kWidth) return packet::pstoreu(to, value);
  alignas(64) float padded[kWidth];
  packet::pstore(padded, value);
  std::copy_n(padded, std::max<int64_t>(count, 0), to);
}

// out[rows, N] = in[rows, K] · kernel [K, N], plus `bias` [N] or plus out itself.
struct TileProduct {
  const float* in;
  int64_t in_stride, depth;  // K
  const float* panel;        // [K, kPanel]
  const float* bias;         // [columns] or null
  bool accumulate;
  float* out;
  int64_t out_stride, columns;  // ≤ kPanel: the panel's last columns may be padding
};

template <int kRows>
void MultiplyTile(const TileProduct& p) {
  Packet sum[kRows][kPanelPackets];
  int64_t counts[kPanelPackets];
  for (int q = 0; q < kPanelPackets; ++q) {
    counts[q] = std::clamp<int64_t>(p.columns - q * kWidth, 0, kWidth);
    const Packet start =
        p.bias ? LoadPart(p.bias + q * kWidth, counts[q]) : packet::pset1<Packet>(0.0f);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      sum[r][q] = p.accumulate ? LoadPart(p.out + r * p.out_stride + q * kWidth, counts[q]) : start;
    }
  }
  const float* in = p.in;
  const float* panel = p.panel;
  for (int64_t k = 0; k < p.depth; ++k, panel += kPanel) {
    Packet kernel[kPanelPackets];
#pragma GCC unroll 4
    for (int q = 0; q < kPanelPackets; ++q) kernel[q] = packet::pload<Packet>(panel + q * kWidth);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const Packet value = packet::pset1<Packet>(in[r * p.in_stride + k]);
#pragma GCC unroll 4
      for (int q = 0; q < kPanelPackets; ++q) {
        sum[r][q] = packet::pmadd(value, kernel[q], sum[r][q]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    for (int q = 0; q < kPanelPackets; ++q) {
      if (counts[q] > 0) StorePart(p.out + r * p.out_stride + q * kWidth, sum[r][q], counts[q]);
    }
  }
}

template <size_t... kRows>
constexpr auto TileFunctions(std::index_sequence<kRows...>) {
  return std::array<void (*)(const TileProduct&), sizeof...(kRows)>{&MultiplyTile<kRows + 1>...};
}

// A kernel [K, N] (or the transpose of an [N, K] one), packed for MultiplyTile: panel after
// panel of kPanel columns, each K rows of kPanel floats, zero-padded past column N.
class PackedKernel {
 public:
  PackedKernel(const float* kernel, int64_t K, int64_t N, bool transposed)
      : depth_(K), columns_(N), panels_((N + kPanel - 1) / kPanel) {
    data_.setZero(panels_ * K * kPanel);
    for (int64_t p = 0; p < panels_; ++p) {
      float* panel = data_.data() + p * K * kPanel;
      const int64_t width = std::min(kPanel, N - p * kPanel);
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t j = 0; j < width; ++j) {
          const int64_t n = p * kPanel + j;
          panel[k * kPanel + j] = transposed ? kernel[n * K + k] : kernel[k * N + n];
        }
      }
    }
  }

  // out [rows, N] (rows out_stride apart) = in [rows, K] (in_stride apart) · kernel, plus
  // `bias` [N] if given, or plus what out holds if `accumulate`. A panel is the outer loop:
  // its K·kPanel floats stay in L1 while every tile of rows passes over it.
  //
  // `ahead` [ahead_count]: what the caller reads next (the next step's projected inputs),
  // fetched into L2 a few lines per tile while the multiply-adds keep the core busy: the
  // gate loops after the product otherwise wait on L3 (forward pass of one 32-row shard of
  // the reference LSTM: 3.6 → 3.3 ms of CPU; the backward pass gained nothing from it).
  void Multiply(const float* in, int64_t in_stride, int64_t rows, const float* bias,
                bool accumulate, float* out, int64_t out_stride, const float* ahead = nullptr,
                int64_t ahead_count = 0) const {
    static constexpr auto kTiles = TileFunctions(std::make_index_sequence<kTileRows>());
    if (rows == 0 || panels_ == 0) return;  // a shard of no rows; a layer of no units
    constexpr int64_t kLine = 64 / sizeof(float);
    const int64_t tiles = panels_ * ((rows + kTileRows - 1) / kTileRows);
    const int64_t lines = (ahead_count + kLine - 1) / kLine;
    const int64_t per_tile = kLine * ((lines + tiles - 1) / tiles);  // floats, whole lines
    int64_t fetched = 0;
    for (int64_t p = 0; p < panels_; ++p) {
      const int64_t column = p * kPanel;
      // Rows in equal tiles of at most kTileRows (16 rows: 8 + 8, not 12 + 4: 1–2% faster).
      const int64_t row_tiles = (rows + kTileRows - 1) / kTileRows;
      for (int64_t r = 0, index = 0; r < rows; ++index) {
        const int64_t tile = rows * (index + 1) / row_tiles - r;
        for (const int64_t until = std::min(fetched + per_tile, ahead_count); fetched < until;
             fetched += kLine) {
          __builtin_prefetch(ahead + fetched, 0, 2);
        }
        kTiles[tile - 1](TileProduct{in + r * in_stride, in_stride, depth_,
                                     data_.data() + p * depth_ * kPanel,
                                     bias ? bias + column : nullptr, accumulate,
                                     out + r * out_stride + column, out_stride,
                                     std::min(kPanel, columns_ - column)});
        r += tile;
      }
    }
  }

 private:
  int64_t depth_, columns_, panels_;
  Eigen::Matrix<float, Eigen::Dynamic, 1> data_;  // aligned for AVX-512's packets
};

// Every step forward, on raw buffers (shapes as in the op's comment at the top): the op
// checks and allocates, this computes, so a driver outside TensorFlow can run it too
// (benchmarks/fused_instructions.cc).
struct ForwardBuffers {
  int64_t steps, rows, units;
  const float* projected;  // [T, B, G]
  const float* kernel;     // [H, G]
  const float* bias;       // [G] or null
  const float* initial_h;  // [B, H]
  const float* initial_c;  // [B, H] or null
  const float* keep;       // [T, B] or null
  float* h;                // [T, B, H]
  float* c;                // [T, B, H] or null
  float* records;          // [T, B, R] or null
};

template <class Cell>
void ForwardSequence(const ForwardBuffers& d) {
  const int64_t H = d.units, G = Cell::kGates * H, R = Cell::kRecords * H, B = d.rows;
  const PackedKernel recurrent(d.kernel, H, G, /*transposed=*/false);
  const float* h_prev = d.initial_h;
  const float* c_prev = d.initial_c;
  Matrix inner(B, G);
  for (int64_t t = 0; t < d.steps; ++t) {
    recurrent.Multiply(h_prev, H, B, d.bias, /*accumulate=*/false, inner.data(), G,
                       d.projected + t * B * G, B * G);
    float* h_now = d.h + t * B * H;
    float* c_now = d.c ? d.c + t * B * H : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      float* h = h_now + b * H;
      float* c = c_now ? c_now + b * H : nullptr;
      const float* hp = h_prev + b * H;
      const float* cp = c_prev ? c_prev + b * H : nullptr;
      Cell::Forward(H, d.projected + (t * B + b) * G, inner.data() + b * G, hp, cp, h, c,
                    d.records ? d.records + (t * B + b) * R : nullptr);
      if (d.keep != nullptr) {
        const float k = d.keep[t * B + b];
        Row(h, H) = ConstRow(hp, H) + k * (Row(h, H) - ConstRow(hp, H));
        if (c) Row(c, H) = ConstRow(cp, H) + k * (Row(c, H) - ConstRow(cp, H));
      }
    }
    h_prev = h_now;
    c_prev = c_now;
  }
}

// Every step backward, last first, on raw buffers; d_h and d_c hold the final states'
// gradients on entry and the initial states' on exit.
struct BackwardBuffers {
  int64_t steps, rows, units;
  const float* records;    // [T, B, R] or null
  const float* h;          // [T, B, H]
  const float* c;          // [T, B, H] or null
  const float* initial_h;  // [B, H]
  const float* initial_c;  // [B, H] or null
  const float* kernel;     // [H, G]
  const float* d_hs;       // [T, B, H] or null: the gradient of every step's h
  const float* keep;       // [T, B] or null
  float* d_projected;      // [T, B, G]
  float* d_inner;          // [T, B, G] where the cell has a separate one, else d_projected
  float* d_h;              // [B, H]
  float* d_c;              // [B, H] or null
};

template <class Cell>
void BackwardSequence(const BackwardBuffers& d) {
  const int64_t H = d.units, G = Cell::kGates * H, R = Cell::kRecords * H, B = d.rows;
  const PackedKernel transposed(d.kernel, G, H, /*transposed=*/true);  // [G, H]
  MatrixMap dh(d.d_h, B, H);
  // What a mask holds past a step.
  Matrix held_h(B, H), held_c(B, H);
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    if (d.d_hs != nullptr) dh += ConstMatrixMap(d.d_hs + t * B * H, B, H);
    const float* h_prev = t > 0 ? d.h + (t - 1) * B * H : d.initial_h;
    const float* c_prev = d.c ? (t > 0 ? d.c + (t - 1) * B * H : d.initial_c) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      float* dh_row = d.d_h + b * H;
      float* dc_row = d.d_c ? d.d_c + b * H : nullptr;
      if (d.keep != nullptr) {
        const float k = d.keep[t * B + b];
        Row(held_h.data() + b * H, H) = Row(dh_row, H) - Row(dh_row, H) * k;
        Row(dh_row, H) *= k;
        if (dc_row) {
          Row(held_c.data() + b * H, H) = Row(dc_row, H) - Row(dc_row, H) * k;
          Row(dc_row, H) *= k;
        }
      }
      const int64_t at = t * B + b;
      Cell::Backward(H, d.records ? d.records + at * R : nullptr, d.h + at * H,
                     d.c ? d.c + at * H : nullptr, h_prev + b * H,
                     c_prev ? c_prev + b * H : nullptr, dh_row, dc_row, d.d_projected + at * G,
                     Cell::kSeparateInner ? d.d_inner + at * G : nullptr);
    }
    transposed.Multiply(d.d_inner + t * B * G, G, B, nullptr, /*accumulate=*/true, d.d_h, H);
    if (d.keep != nullptr) {
      dh += held_h;
      if (d.d_c) MatrixMap(d.d_c, B, H) += held_c;
    }
  }
}

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
    ForwardSequence<Cell>(ForwardBuffers{s.steps, B, H,
                                         projected->flat<float>().data(),
                                         kernel->flat<float>().data(),
                                         DataOrNull(*bias_in),
                                         initial_h->flat<float>().data(),
                                         DataOrNull(*initial_c),
                                         DataOrNull(*keep),
                                         h_out->flat<float>().data(),
                                         DataOrNull(*c_out) ? c_out->flat<float>().data() : nullptr,
                                         R ? records_out->flat<float>().data() : nullptr});
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
    float* d_projected = d_projected_out->flat<float>().data();
    float* d_h = d_h_out->flat<float>().data();
    float* d_c = Cell::kStates == 2 ? d_c_out->flat<float>().data() : nullptr;
    std::copy_n(d_final_h->flat<float>().data(), B * H, d_h);
    if (d_c) std::copy_n(d_final_c->flat<float>().data(), B * H, d_c);
    BackwardSequence<Cell>(BackwardBuffers{
        T, B, H, DataOrNull(*records_in), hs_in->flat<float>().data(), DataOrNull(*cs_in),
        initial_h->flat<float>().data(), DataOrNull(*initial_c), kernel->flat<float>().data(),
        DataOrNull(*d_h_all), DataOrNull(*keep), d_projected,
        Cell::kSeparateInner ? d_inner_out->flat<float>().data() : d_projected, d_h, d_c});
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

// xLSTM's sLSTM (rnnlab.recurrence.xlstm.SLSTMCell): four states h, c, n, m, and a recurrent
// kernel R block-diagonal by heads, so its ops take their own inputs:
//   forward(projected [T,B,4H], recurrent_kernel [heads, w, 4w], initial_h, initial_c,
//           initial_n, initial_m [B,H], keep [T,B,1] or [0])
//       -> h, c, n, m [T,B,H], records [T,B,6H]
//   backward(records, c, n, initial_c, initial_n, recurrent_kernel, d_h [T,B,H] or [0],
//            d_final_h, d_final_c, d_final_n, d_final_m, keep)
//       -> d_projected [T,B,4H], d_initial_h, d_initial_c, d_initial_n, d_initial_m
// H = heads·w; `keep` is 1 where a step counts and 0 where a mask holds the states (masks
// are whole steps: nothing between). `projected` (x W + b) and d_projected are in the cell's gate order, four
// blocks [ĩ | f̃ | z̃ | õ] of H; head g's kernel R[g] maps its w units of h to its own four
// gates, [ĩ | f̃ | z̃ | õ] of w each. Each step multiplies head by head into a head-major
// buffer and gathers it into the gate order, so the gates' loops run over whole rows.
// A step, with lf = log σ(f̃) + m_{t-1}:
//   m_t = max(lf, ĩ), i' = exp(ĩ - m_t), f' = exp(lf - m_t),
//   c_t = f' c_{t-1} + i' tanh(z̃), n_t = f' n_{t-1} + i', h_t = σ(õ) c_t / n_t.
// The gradient follows m as TensorFlow differentiates the cell's step (no stop-gradient on
// the stabiliser): max passes it to lf where lf ≥ ĩ (ties included), else to ĩ. Records per
// row: i', f', tanh(z̃), σ(õ), σ(-f̃) (log σ's derivative) and that choice (1 or 0).
namespace rnnlab {

struct SlstmShape {
  int64_t heads, width, units;  // units H = heads · width

  // Head g's gate q, unit j: column g·4w + q·w + j of the per-head product, q·H + g·w + j
  // of the gate order.
  void ToGateOrder(const float* head_major, float* gate_order) const {
    for (int64_t g = 0; g < heads; ++g) {
      for (int q = 0; q < 4; ++q) {
        Row(gate_order + q * units + g * width, width) +=
            ConstRow(head_major + g * 4 * width + q * width, width);
      }
    }
  }

  void ToHeadMajor(const float* gate_order, float* head_major) const {
    for (int64_t g = 0; g < heads; ++g) {
      for (int q = 0; q < 4; ++q) {
        std::copy_n(gate_order + q * units + g * width, width,
                    head_major + g * 4 * width + q * width);
      }
    }
  }
};

// One row, forward: `pre` holds the four pre-activations [4H] in gate order.
inline void SlstmForwardRow(int64_t H, const float* pre, const float* c_prev,
                            const float* n_prev, const float* m_prev, float* h, float* c,
                            float* n, float* m, float* record) {
  ConstRow i_pre(pre, H), f_pre(pre + H, H), z_pre(pre + 2 * H, H), o_pre(pre + 3 * H, H);
  Row input(record, H), forget(record + H, H), candidate(record + 2 * H, H),
      output(record + 3 * H, H), log_sigma_slope(record + 4 * H, H), to_forget(record + 5 * H, H);
  Row m_row(m, H), c_row(c, H), n_row(n, H);
  // log σ(x) = min(x, 0) - log(1 + exp(-|x|)): no overflow and no log(0) at either end.
  forget = f_pre.min(0.0f) - (-f_pre.abs()).exp().log1p() + ConstRow(m_prev, H);  // lf
  m_row = forget.max(i_pre);
  to_forget = (forget >= i_pre).cast<float>();
  input = (i_pre - m_row).exp();
  forget = (forget - m_row).exp();
  candidate = z_pre.tanh();
  output = o_pre.logistic();
  log_sigma_slope = (-f_pre).logistic();
  c_row = forget * ConstRow(c_prev, H) + input * candidate;
  n_row = forget * ConstRow(n_prev, H) + input;
  Row(h, H) = output * c_row / n_row;
}

// One row, backward: dh, dc, dn, dm hold the gradients of this step's states on entry and
// of the previous step's on exit, all but h's recurrent term R·d_pre, which the caller adds.
inline void SlstmBackwardRow(int64_t H, const float* record, const float* c, const float* n,
                             const float* c_prev, const float* n_prev, float* dh, float* dc,
                             float* dn, float* dm, float* d_pre) {
  ConstRow input(record, H), forget(record + H, H), candidate(record + 2 * H, H),
      output(record + 3 * H, H), log_sigma_slope(record + 4 * H, H), to_forget(record + 5 * H, H);
  ConstRow c_now(c, H), n_now(n, H);
  Row dh_row(dh, H), dc_row(dc, H), dn_row(dn, H), dm_row(dm, H);
  Row d_input(d_pre, H), d_forget(d_pre + H, H), d_candidate(d_pre + 2 * H, H),
      d_output(d_pre + 3 * H, H);
  // h = o · c / n.
  d_output = dh_row * (c_now / n_now) * output * (1.0f - output);
  dc_row += dh_row * output / n_now;
  dn_row -= dh_row * output * c_now / (n_now * n_now);
  // Through i' = exp(ĩ - m) and f' = exp(lf - m): each also lowers m's share.
  d_input = (dc_row * candidate + dn_row) * input;
  d_forget = (dc_row * ConstRow(c_prev, H) + dn_row * ConstRow(n_prev, H)) * forget;
  dm_row -= d_input + d_forget;
  d_candidate = dc_row * input * (1.0f - candidate * candidate);
  // m = max(lf, ĩ): m's gradient goes to one of them; lf's to f̃ and to m_{t-1}.
  d_input += (1.0f - to_forget) * dm_row;
  dm_row = d_forget + to_forget * dm_row;
  d_forget = dm_row * log_sigma_slope;
  dc_row *= forget;
  dn_row *= forget;
  dh_row.setZero();
}

// The four states at one step, [B, H] each.
struct SlstmStates {
  const float *h, *c, *n, *m;
};

class SlstmForward : public OpKernel {
 public:
  explicit SlstmForward(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor *projected, *kernel, *initial[4], *keep;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, {{"projected", &projected},
                                         {"recurrent_kernel", &kernel},
                                         {"initial_h", &initial[0]},
                                         {"initial_c", &initial[1]},
                                         {"initial_n", &initial[2]},
                                         {"initial_m", &initial[3]},
                                         {"keep", &keep}}));
    SlstmShape shape;
    OP_REQUIRES_OK(ctx, ReadSlstmKernel(*kernel, &shape));
    OP_REQUIRES(ctx, projected->dims() == 3,
                absl::InvalidArgumentError(absl::StrCat(
                    "rnnlab recurrence: projected must be [T, B, 4H], got ",
                    ShapeText(*projected))));
    const int64_t T = projected->dim_size(0), B = projected->dim_size(1), H = shape.units,
                  G = 4 * H;
    OP_REQUIRES_OK(ctx, Expect(*projected, "projected", "[T, B, 4H]", {T, B, G}));
    const char* names[4] = {"initial_h", "initial_c", "initial_n", "initial_m"};
    for (int k = 0; k < 4; ++k) {
      OP_REQUIRES_OK(ctx, Expect(*initial[k], names[k], "[B, H]", {B, H}));
    }
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(*keep, "keep", "[T, B, 1]", {T, B, 1}));
    float* out[4];
    const char* outputs[4] = {"h", "c", "n", "m"};
    for (int k = 0; k < 4; ++k) {
      Tensor* tensor;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(outputs[k], TensorShape({T, B, H}), &tensor));
      out[k] = tensor->flat<float>().data();
    }
    Tensor* records_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("records", TensorShape({T, B, 6 * H}), &records_out));
    float* records = records_out->flat<float>().data();
    const float* x = projected->flat<float>().data();
    const float* keeps = DataOrNull(*keep);

    const int64_t w = shape.width;
    std::vector<PackedKernel> heads;
    heads.reserve(shape.heads);
    for (int64_t g = 0; g < shape.heads; ++g) {
      heads.emplace_back(kernel->flat<float>().data() + g * w * 4 * w, w, 4 * w, false);
    }
    Matrix per_head(B, G), pre(B, G);
    SlstmStates before{initial[0]->flat<float>().data(), initial[1]->flat<float>().data(),
                       initial[2]->flat<float>().data(), initial[3]->flat<float>().data()};
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t g = 0; g < shape.heads; ++g) {
        const bool last = g + 1 == shape.heads;  // fetches the next step's inputs meanwhile
        heads[g].Multiply(before.h + g * w, H, B, nullptr, /*accumulate=*/false,
                          per_head.data() + g * 4 * w, G,
                          last && t + 1 < T ? x + (t + 1) * B * G : nullptr,
                          last && t + 1 < T ? B * G : 0);
      }
      float* now[4];
      for (int k = 0; k < 4; ++k) now[k] = out[k] + t * B * H;
      for (int64_t b = 0; b < B; ++b) {
        float* pre_row = pre.data() + b * G;
        std::copy_n(x + (t * B + b) * G, G, pre_row);
        shape.ToGateOrder(per_head.data() + b * G, pre_row);
        const int64_t row = b * H;
        SlstmForwardRow(H, pre_row, before.c + row, before.n + row, before.m + row,
                        now[0] + row, now[1] + row, now[2] + row, now[3] + row,
                        records + (t * B + b) * 6 * H);
        if (keeps != nullptr && keeps[t * B + b] == 0.0f) {  // a masked step holds its states
          const float* held[4] = {before.h, before.c, before.n, before.m};
          for (int s = 0; s < 4; ++s) std::copy_n(held[s] + row, H, now[s] + row);
        }
      }
      before = SlstmStates{now[0], now[1], now[2], now[3]};
    }
  }

  // R must be [heads, w, 4w].
  static absl::Status ReadSlstmKernel(const Tensor& kernel, SlstmShape* shape) {
    if (kernel.dims() != 3 || kernel.dim_size(2) != 4 * kernel.dim_size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rnnlab recurrence: recurrent_kernel must be [heads, w, 4w], got ", ShapeText(kernel)));
    }
    shape->heads = kernel.dim_size(0);
    shape->width = kernel.dim_size(1);
    shape->units = shape->heads * shape->width;
    return absl::OkStatus();
  }
};

class SlstmBackward : public OpKernel {
 public:
  explicit SlstmBackward(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor *records_in, *cs, *ns, *initial_c, *initial_n, *kernel, *d_hs_in, *d_final[4],
        *keep;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, {{"records", &records_in},
                                         {"c", &cs},
                                         {"n", &ns},
                                         {"initial_c", &initial_c},
                                         {"initial_n", &initial_n},
                                         {"recurrent_kernel", &kernel},
                                         {"d_h", &d_hs_in},
                                         {"d_final_h", &d_final[0]},
                                         {"d_final_c", &d_final[1]},
                                         {"d_final_n", &d_final[2]},
                                         {"d_final_m", &d_final[3]},
                                         {"keep", &keep}}));
    SlstmShape shape;
    OP_REQUIRES_OK(ctx, SlstmForward::ReadSlstmKernel(*kernel, &shape));
    OP_REQUIRES(ctx, cs->dims() == 3,
                absl::InvalidArgumentError(absl::StrCat(
                    "rnnlab recurrence: c must be [T, B, H], got ", ShapeText(*cs))));
    const int64_t T = cs->dim_size(0), B = cs->dim_size(1), H = shape.units, G = 4 * H;
    OP_REQUIRES_OK(ctx, Expect(*cs, "c", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, Expect(*ns, "n", "[T, B, H]", {T, B, H}));
    OP_REQUIRES_OK(ctx, Expect(*records_in, "records", "[T, B, 6H]", {T, B, 6 * H}));
    OP_REQUIRES_OK(ctx, Expect(*initial_c, "initial_c", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, Expect(*initial_n, "initial_n", "[B, H]", {B, H}));
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(*d_hs_in, "d_h", "[T, B, H]", {T, B, H}));
    const char* finals[4] = {"d_final_h", "d_final_c", "d_final_n", "d_final_m"};
    for (int k = 0; k < 4; ++k) {
      OP_REQUIRES_OK(ctx, Expect(*d_final[k], finals[k], "[B, H]", {B, H}));
    }
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(*keep, "keep", "[T, B, 1]", {T, B, 1}));
    Tensor* d_projected_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_projected", TensorShape({T, B, G}),
                                             &d_projected_out));
    float* d[4];  // the states' gradients, carried back step by step
    const char* outputs[4] = {"d_initial_h", "d_initial_c", "d_initial_n", "d_initial_m"};
    for (int k = 0; k < 4; ++k) {
      Tensor* tensor;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(outputs[k], TensorShape({B, H}), &tensor));
      d[k] = tensor->flat<float>().data();
      std::copy_n(d_final[k]->flat<float>().data(), B * H, d[k]);
    }
    float* d_projected = d_projected_out->flat<float>().data();
    const float* records = records_in->flat<float>().data();
    const float* c = cs->flat<float>().data();
    const float* n = ns->flat<float>().data();
    const float* d_hs = DataOrNull(*d_hs_in);
    const float* keeps = DataOrNull(*keep);

    const int64_t w = shape.width;
    std::vector<PackedKernel> heads;  // R[g]ᵀ: [4w, w]
    heads.reserve(shape.heads);
    for (int64_t g = 0; g < shape.heads; ++g) {
      heads.emplace_back(kernel->flat<float>().data() + g * w * 4 * w, 4 * w, w, true);
    }
    Matrix per_head(B, G);
    for (int64_t t = T - 1; t >= 0; --t) {
      if (d_hs != nullptr) MatrixMap(d[0], B, H) += ConstMatrixMap(d_hs + t * B * H, B, H);
      const float* c_prev = t > 0 ? c + (t - 1) * B * H : initial_c->flat<float>().data();
      const float* n_prev = t > 0 ? n + (t - 1) * B * H : initial_n->flat<float>().data();
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = b * H, at = t * B + b;
        if (keeps != nullptr && keeps[at] == 0.0f) {
          // A masked step passed its states on unchanged: their gradients pass back alike,
          // and its gates, which the stored (held) states could not recompute, get none.
          std::fill_n(d_projected + at * G, G, 0.0f);
          std::fill_n(per_head.data() + b * G, G, 0.0f);
          continue;
        }
        SlstmBackwardRow(H, records + at * 6 * H, c + at * H, n + at * H, c_prev + row,
                         n_prev + row, d[0] + row, d[1] + row, d[2] + row, d[3] + row,
                         d_projected + at * G);
        shape.ToHeadMajor(d_projected + at * G, per_head.data() + b * G);
      }
      for (int64_t g = 0; g < shape.heads; ++g) {
        heads[g].Multiply(per_head.data() + g * 4 * w, G, B, nullptr, /*accumulate=*/true,
                          d[0] + g * w, H);
      }
    }
  }
};

// Shapes for graph tracing: H = heads · w from the kernel, T and B from the sequence.
absl::Status SlstmForwardShapes(InferenceContext* ctx) {
  ShapeHandle projected, kernel;
  TF_RETURN_IF_ERROR(InputShape(ctx, "projected", 3, &projected));
  TF_RETURN_IF_ERROR(InputShape(ctx, "recurrent_kernel", 3, &kernel));
  DimensionHandle units, records;
  TF_RETURN_IF_ERROR(ctx->Multiply(ctx->Dim(kernel, 0), ctx->Dim(kernel, 1), &units));
  TF_RETURN_IF_ERROR(ctx->Multiply(units, 6, &records));
  const DimensionHandle steps = ctx->Dim(projected, 0), rows = ctx->Dim(projected, 1);
  const ShapeHandle states = ctx->MakeShape({steps, rows, units});
  for (const char* name : {"h", "c", "n", "m"}) TF_RETURN_IF_ERROR(SetOutput(ctx, name, states));
  return SetOutput(ctx, "records", ctx->MakeShape({steps, rows, records}));
}

absl::Status SlstmBackwardShapes(InferenceContext* ctx) {
  ShapeHandle states, kernel;
  TF_RETURN_IF_ERROR(InputShape(ctx, "c", 3, &states));
  TF_RETURN_IF_ERROR(InputShape(ctx, "recurrent_kernel", 3, &kernel));
  DimensionHandle units, gates;
  TF_RETURN_IF_ERROR(ctx->Multiply(ctx->Dim(kernel, 0), ctx->Dim(kernel, 1), &units));
  TF_RETURN_IF_ERROR(ctx->Multiply(units, 4, &gates));
  const DimensionHandle steps = ctx->Dim(states, 0), rows = ctx->Dim(states, 1);
  TF_RETURN_IF_ERROR(SetOutput(ctx, "d_projected", ctx->MakeShape({steps, rows, gates})));
  const ShapeHandle one_step = ctx->MakeShape({rows, units});
  for (const char* name : {"d_initial_h", "d_initial_c", "d_initial_n", "d_initial_m"}) {
    TF_RETURN_IF_ERROR(SetOutput(ctx, name, one_step));
  }
  return absl::OkStatus();
}

}  // namespace rnnlab

REGISTER_OP("RnnlabSlstmForward")
    .Input("projected: float")
    .Input("recurrent_kernel: float")
    .Input("initial_h: float")
    .Input("initial_c: float")
    .Input("initial_n: float")
    .Input("initial_m: float")
    .Input("keep: float")
    .Output("h: float")
    .Output("c: float")
    .Output("n: float")
    .Output("m: float")
    .Output("records: float")
    .SetShapeFn(rnnlab::SlstmForwardShapes);
REGISTER_OP("RnnlabSlstmBackward")
    .Input("records: float")
    .Input("c: float")
    .Input("n: float")
    .Input("initial_c: float")
    .Input("initial_n: float")
    .Input("recurrent_kernel: float")
    .Input("d_h: float")
    .Input("d_final_h: float")
    .Input("d_final_c: float")
    .Input("d_final_n: float")
    .Input("d_final_m: float")
    .Input("keep: float")
    .Output("d_projected: float")
    .Output("d_initial_h: float")
    .Output("d_initial_c: float")
    .Output("d_initial_n: float")
    .Output("d_initial_m: float")
    .SetShapeFn(rnnlab::SlstmBackwardShapes);
REGISTER_KERNEL_BUILDER(Name("RnnlabSlstmForward").Device(DEVICE_CPU), rnnlab::SlstmForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabSlstmBackward").Device(DEVICE_CPU), rnnlab::SlstmBackward);
