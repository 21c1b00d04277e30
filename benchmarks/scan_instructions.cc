// One forward and one backward pass of rnnlab's native scan kernels over a few rows of the
// long shape (1,000 steps, 64 lanes), outside TensorFlow, for callgrind to count: see
// scan_instructions.py, which builds and runs it. The kernels are included as source, so
// this measures whatever native/scans.cc (or the file named by KERNELS, with a checks.h
// beside it) holds.
#include KERNELS

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

namespace {

using namespace rnnlab;

template <class Scan>
void Run(int64_t rows, int64_t inputs) {
  const int64_t T = 1000, N = 64, S = Scan::kStates * N, W = Scan::kGates * N;
  const int64_t Q = Scan::kParameters * N;
  std::mt19937 generator(0);
  std::normal_distribution<float> normal;
  auto random = [&](int64_t size, float scale) {
    std::vector<float> values(size);
    for (auto& value : values) value = scale * normal(generator);
    return values;
  };
  const std::vector<float> x = random(rows * T * inputs, 1.0f);
  const std::vector<float> kernel = random(inputs * W, 0.5f);
  const std::vector<float> bias = random(W, 0.1f), d_states = random(rows * T * S, 0.01f);
  std::vector<float> parameters(std::max<int64_t>(Q, 1), 0.3f), h0(rows * S, 0.0f);
  for (int64_t q = 0; q < std::min(Q, 2 * N); ++q) parameters[q] = q < N ? 0.9f : 0.05f;
  std::vector<float> states(rows * T * S), d_x(rows * T * inputs), carried(rows * S, 0.0f);
  const float* scan_parameters = Q ? parameters.data() : nullptr;
  const ScanData data{T, inputs, N, W, S, x.data(), kernel.data(), bias.data(),
                      scan_parameters, /*keep=*/nullptr, h0.data()};
  Matrix projected, d_projected;
  ScanGradientSums sum{Matrix::Zero(inputs, W), Eigen::ArrayXf::Zero(W),
                       Eigen::ArrayXf::Zero(Q)};
  const ScanGradients out{states.data(), d_states.data(), d_x.data(), carried.data()};
  WithInputs(inputs, [&](auto width) {
    constexpr int kInputs = decltype(width)::value;
    for (int64_t b = 0; b < rows; ++b) {
      ScanForwardRow<Scan, kInputs>(data, b, states.data(), &projected);
    }
    for (int64_t b = 0; b < rows; ++b) {
      ScanBackwardRow<Scan, kInputs>(data, out, b, &projected, &d_projected, &sum);
    }
  });
  double total = 0;
  for (float value : d_x) total += value;
  std::printf("checksum %.6g\n", total);  // keeps the work from being optimised away
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s mingru|minlstm|lru|rglru|hgrn ROWS INPUTS\n", argv[0]);
    return 2;
  }
  const int64_t rows = std::atoll(argv[2]), inputs = std::atoll(argv[3]);
  if (!std::strcmp(argv[1], "mingru")) Run<MinGruScan>(rows, inputs);
  else if (!std::strcmp(argv[1], "minlstm")) Run<MinLstmScan>(rows, inputs);
  else if (!std::strcmp(argv[1], "lru")) Run<LruScan>(rows, inputs);
  else if (!std::strcmp(argv[1], "rglru")) Run<RgLruScan>(rows, inputs);
  else if (!std::strcmp(argv[1], "hgrn")) Run<HgrnScan>(rows, inputs);
  else return 2;
  return 0;
}
