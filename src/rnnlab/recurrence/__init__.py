"""Where a cell's recurrence runs: the cells, the layer that picks a route for them,
rnnlab's fused step loop, parallel scans and the native C++ ops."""
