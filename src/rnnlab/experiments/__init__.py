"""Many runs: sweeps (Optuna) and paper grids, their workers and launchers.

Plain arguments in: the command lines that start them are parsed in cli.py, and what reads
their results back (reports/) sits above them and is called from there.
"""
