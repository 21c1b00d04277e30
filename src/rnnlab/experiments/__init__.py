"""Many runs: sweeps (Optuna) and paper grids, their workers and launchers."""
