"""Generic readers: bring your own data with one YAML file, no Python.

Each reader kind is a dataclass schema (validated when the YAML is loaded; see
:mod:`dabs_rq.data.generic.spec`) and a reader function named in the YAML's ``reader._target_``.
:data:`READERS` maps those targets to their schemas; adding a kind means adding a module and
one entry here.
"""

from __future__ import annotations

from pathlib import Path

from dabs_rq.data.generic.sensor import SensorArrays, sensor_arrays
from dabs_rq.data.generic.spec import ReaderSpec, ReaderSpecError

#: ``reader._target_`` -> its schema
READERS: dict[str, type[ReaderSpec]] = {
    SensorArrays.TARGET: SensorArrays,
}


def validate_reader(mapping: dict, yaml_path: Path) -> dict | None:
    """The reader mapping with paths resolved against the YAML's folder, if it names a generic
    reader (else None); raises :class:`ReaderSpecError` for a wrong key, type, file or column."""
    spec_cls = READERS.get(str(mapping.get("_target_")))
    if spec_cls is None:
        return None
    spec = spec_cls.from_mapping(mapping, base=Path(yaml_path).parent)
    resolved = {name: getattr(spec, name) for name in spec_cls.PATH_FIELDS if name in mapping}
    return {**mapping, **resolved}


__all__ = ["READERS", "ReaderSpec", "ReaderSpecError", "SensorArrays", "sensor_arrays", "validate_reader"]
