"""Speed benchmarks (run them all with ``dabs-rq bench``); each module exposes ``run(device, quick)``."""
