"""dabs_rq: a DABS benchmark runner with Randomized Quantization, e-Mix and baselines."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dabs_rq")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
