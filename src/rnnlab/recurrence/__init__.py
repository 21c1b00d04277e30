"""Where a cell's recurrence runs: the cells, the layer that picks a route for them, and the
routes, each faster than Keras's step loop for the cells it knows and equal to it in maths.

- `cells`: rnnlab's own cells (minGRU, minLSTM, LRU, RG-LRU, HGRN, S6, IndRNN), plain Keras
  cells.
- `xlstm`: xLSTM's sLSTM and mLSTM; `chunkwise`, the mLSTM's route for a whole sequence.
- `stack`: the config's `cell` and `model` groups as a stack of `layer.ProbedRNN` layers.
- `layer`: `ProbedRNN`, which picks a route per call: the probe's perturbed loop, a
  parallel scan, cuDNN, the fused recurrence, or Keras's own loop.
- `masks`: the input dropout and padding mask every route applies as Keras's loop does.
- `fused`: the route for Keras's SimpleRNN, LSTM and GRU cells; `cell_kinds` holds their
  maths and hand-written derivatives, `graph_loop` runs them in TensorFlow's graph.
- `scan`: the route for cells linear in their state, a whole sequence at once.
- `native_calls`: both routes' calls into `native`, rnnlab's C++ ops, built per machine.
- `custom_gradients`: what the routes' hand-written gradients share, and their cleanup.
"""
