"""rnnlab: compare recurrent cells honestly."""

__version__ = "0.1.0"
