"""Generic readers: bring your own data with one YAML file, no Python.

Each reader kind is a dataclass schema (validated when the YAML is loaded; see
:mod:`dabs_rq.data.generic.spec`) and a reader function that a YAML names in
``reader._target_``. :data:`READERS` maps those targets to their schemas (imported on first
use); adding a kind means adding a module and one entry here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from dabs_rq.data.generic.spec import AtLeast, ReaderSpec, ReaderSpecError
from dabs_rq.errors import UserError

#: ``reader._target_`` -> ``module:SchemaClass``
READERS: dict[str, str] = {
    "dabs_rq.data.generic.sensor.sensor_arrays": "dabs_rq.data.generic.sensor:SensorArrays",
    "dabs_rq.data.generic.images.image_folder": "dabs_rq.data.generic.images:ImageFolder",
    "dabs_rq.data.generic.images.image_table": "dabs_rq.data.generic.images:ImageTable",
    "dabs_rq.data.generic.audio.audio_files": "dabs_rq.data.generic.audio:AudioFiles",
    "dabs_rq.data.generic.text.text_table": "dabs_rq.data.generic.text:TextTable",
    "dabs_rq.data.generic.image_text.image_text_pairs": "dabs_rq.data.generic.image_text:ImageTextPairs",
}


def schema(target: str) -> type[ReaderSpec] | None:
    """The schema class of a generic reader ``target`` (None for any other reader)."""
    where = READERS.get(str(target))
    if where is None:
        return None
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


def check_inputs(spec: ReaderSpec, inputs: list[dict]) -> None:
    """The YAML's ``inputs`` must take what the reader makes (window length, image size, ...)."""
    expected = spec.expected_inputs()
    if expected and len(expected) != len(inputs):
        raise ReaderSpecError(
            "_target_", f"makes {len(expected)} input(s) per item but the YAML's inputs list {len(inputs)}"
        )
    for i, (wanted, given) in enumerate(zip(expected, inputs)):
        for key, value in wanted.items():
            have = given.get(key)
            if isinstance(value, AtLeast):
                if have is not None and int(have) < int(value):
                    raise InputsMismatchError(
                        f"inputs[{i}].{key}: is {have!r} but the reader needs {value!r} (from its settings); raise it"
                    )
            elif have is not None and list(_as_list(have)) != list(_as_list(value)):
                raise InputsMismatchError(
                    f"inputs[{i}].{key}: is {have!r} but the reader makes {value!r} "
                    f"(from its settings); make them equal"
                )


class InputsMismatchError(UserError):
    """The YAML's ``inputs`` disagree with what its generic reader makes."""


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def validate_reader(mapping: dict, yaml_path: Path, inputs: list[dict] | None = None) -> dict | None:
    """The reader mapping with paths resolved against the YAML's folder, if it names a generic
    reader (else None); raises :class:`ReaderSpecError` for a wrong key, type, file or column, and
    :class:`InputsMismatchError` when ``inputs`` cannot take the reader's items."""
    spec_cls = schema(str(mapping.get("_target_")))
    if spec_cls is None:
        return None
    spec = spec_cls.from_mapping(mapping, base=Path(yaml_path).parent)
    if inputs is not None:
        check_inputs(spec, inputs)
    resolved = {name: getattr(spec, name) for name in spec_cls.PATH_FIELDS if name in mapping}
    return {**mapping, **resolved}


__all__ = [
    "READERS",
    "InputsMismatchError",
    "ReaderSpec",
    "ReaderSpecError",
    "check_inputs",
    "schema",
    "validate_reader",
]
