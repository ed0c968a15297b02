"""Data layer: domain YAMLs, readers that build datasets from them, and the Lightning datamodule."""
