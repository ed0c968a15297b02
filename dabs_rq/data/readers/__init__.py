"""Readers of the real DABS datasets, one module per modality; selected by ``reader._target_`` in YAML."""
