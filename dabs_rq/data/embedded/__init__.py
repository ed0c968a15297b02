"""Readers for the embedded default: real data shipped inside installable packages.

Every reader is a callable ``reader(split, cache_dir) -> Dataset`` selected by a
``domains/*.yaml`` file, exactly like the readers of real DABS datasets.
"""
