// One forward and one backward pass of rnnlab's fused cells (SimpleRNN, LSTM, GRU) over one
// shard of the reference shape (100 steps, 32 rows, 128 units), outside TensorFlow, for
// callgrind to count or this thread's CPU clock to time (steadier than a wall clock on a
// shared machine): see fused_instructions.py, which builds and runs
// it. The kernels are included as source, so this measures whatever native/fused_cells.cc
// (or the file named by KERNELS, with a checks.h beside it) holds.
#include KERNELS

#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace {

using namespace rnnlab;

double ThreadSeconds() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return now.tv_sec + 1e-9 * now.tv_nsec;
}

template <class Cell>
void Run(int64_t steps, int64_t rows, int64_t units, int repeats) {
  const int64_t T = steps, B = rows, H = units, G = Cell::kGates * H, R = Cell::kRecords * H;
  std::mt19937 generator(0);
  std::normal_distribution<float> normal;
  auto random = [&](int64_t size, float scale) {
    std::vector<float> values(size);
    for (auto& value : values) value = scale * normal(generator);
    return values;
  };
  const std::vector<float> projected = random(T * B * G, 1.0f), kernel = random(H * G, 0.1f);
  const std::vector<float> bias = random(G, 0.1f), h0(B * H, 0.0f), c0(B * H, 0.0f);
  std::vector<float> h(T * B * H), c(Cell::kStates == 2 ? T * B * H : 0), records(T * B * R);
  std::vector<float> d_projected(T * B * G), d_inner(Cell::kSeparateInner ? T * B * G : 0);
  std::vector<float> d_h(B * H), d_c(B * H);
  const bool has_c = Cell::kStates == 2, recurrent_bias = Cell::kSeparateInner;
  double seconds[2] = {1e9, 1e9};
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const double started = ThreadSeconds();
    ForwardSequence<Cell>(ForwardBuffers{T, B, H, projected.data(), kernel.data(),
                                         recurrent_bias ? bias.data() : nullptr, h0.data(),
                                         has_c ? c0.data() : nullptr, nullptr, h.data(),
                                         has_c ? c.data() : nullptr,
                                         R ? records.data() : nullptr});
    const double middle = ThreadSeconds();
    std::fill(d_h.begin(), d_h.end(), 1.0f);
    std::fill(d_c.begin(), d_c.end(), 0.0f);
    BackwardSequence<Cell>(BackwardBuffers{
        T, B, H, R ? records.data() : nullptr, h.data(), has_c ? c.data() : nullptr, h0.data(),
        has_c ? c0.data() : nullptr, kernel.data(), nullptr, nullptr, d_projected.data(),
        Cell::kSeparateInner ? d_inner.data() : d_projected.data(), d_h.data(),
        has_c ? d_c.data() : nullptr});
    const double ended = ThreadSeconds();
    seconds[0] = std::min(seconds[0], middle - started);
    seconds[1] = std::min(seconds[1], ended - middle);
  }
  double total = 0;
  for (float value : d_projected) total += value;
  for (float value : h) total += value;
  // The checksum keeps the work from being optimised away and tells two versions apart.
  std::printf("checksum %.6g; fastest of %d: forward %.3f ms, backward %.3f ms\n", total,
              repeats, 1e3 * seconds[0], 1e3 * seconds[1]);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__SSE__)
  // TensorFlow flushes denormals to zero in its threads; so does this, or a gradient that
  // fades over the steps would time the CPU's slow path for denormals instead of the kernels.
  _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s simple_rnn|lstm|gru [STEPS ROWS UNITS REPEATS]\n", argv[0]);
    return 2;
  }
  const int64_t steps = argc > 2 ? std::atoll(argv[2]) : 100;
  const int64_t rows = argc > 3 ? std::atoll(argv[3]) : 32;
  const int64_t units = argc > 4 ? std::atoll(argv[4]) : 128;
  const int repeats = argc > 5 ? std::atoi(argv[5]) : 1;
  if (!std::strcmp(argv[1], "simple_rnn")) Run<SimpleRnnCell>(steps, rows, units, repeats);
  else if (!std::strcmp(argv[1], "lstm")) Run<LstmCell>(steps, rows, units, repeats);
  else if (!std::strcmp(argv[1], "gru")) Run<GruCell>(steps, rows, units, repeats);
  else return 2;
  return 0;
}
