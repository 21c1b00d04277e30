// Linear recurrences h_t = a_t ⊙ h_{t-1} + b_t whose a_t and b_t come from the step's own
// inputs (rnnlab.recurrence.cells: minGRU, minLSTM, LRU, RG-LRU, HGRN), and IndRNN's
// elementwise h_t = activation(x_t + u ⊙ h_{t-1}), as TensorFlow ops: input projection, gates
// and recurrence fused.
// No step depends on another through a matmul, so the work is elementwise: every lane of
// every step is a few exps and multiply-adds, written here on whole SIMD packets (Eigen's
// packet functions: AVX2 or AVX-512, whatever the library was built for) with every
// intermediate in registers. With a few inputs (the synthetic tasks' 2) the projection is
// folded into the same loop; with more, a block of kBlock steps is projected by one GEMM
// into a buffer that stays in cache. The backward pass computes the gates again rather
// than reading them from memory. Batch-major; the rows are split between `shards` threads:
//   forward(inputs [B,T,I], kernel [I,W], bias [W] or [0], parameters [Q] or [0],
//           initial [B,S], keep [B,T] or [0]) -> states [B,T,S]
//   backward(inputs, kernel, bias, parameters, states, initial, d_states [B,T,S] or [0],
//            d_final [B,S], keep)
//       -> d_inputs [B,T,I], d_kernel [I,W], d_bias [W] or [0], d_parameters [Q] or [0],
//          d_initial [B,S]
// A step whose keep is 0 holds the state. A cell has N lanes (S / kStates), kGates
// pre-activations per lane (W = kGates·N, laid out gate by gate), kStates states and
// kParameters parameters per lane, and one step forward and back on a packet of lanes.
// The kernels read their inputs by these names (checks.h), and rnnlab.recurrence.native_calls
// passes them by name. S6, whose state is a matrix per row, has ops of its own at the end.
#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "checks.h"

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

// x held to [-limit, limit]. AVX-512DQ's range instruction takes one step for it (of x and
// limit, the one smaller in magnitude, with x's sign), a min and a max elsewhere.
inline Packet Clamp(const Packet& x, const Packet& limit) {
#ifdef EIGEN_VECTORIZE_AVX512DQ
  return _mm512_range_ps(x, limit, 0x2);
#else
  return packet::pmax(packet::pmin(x, limit), packet::pnegate(limit));
#endif
}

// 1/√x, roughly, for a normal x > 0: the processor's estimate (14 bits on AVX-512, 12 on
// AVX), elsewhere a square root and a division. One Newton step takes an estimate y to float
// precision (it squares the relative error): 1/√x ≈ y·NewtonFactor(x, y)/2, with
// NewtonFactor(x, y) = 3 - x y², so √x = x/√x ≈ x y·NewtonFactor(x, y)/2. Four instructions
// for the estimate and the step where AVX-512's psqrt takes 13 (the same estimate and step,
// and fix-ups for 0 and ∞), and none on the divider and square-root unit, the slowest these
// kernels use.
inline Packet InverseSqrtEstimate(const Packet& x) {
#if defined(EIGEN_VECTORIZE_AVX512)
  return _mm512_rsqrt14_ps(x);
#elif defined(EIGEN_VECTORIZE_AVX)
  return _mm256_rsqrt_ps(x);
#else
  return packet::pdiv(Constant(1.0f), packet::psqrt(x));
#endif
}

inline Packet NewtonFactor(const Packet& x, const Packet& estimate) {
  return packet::pnmadd(packet::pmul(x, estimate), estimate, Constant(3.0f));
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

// z = σ(x_z), h = (1 - z) h_prev + z g(x_h). x_z is held to ±80, beyond which z is 0 or 1 to
// float precision, so that (1 + e^-x_z)(1 + e^x_h) stays finite and normal.
struct MinGruScan {
  static constexpr int kGates = 2, kStates = 1, kParameters = 0;

  // The update gate z and the candidate g(x_h).
  static void Gates(const Packet* x, Packet* z, Packet* candidate, Packet* slope) {
    const Packet one = Constant(1.0f);
    const Packet e_gate = ExpInRange<true>(Clamp(x[0], Constant(80.0f)));
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
    gates.a = ExpInRange<true>(Clamp(x[0], limit));
    gates.c = ExpInRange<true>(Clamp(x[1], limit));
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

// Two sigmoids, σ(x) and σ(y), by two exps and one division. x and y are held to ±40, where
// σ is 0 or 1 to float precision and (1 + e^40)² still fits in a float.
inline void Sigmoids(const Packet& x, const Packet& y, Packet* sigma_x, Packet* sigma_y) {
  const Packet limit = Constant(40.0f), one = Constant(1.0f);
  const Packet e_x = ExpInRange<true>(Clamp(x, limit));
  const Packet e_y = ExpInRange<true>(Clamp(y, limit));
  Reciprocals(packet::padd(one, e_x), packet::padd(one, e_y), sigma_x, sigma_y);
}

// The RG-LRU of Hawk and Griffin: r = σ(x_r), i = σ(x_i), log a = -s r with the parameter
// s = c·softplus(-Λ) per lane, h = a h_prev + √(1 - a²) i x_v. s r is held below 86, where a
// is 0 to float precision. Backward, √'s derivative is capped at kMaxSqrtGradient, as the
// authors' code does (rnnlab.recurrence.cells.bounded_sqrt): a saturated gate (a → 1) must
// not send an infinite gradient.
constexpr float kMaxSqrtGradient = 1000.0f;

struct RgLruScan {
  static constexpr int kGates = 3, kStates = 1, kParameters = 1;
  // Added to (or the floor of) the inverse square roots' arguments, which are 0 for a
  // saturated gate (a = 1 in float) and else at least 1 - (1 - 2^-24)² ≈ 1.2e-7: 1/√0 = ∞
  // would make u/√u = 0·∞ = NaN where it is 0.
  static constexpr float kTiny = 1e-30f;

  // e^-x = 1/σ(x) - 1, x held to ±40, where σ is 0 or 1 to float precision and (1 + e^40)²
  // still fits in a float.
  static Packet SigmoidExp(const Packet& x) { return ExpInRange<true>(Clamp(x, Constant(40.0f))); }

  // a = e^-(s r), s r held below 86.
  static Packet Decay(const Packet& s_r) {
    return ExpInRange<true>(packet::pmin(s_r, Constant(86.0f)));
  }

  // s r = s/(1 + e^-x_r) by one division. √(1 - a²) i = u/√(u/i²) with u = 1 - a²: one
  // inverse square root, of 4u/i² = u (2 + 2e^-x_i)², gives the input's gain, where a square
  // root and i's division would take two of the slowest instructions.
  static void Forward(const Packet* x, const Packet* p, const Packet* previous, Packet* state) {
    const Packet two = Constant(2.0f);
    const Packet a = Decay(packet::pdiv(p[0], packet::padd(Constant(1.0f), SigmoidExp(x[0]))));
    const Packet u = packet::pnmadd(a, a, Constant(1.0f));
    const Packet twice_inverse_i = packet::pmadd(SigmoidExp(x[1]), two, two);
    const Packet q = packet::pmadd(packet::pmul(u, twice_inverse_i), twice_inverse_i,
                                   Constant(kTiny));
    const Packet y = InverseSqrtEstimate(q);  // ≈ i/(2√u)
    const Packet gain = packet::pmul(packet::pmul(u, y), NewtonFactor(q, y));
    state[0] = packet::pmadd(a, previous[0], packet::pmul(gain, x[2]));
  }

  // r and i by a division each, as correct as one can be (the a from s·r may differ from the
  // forward's s/(1 + e^-x_r) in its last bit).
  static void Backward(const Packet* x, const Packet* p, const Packet* previous, Packet* grad,
                       Packet* d_x, Packet* d_p) {
    const Packet one = Constant(1.0f);
    const Packet r = packet::pdiv(one, packet::padd(one, SigmoidExp(x[0])));
    const Packet i = packet::pdiv(one, packet::padd(one, SigmoidExp(x[1])));
    const Packet a = Decay(packet::pmul(p[0], r));
    const Packet u = packet::pnmadd(a, a, one);
    const Packet held = packet::pmax(u, Constant(kTiny));
    const Packet y = InverseSqrtEstimate(held);
    const Packet inverse_root =  // 1/√(1 - a²)
        packet::pmul(packet::pmul(y, Constant(0.5f)), NewtonFactor(held, y));
    const Packet root = packet::pmul(u, inverse_root);  // 0 where u is
    const Packet grad_i = packet::pmul(grad[0], i);
    d_x[2] = packet::pmul(grad_i, root);
    // d x_i = grad √(1 - a²) x_v σ'(x_i), σ' = σ (1 - σ).
    d_x[1] = packet::pmul(d_x[2], packet::pnmadd(i, x[2], x[2]));
    // d(1 - a²) = d_root / (2 max(root, 1/(2 M))) = d_root min(1/√(1 - a²), 2 M) / 2 with
    // d_root = grad i x_v, and d a = grad h_prev - 2 a d(1 - a²).
    const Packet capped = packet::pmin(inverse_root, Constant(2.0f * kMaxSqrtGradient));
    const Packet d_a = packet::pnmadd(packet::pmul(packet::pmul(grad_i, x[2]), a), capped,
                                      packet::pmul(grad[0], previous[0]));
    const Packet d_log_a = packet::pmul(d_a, a);
    // d log a / d x_r = -s σ'(x_r) = s (r² - r).
    d_x[0] = packet::pmul(packet::pmul(d_log_a, p[0]), packet::pmsub(r, r, r));
    d_p[0] = packet::pnmadd(d_log_a, r, d_p[0]);
    grad[0] = packet::pmul(grad[0], a);
  }
};

// HGRN, real-valued: f = γ + (1 - γ) σ(x_f), h = f h_prev + (1 - f) SiLU(x_i), with the
// forget gate's lower bound γ per lane as the parameter. SiLU(x) = x σ(x): only σ's argument
// is held to ±40, not x.
struct HgrnScan {
  static constexpr int kGates = 2, kStates = 1, kParameters = 1;

  struct Gates {
    Packet sigma_f, forget, sigma_i, silu;
  };

  static Gates Compute(const Packet* x, const Packet* p) {
    Gates g;
    Sigmoids(x[0], x[1], &g.sigma_f, &g.sigma_i);
    g.forget = packet::pmadd(packet::psub(Constant(1.0f), p[0]), g.sigma_f, p[0]);
    g.silu = packet::pmul(x[1], g.sigma_i);
    return g;
  }

  static void Forward(const Packet* x, const Packet* p, const Packet* previous, Packet* state) {
    const Gates g = Compute(x, p);
    state[0] = packet::pmadd(g.forget, packet::psub(previous[0], g.silu), g.silu);
  }

  static void Backward(const Packet* x, const Packet* p, const Packet* previous, Packet* grad,
                       Packet* d_x, Packet* d_p) {
    const Packet one = Constant(1.0f);
    const Gates g = Compute(x, p);
    const Packet d_forget = packet::pmul(grad[0], packet::psub(previous[0], g.silu));
    const Packet sigma_slope = packet::pnmadd(g.sigma_f, g.sigma_f, g.sigma_f);  // σ - σ²
    d_x[0] = packet::pmul(packet::pmul(d_forget, packet::psub(one, p[0])), sigma_slope);
    d_p[0] = packet::pmadd(d_forget, packet::psub(one, g.sigma_f), d_p[0]);
    // SiLU'(x) = σ(x) + SiLU(x) (1 - σ(x)).
    const Packet silu_slope = packet::pmadd(g.silu, packet::psub(one, g.sigma_i), g.sigma_i);
    d_x[1] = packet::pmul(packet::pmul(grad[0], packet::psub(one, g.forget)), silu_slope);
    grad[0] = packet::pmul(grad[0], g.forget);
  }
};

// IndRNN (Li et al. 2018): h = activation(x + u h_prev), u per lane the one parameter. Not
// linear in h_prev, so it has no associative scan, but it is elementwise like the scans above
// and runs on the same machinery. Backward recomputes the pre-activation from h_prev (an FMA,
// bit for bit the forward's), so nothing but the states is stored. ReLU's derivative is 0 at
// 0, as TensorFlow's: a unit whose pre-activation is not positive passes no gradient on.
template <class Activation>
struct IndRnnScan {
  static constexpr int kGates = 1, kStates = 1, kParameters = 1;

  static void Forward(const Packet* x, const Packet* p, const Packet* previous, Packet* state) {
    state[0] = Activation::Apply(packet::pmadd(p[0], previous[0], x[0]));
  }

  static void Backward(const Packet* x, const Packet* p, const Packet* previous, Packet* grad,
                       Packet* d_x, Packet* d_p) {
    const Packet d_pre = Activation::Through(packet::pmadd(p[0], previous[0], x[0]), grad[0]);
    d_x[0] = d_pre;
    d_p[0] = packet::pmadd(d_pre, previous[0], d_p[0]);
    grad[0] = packet::pmul(d_pre, p[0]);
  }
};

// Each activation: its value, and a gradient taken back through it at the pre-activation.
struct Relu {
  static Packet Apply(const Packet& pre) { return packet::pmax(pre, packet::pzero(pre)); }
  static Packet Through(const Packet& pre, const Packet& grad) {
    return packet::pand(grad, packet::pcmp_lt(packet::pzero(pre), pre));
  }
};

struct Tanh {
  static Packet Apply(const Packet& pre) { return packet::ptanh(pre); }
  static Packet Through(const Packet& pre, const Packet& grad) {
    const Packet h = packet::ptanh(pre);
    return packet::pmul(grad, packet::pnmadd(h, h, Constant(1.0f)));
  }
};

using IndRnnReluScan = IndRnnScan<Relu>;
using IndRnnTanhScan = IndRnnScan<Tanh>;

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

// What both ops read: inputs, kernel, bias, parameters, initial states and keep.
template <class Scan>
ScanData ReadScanData(const ScanInputs& in, const Sizes& s, int64_t inputs) {
  return ScanData{s.steps,
                  inputs,
                  ScanShape<Scan>::Lanes(s.units),
                  ScanShape<Scan>::Width(s.units),
                  s.units,
                  in.inputs->flat<float>().data(),
                  in.kernel->flat<float>().data(),
                  DataOrNull(*in.bias),
                  DataOrNull(*in.parameters),
                  DataOrNull(*in.keep),
                  in.initial->flat<float>().data()};
}

template <class Scan>
class ScanForward : public ShardedKernel {
 public:
  using ShardedKernel::ShardedKernel;

  void Compute(OpKernelContext* ctx) override {
    ScanInputs in;
    OP_REQUIRES_OK(ctx, in.Read(ctx));
    Sizes s;
    int64_t I;
    OP_REQUIRES_OK(ctx, ReadScanSizes<Scan>(in, &s, &I));
    const int64_t T = s.steps, S = s.units;
    Tensor* states_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("states", TensorShape({s.rows, T, S}), &states_out));
    const ScanData data = ReadScanData<Scan>(in, s, I);
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
};

template <class Scan>
class ScanBackward : public ShardedKernel {
 public:
  using ShardedKernel::ShardedKernel;

  void Compute(OpKernelContext* ctx) override {
    ScanInputs in;
    OP_REQUIRES_OK(ctx, in.Read(ctx));
    const Tensor *states_in, *d_states_in, *d_final_in;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, {{"states", &states_in},
                                         {"d_states", &d_states_in},
                                         {"d_final", &d_final_in}}));
    Sizes s;
    int64_t I;
    OP_REQUIRES_OK(ctx, ReadScanSizes<Scan>(in, &s, &I));
    const int64_t B = s.rows, T = s.steps, S = s.units;
    const int64_t W = ScanShape<Scan>::Width(S), Q = ScanShape<Scan>::Parameters(S);
    OP_REQUIRES_OK(ctx, Expect(*states_in, "states", "[B, T, S]", {B, T, S}));
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(*d_states_in, "d_states", "[B, T, S]", {B, T, S}));
    OP_REQUIRES_OK(ctx, Expect(*d_final_in, "d_final", "[B, S]", {B, S}));
    const bool has_bias = in.bias->NumElements() > 0;
    Tensor *d_inputs_out, *d_kernel_out, *d_bias_out, *d_parameters_out, *d_h0_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_inputs", TensorShape({B, T, I}), &d_inputs_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_kernel", TensorShape({I, W}), &d_kernel_out));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_output("d_bias", TensorShape({has_bias ? W : 0}), &d_bias_out));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_output("d_parameters", TensorShape({Q}), &d_parameters_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_initial", TensorShape({B, S}), &d_h0_out));
    const ScanData data = ReadScanData<Scan>(in, s, I);
    const ScanGradients out{states_in->flat<float>().data(), DataOrNull(*d_states_in),
                            d_inputs_out->flat<float>().data(), d_h0_out->flat<float>().data()};
    std::copy_n(d_final_in->flat<float>().data(), B * S, out.carried);
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
};

absl::Status ScanForwardShapes(InferenceContext* ctx) {
  ShapeHandle inputs, h0;
  TF_RETURN_IF_ERROR(InputShape(ctx, "inputs", 3, &inputs));
  TF_RETURN_IF_ERROR(InputShape(ctx, "initial", 2, &h0));
  return SetOutput(
      ctx, "states", ctx->MakeShape({ctx->Dim(inputs, 0), ctx->Dim(inputs, 1), ctx->Dim(h0, 1)}));
}

absl::Status ScanBackwardShapes(InferenceContext* ctx) {
  return GradientShapes(ctx, {{"d_inputs", "inputs"},
                              {"d_kernel", "kernel"},
                              {"d_bias", "bias"},
                              {"d_parameters", "parameters"},
                              {"d_initial", "initial"}});
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
RNNLAB_SCAN_OPS(RgLruScan);
RNNLAB_SCAN_OPS(HgrnScan);
RNNLAB_SCAN_OPS(IndRnnReluScan);
RNNLAB_SCAN_OPS(IndRnnTanhScan);

namespace rnnlab {
using MinGruScanForward = ScanForward<MinGruScan>;
using MinGruScanBackward = ScanBackward<MinGruScan>;
using MinLstmScanForward = ScanForward<MinLstmScan>;
using MinLstmScanBackward = ScanBackward<MinLstmScan>;
using LruScanForward = ScanForward<LruScan>;
using LruScanBackward = ScanBackward<LruScan>;
using RgLruScanForward = ScanForward<RgLruScan>;
using RgLruScanBackward = ScanBackward<RgLruScan>;
using HgrnScanForward = ScanForward<HgrnScan>;
using HgrnScanBackward = ScanBackward<HgrnScan>;
using IndRnnReluScanForward = ScanForward<IndRnnReluScan>;
using IndRnnReluScanBackward = ScanBackward<IndRnnReluScan>;
using IndRnnTanhScanForward = ScanForward<IndRnnTanhScan>;
using IndRnnTanhScanBackward = ScanBackward<IndRnnTanhScan>;
}  // namespace rnnlab

using tensorflow::DEVICE_CPU;
REGISTER_KERNEL_BUILDER(Name("RnnlabMinGruScanForward").Device(DEVICE_CPU), rnnlab::MinGruScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabMinGruScanBackward").Device(DEVICE_CPU), rnnlab::MinGruScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabMinLstmScanForward").Device(DEVICE_CPU), rnnlab::MinLstmScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabMinLstmScanBackward").Device(DEVICE_CPU), rnnlab::MinLstmScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabLruScanForward").Device(DEVICE_CPU), rnnlab::LruScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabLruScanBackward").Device(DEVICE_CPU), rnnlab::LruScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabRgLruScanForward").Device(DEVICE_CPU), rnnlab::RgLruScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabRgLruScanBackward").Device(DEVICE_CPU), rnnlab::RgLruScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabHgrnScanForward").Device(DEVICE_CPU), rnnlab::HgrnScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabHgrnScanBackward").Device(DEVICE_CPU), rnnlab::HgrnScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabIndRnnReluScanForward").Device(DEVICE_CPU), rnnlab::IndRnnReluScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabIndRnnReluScanBackward").Device(DEVICE_CPU), rnnlab::IndRnnReluScanBackward);
REGISTER_KERNEL_BUILDER(Name("RnnlabIndRnnTanhScanForward").Device(DEVICE_CPU), rnnlab::IndRnnTanhScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabIndRnnTanhScanBackward").Device(DEVICE_CPU), rnnlab::IndRnnTanhScanBackward);

// S6, Mamba's selective scan (rnnlab.recurrence.cells.S6Cell): D channels × N states a row,
// h_t[d, n] = e^(Δ_t[d] A[d, n]) h_{t-1}[d, n] + Δ_t[d] B_t[n] v_t[d] with Δ_t = softplus(p_t),
// read out in the same loop as y_t[d] = Σ_n C_t[n] h_t[d, n] + D[d] v_t[d]: the states, N
// times the outputs, never reach memory (the scan's [B, T, D·N] tensor was what made
// TensorFlow's route slow). [v | p | B | C] = x W + b (2D + 2N wide) is projected
// kSelectiveBlock steps at a time, by one GEMM into cache (TensorFlow's matmul of all steps,
// with 2 inputs, took as long as the scan). B_t and C_t are shared by the channels, so the
// packets run over channels and the loop over n broadcasts B_t[n] and C_t[n]: forward, no
// sum across lanes. A row's state is scratch, [N, D'] (D' is D rounded up to whole packets,
// the padding all zeros: its decay is 1, its input 0), a few KB in L1. The forward pass
// keeps the state at the start of every block; the backward pass recomputes a block's
// states and decays from it into scratch ([kSelectiveBlock + 1, N, D'] and
// [kSelectiveBlock, N, D'], in L2) and walks them back: exact, for a second pass's exps.
//   forward(inputs [B,T,I], readout_inputs [B,T,I] or [0], kernel [I,W], bias [W] or [0],
//           a [D,N], skip [D], initial [B,D·N], keep [B,T] or [0])
//       -> outputs [B,T,D], final [B,D·N], checkpoints [B,⌈T/kSelectiveBlock⌉,N·D']
//   backward(the same, checkpoints, d_outputs [B,T,D] or [0], d_final [B,D·N])
//       -> d_inputs, d_readout_inputs, d_kernel, d_bias, d_a, d_skip, d_initial
// readout_inputs, where given (the cell's input dropout), are what C and D v read, as in the
// cell's step; else inputs do. initial and final are the cell's channel-major [D, N]. A
// masked step (keep 0) holds the state and still reads it out, as the cell's readout does.
namespace rnnlab {

constexpr int64_t kSelectiveBlock = 64;  // steps projected at once, and between checkpoints

struct SelectiveSizes {
  int64_t B, T, I, D, N, W, P, blocks;    // P: packets in a state's row of D'
  int64_t Grid() const { return N * P; }  // packets in one state
};

// Δ = softplus(p) = max(p, 0) + log(1 + u), u = e^-|p|, and, given `slope`, σ(p) = dΔ/dp,
// from one exp. log(1 + u) as log(w)·u/(w − 1), w = 1 + u (Goldberg's trick): within a few
// ulp for every u, where a plain log(w) loses u below float's epsilon.
inline void Softplus(const Packet& p, Packet* delta, Packet* slope) {
  const Packet one = Constant(1.0f);
  const Packet u = ExpInRange<true>(packet::pmin(packet::pabs(p), Constant(86.0f)));
  const Packet w = packet::padd(one, u);
  const Packet grown = packet::psub(w, one);
  const Packet log1p =
      packet::pselect(packet::pcmp_eq(grown, packet::pzero(grown)), u,
                      packet::pdiv(packet::pmul(packet::plog(w), u), grown));
  *delta = packet::padd(packet::pmax(p, packet::pzero(p)), log1p);
  if (slope) {
    const Packet inverse = packet::pdiv(one, w);
    *slope = packet::pselect(packet::pcmp_le(packet::pzero(p), p), inverse,
                             packet::pmul(u, inverse));
  }
}

// e^(Δ a), Δ a held in [-86, 88]: below, the decay is 0 to float precision.
inline Packet Decay(const Packet& delta, const Packet& a) {
  return ExpInRange(
      packet::pmin(packet::pmax(packet::pmul(delta, a), Constant(-86.0f)), Constant(88.0f)));
}

// Packets on the heap, in an Eigen array, which aligns its storage for them (a
// std::vector<Packet> would drop the type's attributes); zeros at first.
class PacketBuffer {
 public:
  explicit PacketBuffer(int64_t packets = 0) : floats_(Eigen::ArrayXf::Zero(packets * kWidth)) {}
  Packet* data() { return reinterpret_cast<Packet*>(floats_.data()); }
  const Packet* data() const { return reinterpret_cast<const Packet*>(floats_.data()); }

 private:
  Eigen::ArrayXf floats_;
};

inline bool Kept(const float* keep, int64_t at) { return keep == nullptr || keep[at] != 0.0f; }

// What both passes read.
struct SelectiveData {
  SelectiveSizes s;
  const float* inputs;          // [B, T, I]
  const float* readout_inputs;  // [B, T, I], or null: `inputs`
  const float* kernel;          // [I, W]
  const float* bias;            // [W] or null
  const Packet* a;              // A as [N, D'], the padding zeros
  const float* skip;            // [D]
  const float* keep;            // [B, T] or null

  // Steps [t0, t0 + n) of row b of `x` (inputs or readout_inputs) projected: x W + b.
  void Project(const float* x, int64_t b, int64_t t0, int64_t n, Matrix* out) const {
    out->resize(n, s.W);
    out->noalias() =
        ConstMatrixMap(x + (b * s.T + t0) * s.I, n, s.I) * ConstMatrixMap(kernel, s.I, s.W);
    if (bias) out->rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias, s.W);
  }
};

// Step `at` on the state h ([N, P] packets) in place, its output to `outputs`; `main` is
// the step's projection, `read` the readout's (the same, without readout inputs).
void SelectiveStep(const SelectiveData& d, int64_t at, const float* main, const float* read,
                   Packet* h, float* outputs) {
  const SelectiveSizes& s = d.s;
  const float *b = main + 2 * s.D, *c = read + 2 * s.D + s.N;
  const bool kept = Kept(d.keep, at);
  for (int64_t q = 0; q < s.P; ++q) {
    const int64_t first = q * kWidth, count = std::min(kWidth, s.D - first);
    Packet y = Constant(0.0f);
    if (kept) {
      Packet delta;
      Softplus(Load(main + s.D + first, count), &delta, nullptr);
      const Packet input = packet::pmul(delta, Load(main + first, count));
      for (int64_t n = 0; n < s.N; ++n) {
        Packet& state = h[n * s.P + q];
        state = packet::pmadd(Decay(delta, d.a[n * s.P + q]), state,
                              packet::pmul(input, Constant(b[n])));
        y = packet::pmadd(Constant(c[n]), state, y);
      }
    } else {
      for (int64_t n = 0; n < s.N; ++n) y = packet::pmadd(Constant(c[n]), h[n * s.P + q], y);
    }
    y = packet::pmadd(Load(d.skip + first, count), Load(read + first, count), y);
    Store(outputs + at * s.D + first, y, count);
  }
}

// Step `at` again for the backward pass, h_{t-1} in `before`, h_t to `after`: no readout,
// and each state's decay kept in `decays` ([N, P]), so that the step back takes no exp.
void SelectiveStepAgain(const SelectiveData& d, int64_t at, const float* main,
                        const Packet* before, Packet* after, Packet* decays) {
  const SelectiveSizes& s = d.s;
  if (!Kept(d.keep, at)) {
    std::copy_n(before, s.Grid(), after);
    return;
  }
  const float* b = main + 2 * s.D;
  for (int64_t q = 0; q < s.P; ++q) {
    const int64_t first = q * kWidth, count = std::min(kWidth, s.D - first);
    Packet delta;
    Softplus(Load(main + s.D + first, count), &delta, nullptr);
    const Packet input = packet::pmul(delta, Load(main + first, count));
    for (int64_t n = 0; n < s.N; ++n) {
      const int64_t i = n * s.P + q;
      decays[i] = Decay(delta, d.a[i]);
      after[i] = packet::pmadd(decays[i], before[i], packet::pmul(input, Constant(b[n])));
    }
  }
}

// What one thread sums over its rows; the threads' sums are added up at the end.
struct SelectiveGradientSums {
  Matrix d_kernel;     // [I, W]
  Eigen::ArrayXf d_bias;  // [W]
  PacketBuffer d_a, d_skip;  // [N, P] and [P]
};

// One step's gradients: into the rows of its projection's gradient (`d_main`, and `d_read`
// for the readout's columns v and C, the same row without readout inputs; `d_read`'s v is
// added to, the rest stored) and the thread's sums.
struct SelectiveStepGradients {
  float *d_main, *d_read;
  Packet *carried, *sums;  // dL/dh ([N, P]); the packets of B's and C's gradients ([2N])
  SelectiveGradientSums* sum;
};

// Step `at` backward: `before` and `after` are h_{t-1} and h_t, `decays` the step's, and
// `carried` dL/dh_t from the later steps on entry and dL/dh_{t-1} on exit. The sums over
// channels (B's and C's gradients) are summed by packet, and across lanes once a step.
void SelectiveStepBack(const SelectiveData& d, int64_t at, const float* main, const float* read,
                       const Packet* before, const Packet* after, const Packet* decays,
                       const float* d_outputs, const SelectiveStepGradients& out) {
  const SelectiveSizes& s = d.s;
  const float *b = main + 2 * s.D, *c = read + 2 * s.D + s.N;
  Packet *sums_b = out.sums, *sums_c = out.sums + s.N, *carried = out.carried;
  Packet* d_a = out.sum->d_a.data();
  const bool kept = Kept(d.keep, at);
  std::fill_n(out.sums, 2 * s.N, Constant(0.0f));
  for (int64_t q = 0; q < s.P; ++q) {
    const int64_t first = q * kWidth, count = std::min(kWidth, s.D - first);
    const Packet dy = d_outputs ? Load(d_outputs + at * s.D + first, count) : Constant(0.0f);
    Packet& d_skip = out.sum->d_skip.data()[q];
    d_skip = packet::pmadd(dy, Load(read + first, count), d_skip);
    if (!kept) {  // h_t = h_{t-1}: only the readout's gradient joins the carried one
      for (int64_t n = 0; n < s.N; ++n) {
        const int64_t i = n * s.P + q;
        sums_c[n] = packet::pmadd(dy, after[i], sums_c[n]);
        carried[i] = packet::pmadd(dy, Constant(c[n]), carried[i]);
      }
      Store(out.d_main + first, Constant(0.0f), count);
      Store(out.d_main + s.D + first, Constant(0.0f), count);
    } else {
      Packet delta, slope;
      Softplus(Load(main + s.D + first, count), &delta, &slope);
      const Packet v = Load(main + first, count), input = packet::pmul(delta, v);
      Packet d_delta = Constant(0.0f), through_b = Constant(0.0f);
      for (int64_t n = 0; n < s.N; ++n) {
        const int64_t i = n * s.P + q;
        const Packet decay = decays[i];
        const Packet g = packet::pmadd(dy, Constant(c[n]), carried[i]);  // dL/dh_t
        sums_c[n] = packet::pmadd(dy, after[i], sums_c[n]);
        const Packet d_exponent = packet::pmul(packet::pmul(g, before[i]), decay);  // d(Δ a)
        d_delta = packet::pmadd(d_exponent, d.a[i], d_delta);
        d_a[i] = packet::pmadd(d_exponent, delta, d_a[i]);
        through_b = packet::pmadd(g, Constant(b[n]), through_b);  // Σ_n g B_t[n]
        sums_b[n] = packet::pmadd(g, input, sums_b[n]);
        carried[i] = packet::pmul(g, decay);
      }
      d_delta = packet::pmadd(through_b, v, d_delta);
      Store(out.d_main + first, packet::pmul(through_b, delta), count);
      Store(out.d_main + s.D + first, packet::pmul(d_delta, slope), count);
    }
    AddTo<false>(out.d_read + first, packet::pmul(dy, Load(d.skip + first, count)), count);
  }
  for (int64_t n = 0; n < s.N; ++n) {
    out.d_main[2 * s.D + n] = packet::predux(sums_b[n]);
    out.d_read[2 * s.D + s.N + n] = packet::predux(sums_c[n]);
  }
}

// A state between the cell's [D, N] and the scratch's [N, D'] (the padding zeros).
void ToScratch(const SelectiveSizes& s, const float* from, Packet* to) {
  std::fill_n(to, s.Grid(), Constant(0.0f));
  float* grid = reinterpret_cast<float*>(to);
  for (int64_t d = 0; d < s.D; ++d) {
    for (int64_t n = 0; n < s.N; ++n) grid[n * s.P * kWidth + d] = from[d * s.N + n];
  }
}

void FromScratch(const SelectiveSizes& s, const Packet* from, float* to) {
  const float* grid = reinterpret_cast<const float*>(from);
  for (int64_t d = 0; d < s.D; ++d) {
    for (int64_t n = 0; n < s.N; ++n) to[d * s.N + n] = grid[n * s.P * kWidth + d];
  }
}

// The inputs both passes read, by name, checked against one another.
struct SelectiveInputs {
  const Tensor *inputs, *readout_inputs, *kernel, *bias, *a, *skip, *initial, *keep;

  absl::Status Read(OpKernelContext* ctx, SelectiveSizes* s) {
    TF_RETURN_IF_ERROR(ReadInputs(ctx, {{"inputs", &inputs},
                                        {"readout_inputs", &readout_inputs},
                                        {"kernel", &kernel},
                                        {"bias", &bias},
                                        {"a", &a},
                                        {"skip", &skip},
                                        {"initial", &initial},
                                        {"keep", &keep}}));
    if (inputs->dims() != 3 || a->dims() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("rnnlab selective scan: expected inputs [B, T, I] and a [D, N], got ",
                       ShapeText(*inputs), " and ", ShapeText(*a)));
    }
    s->B = inputs->dim_size(0);
    s->T = inputs->dim_size(1);
    s->I = inputs->dim_size(2);
    s->D = a->dim_size(0);
    s->N = a->dim_size(1);
    s->W = 2 * (s->D + s->N);
    s->P = (s->D + kWidth - 1) / kWidth;
    s->blocks = (s->T + kSelectiveBlock - 1) / kSelectiveBlock;
    TF_RETURN_IF_ERROR(
        ExpectOrEmpty(*readout_inputs, "readout_inputs", "[B, T, I]", {s->B, s->T, s->I}));
    TF_RETURN_IF_ERROR(Expect(*kernel, "kernel", "[I, 2D + 2N]", {s->I, s->W}));
    TF_RETURN_IF_ERROR(ExpectOrEmpty(*bias, "bias", "[2D + 2N]", {s->W}));
    TF_RETURN_IF_ERROR(Expect(*skip, "skip", "[D]", {s->D}));
    TF_RETURN_IF_ERROR(Expect(*initial, "initial", "[B, D·N]", {s->B, s->D * s->N}));
    return ExpectOrEmpty(*keep, "keep", "[B, T]", {s->B, s->T});
  }

  // A as [N, D'] packets, the padding zeros.
  PacketBuffer TransposedA(const SelectiveSizes& s) const {
    PacketBuffer grid(s.Grid());
    ToScratch(s, a->flat<float>().data(), grid.data());
    return grid;
  }

  SelectiveData Data(const SelectiveSizes& s, const PacketBuffer& a_grid) const {
    return SelectiveData{s,
                         inputs->flat<float>().data(),
                         DataOrNull(*readout_inputs),
                         kernel->flat<float>().data(),
                         DataOrNull(*bias),
                         a_grid.data(),
                         skip->flat<float>().data(),
                         DataOrNull(*keep)};
  }
};

class SelectiveScanForward : public ShardedKernel {
 public:
  using ShardedKernel::ShardedKernel;

  void Compute(OpKernelContext* ctx) override {
    SelectiveInputs in;
    SelectiveSizes s;
    OP_REQUIRES_OK(ctx, in.Read(ctx, &s));
    Tensor *outputs_out, *final_out, *checkpoints_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("outputs", TensorShape({s.B, s.T, s.D}), &outputs_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("final", TensorShape({s.B, s.D * s.N}), &final_out));
    const int64_t grid_floats = s.Grid() * kWidth;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("checkpoints", TensorShape({s.B, s.blocks, grid_floats}),
                                             &checkpoints_out));
    const PacketBuffer a_grid = in.TransposedA(s);
    const SelectiveData d = in.Data(s, a_grid);
    const float* initial = in.initial->flat<float>().data();
    float* outputs = outputs_out->flat<float>().data();
    float* final = final_out->flat<float>().data();
    float* checkpoints = checkpoints_out->flat<float>().data();
    OverRows(ctx, s.B, shards_, [&](int64_t first, int64_t end, int64_t) {
      PacketBuffer h(s.Grid());
      Matrix main, read;
      for (int64_t b = first; b < end; ++b) {
        ToScratch(s, initial + b * s.D * s.N, h.data());
        for (int64_t block = 0; block < s.blocks; ++block) {
          const int64_t t0 = block * kSelectiveBlock, n = std::min(kSelectiveBlock, s.T - t0);
          std::copy_n(reinterpret_cast<const float*>(h.data()), grid_floats,
                      checkpoints + (b * s.blocks + block) * grid_floats);
          d.Project(d.inputs, b, t0, n, &main);
          if (d.readout_inputs) d.Project(d.readout_inputs, b, t0, n, &read);
          const float* reading = (d.readout_inputs ? read : main).data();
          for (int64_t k = 0; k < n; ++k) {
            SelectiveStep(d, b * s.T + t0 + k, main.data() + k * s.W, reading + k * s.W, h.data(),
                          outputs);
          }
        }
        FromScratch(s, h.data(), final + b * s.D * s.N);
      }
    });
  }
};

class SelectiveScanBackward : public ShardedKernel {
 public:
  using ShardedKernel::ShardedKernel;

  void Compute(OpKernelContext* ctx) override {
    SelectiveInputs in;
    SelectiveSizes s;
    OP_REQUIRES_OK(ctx, in.Read(ctx, &s));
    const Tensor *checkpoints_in, *d_outputs_in, *d_final_in;
    OP_REQUIRES_OK(ctx, ReadInputs(ctx, {{"checkpoints", &checkpoints_in},
                                         {"d_outputs", &d_outputs_in},
                                         {"d_final", &d_final_in}}));
    const int64_t grid_floats = s.Grid() * kWidth;
    OP_REQUIRES_OK(ctx, Expect(*checkpoints_in, "checkpoints", "[B, ⌈T/64⌉, N·D']",
                               {s.B, s.blocks, grid_floats}));
    OP_REQUIRES_OK(ctx, ExpectOrEmpty(*d_outputs_in, "d_outputs", "[B, T, D]", {s.B, s.T, s.D}));
    OP_REQUIRES_OK(ctx, Expect(*d_final_in, "d_final", "[B, D·N]", {s.B, s.D * s.N}));
    const bool separate = in.readout_inputs->NumElements() > 0;
    const bool has_bias = in.bias->NumElements() > 0;
    Tensor *d_inputs_out, *d_readout_out, *d_kernel_out, *d_bias_out, *d_a_out, *d_skip_out,
        *d_initial_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_inputs", in.inputs->shape(), &d_inputs_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_readout_inputs", in.readout_inputs->shape(),
                                             &d_readout_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_kernel", TensorShape({s.I, s.W}), &d_kernel_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_bias", in.bias->shape(), &d_bias_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_a", TensorShape({s.D, s.N}), &d_a_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_skip", TensorShape({s.D}), &d_skip_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("d_initial", TensorShape({s.B, s.D * s.N}),
                                             &d_initial_out));
    const PacketBuffer a_grid = in.TransposedA(s);
    const SelectiveData d = in.Data(s, a_grid);
    const float* checkpoints = checkpoints_in->flat<float>().data();
    const float* d_outputs = DataOrNull(*d_outputs_in);
    const float* d_final = d_final_in->flat<float>().data();
    float* d_inputs = d_inputs_out->flat<float>().data();
    float* d_readout = separate ? d_readout_out->flat<float>().data() : nullptr;
    float* d_initial = d_initial_out->flat<float>().data();
    const ConstMatrixMap kernel(d.kernel, s.I, s.W);
    const int64_t shards = std::max<int64_t>(1, std::min(shards_, s.B));
    std::vector<SelectiveGradientSums> sums(shards);
    OverRows(ctx, s.B, shards, [&](int64_t first, int64_t end, int64_t shard) {
      SelectiveGradientSums& sum = sums[shard];
      sum.d_kernel = Matrix::Zero(s.I, s.W);
      sum.d_bias = Eigen::ArrayXf::Zero(s.W);
      sum.d_a = PacketBuffer(s.Grid());
      sum.d_skip = PacketBuffer(s.P);
      PacketBuffer states((kSelectiveBlock + 1) * s.Grid()), decays(kSelectiveBlock * s.Grid());
      PacketBuffer carried(s.Grid()), lane_sums(2 * s.N);
      Matrix main, read, d_main, d_read;
      for (int64_t b = first; b < end; ++b) {
        ToScratch(s, d_final + b * s.D * s.N, carried.data());
        for (int64_t block = s.blocks - 1; block >= 0; --block) {
          const int64_t t0 = block * kSelectiveBlock, n = std::min(kSelectiveBlock, s.T - t0);
          const int64_t at0 = b * s.T + t0;
          std::copy_n(checkpoints + (b * s.blocks + block) * grid_floats, grid_floats,
                      reinterpret_cast<float*>(states.data()));
          d.Project(d.inputs, b, t0, n, &main);
          if (separate) d.Project(d.readout_inputs, b, t0, n, &read);
          const float* reading = (separate ? read : main).data();
          for (int64_t k = 0; k < n; ++k) {  // the block's states again, from its checkpoint
            SelectiveStepAgain(d, at0 + k, main.data() + k * s.W, states.data() + k * s.Grid(),
                               states.data() + (k + 1) * s.Grid(), decays.data() + k * s.Grid());
          }
          d_main = Matrix::Zero(n, s.W);
          if (separate) d_read = Matrix::Zero(n, s.W);
          float* d_reading = (separate ? d_read : d_main).data();
          for (int64_t k = n - 1; k >= 0; --k) {
            const SelectiveStepGradients out{d_main.data() + k * s.W, d_reading + k * s.W,
                                             carried.data(), lane_sums.data(), &sum};
            SelectiveStepBack(d, at0 + k, main.data() + k * s.W, reading + k * s.W,
                              states.data() + k * s.Grid(), states.data() + (k + 1) * s.Grid(),
                              decays.data() + k * s.Grid(), d_outputs, out);
          }
          const ConstMatrixMap x(d.inputs + at0 * s.I, n, s.I);
          sum.d_kernel.noalias() += x.transpose() * d_main;
          if (has_bias) sum.d_bias += d_main.colwise().sum().transpose().array();
          MatrixMap(d_inputs + at0 * s.I, n, s.I).noalias() = d_main * kernel.transpose();
          if (!separate) continue;
          const ConstMatrixMap x_read(d.readout_inputs + at0 * s.I, n, s.I);
          sum.d_kernel.noalias() += x_read.transpose() * d_read;
          if (has_bias) sum.d_bias += d_read.colwise().sum().transpose().array();
          MatrixMap(d_readout + at0 * s.I, n, s.I).noalias() = d_read * kernel.transpose();
        }
        FromScratch(s, carried.data(), d_initial + b * s.D * s.N);
      }
    });
    MatrixMap d_kernel(d_kernel_out->flat<float>().data(), s.I, s.W);
    d_kernel.setZero();
    PacketBuffer d_a(s.Grid());
    Eigen::ArrayXf d_skip = Eigen::ArrayXf::Zero(s.P * kWidth);
    for (const SelectiveGradientSums& part : sums) {
      d_kernel += part.d_kernel;
      for (int64_t i = 0; i < s.Grid(); ++i) {
        d_a.data()[i] = packet::padd(d_a.data()[i], part.d_a.data()[i]);
      }
      d_skip += ConstRow(reinterpret_cast<const float*>(part.d_skip.data()), s.P * kWidth);
    }
    if (has_bias) {
      Row d_bias(d_bias_out->flat<float>().data(), s.W);
      d_bias.setZero();
      for (const SelectiveGradientSums& part : sums) d_bias += part.d_bias;
    }
    FromScratch(s, d_a.data(), d_a_out->flat<float>().data());
    Row(d_skip_out->flat<float>().data(), s.D) = d_skip.head(s.D);
  }
};

absl::Status SelectiveForwardShapes(InferenceContext* ctx) {
  ShapeHandle inputs, a, initial;
  TF_RETURN_IF_ERROR(InputShape(ctx, "inputs", 3, &inputs));
  TF_RETURN_IF_ERROR(InputShape(ctx, "a", 2, &a));
  TF_RETURN_IF_ERROR(InputShape(ctx, "initial", 2, &initial));
  const DimensionHandle rows = ctx->Dim(inputs, 0);
  TF_RETURN_IF_ERROR(
      SetOutput(ctx, "outputs", ctx->MakeShape({rows, ctx->Dim(inputs, 1), ctx->Dim(a, 0)})));
  TF_RETURN_IF_ERROR(SetOutput(ctx, "final", initial));
  return SetOutput(ctx, "checkpoints",
                   ctx->MakeShape({rows, ctx->UnknownDim(), ctx->UnknownDim()}));
}

absl::Status SelectiveBackwardShapes(InferenceContext* ctx) {
  return GradientShapes(ctx, {{"d_inputs", "inputs"},
                              {"d_readout_inputs", "readout_inputs"},
                              {"d_kernel", "kernel"},
                              {"d_bias", "bias"},
                              {"d_a", "a"},
                              {"d_skip", "skip"},
                              {"d_initial", "initial"}});
}

}  // namespace rnnlab

REGISTER_OP("RnnlabSelectiveScanForward")
    .Input("inputs: float")
    .Input("readout_inputs: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("a: float")
    .Input("skip: float")
    .Input("initial: float")
    .Input("keep: float")
    .Attr("shards: int = 1")
    .Output("outputs: float")
    .Output("final: float")
    .Output("checkpoints: float")
    .SetShapeFn(rnnlab::SelectiveForwardShapes);
REGISTER_OP("RnnlabSelectiveScanBackward")
    .Input("inputs: float")
    .Input("readout_inputs: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("a: float")
    .Input("skip: float")
    .Input("initial: float")
    .Input("keep: float")
    .Input("checkpoints: float")
    .Input("d_outputs: float")
    .Input("d_final: float")
    .Attr("shards: int = 1")
    .Output("d_inputs: float")
    .Output("d_readout_inputs: float")
    .Output("d_kernel: float")
    .Output("d_bias: float")
    .Output("d_a: float")
    .Output("d_skip: float")
    .Output("d_initial: float")
    .SetShapeFn(rnnlab::SelectiveBackwardShapes);
REGISTER_KERNEL_BUILDER(Name("RnnlabSelectiveScanForward").Device(DEVICE_CPU), rnnlab::SelectiveScanForward);
REGISTER_KERNEL_BUILDER(Name("RnnlabSelectiveScanBackward").Device(DEVICE_CPU), rnnlab::SelectiveScanBackward);
