"""What a result's number means: the protocol settings, dataset and algorithm identities, fingerprinted.

A record's value depends on three things besides the seed, and each gets a fingerprint (a short
hash of a JSON-normalised dict), so that the table never averages numbers that mean different
things:

* the **protocol** (:func:`protocol_settings`): the encoder, pretraining length, batch rule and
  optimizer, and the transfer mode, epochs, batch, optimizer, ``drop_last`` and correlation
  aggregate: settings shared by every dataset and algorithm of a run;
* the **datasets** (:func:`dataset_settings`): the resolved pretraining and transfer YAMLs (reader
  settings, task, batch size, reader_options), with absolute paths made portable and
  :data:`NON_IDENTITY_KEYS` left out;
* the **algorithm**: its ``settings()``.

Settings that change speed or location but not numbers (attention kernel, ``compile``, workers,
folders, precision of the same run on another device) are left out; they are recorded elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dabs_rq.hashing import digest

__all__ = [
    "BATCH_SCOPES",
    "NON_IDENTITY_KEYS",
    "dataset_identity",
    "dataset_settings",
    "digest",
    "flatten",
    "portable",
    "protocol_settings",
]

#: Model config keys that choose a kernel, not the function computed.
SPEED_ONLY_MODEL_KEYS = ("attention", "compile")
#: ``batch_scope``: ``job`` (DABS) = a configured batch size is the job's effective batch, split over
#: the devices; ``device`` (opt-in) = every device takes the full batch (effective batch x devices).
BATCH_SCOPES = ("job", "device")
#: Dataset YAML keys that describe a dataset without defining it (``examples``: its size, for
#: ``dabs-rq plan``): left out of dataset fingerprints, records and run states, so stating or
#: correcting them never makes a dataset another one.
NON_IDENTITY_KEYS = ("examples",)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{dotted key: leaf value}`` (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); an empty
    mapping and a list are leaves."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key in sorted(value, key=str):
            out.update(flatten(value[key], f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value} if prefix else {}


def protocol_settings(config: Mapping[str, Any], world_size: int = 1) -> dict[str, Any]:
    """The flat, number-affecting protocol settings of a resolved run config.

    The device count enters only where it changes the numbers: with ``batch_scope=device`` (the
    effective batch grows with it) or ``pretrain.lr_scaling=linear`` (so does the learning rate).
    """
    model = {k: v for k, v in config["model"].items() if k not in SPEED_ONLY_MODEL_KEYS}
    pretrain, transfer = config["pretrain"], config["transfer"]
    settings = {
        "model": model,
        "pretrain": {
            "max_steps": pretrain["max_steps"],
            "batch_size": pretrain.get("batch_size"),
            "optimizer": pretrain["optimizer"],
            "lr_scaling": pretrain.get("lr_scaling", "none"),
        },
        "batch_scope": config.get("batch_scope", "job"),
        "trainer": {"accumulate_grad_batches": config.get("trainer", {}).get("accumulate_grad_batches", 1)},
        "transfer": {
            key: transfer.get(key) for key in ("mode", "epochs", "batch_size", "optimizer", "drop_last", "correlation")
        },
    }
    if settings["batch_scope"] == "device" or settings["pretrain"]["lr_scaling"] == "linear":
        settings["world_size"] = int(world_size)
    return flatten(settings)


def portable(node: Any, roots: Mapping[str, str | os.PathLike | None]) -> Any:
    """``node`` with absolute path strings under one of ``roots`` written as ``<name>/relative``.

    Keeps a user's folder layout (and user name) out of records and fingerprints: the same data
    read from another copy gives the same dataset settings.
    """
    prefixes = sorted(
        ((str(Path(p).expanduser().resolve()), name) for name, p in roots.items() if p), key=lambda item: -len(item[0])
    )

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value):
            for prefix, name in prefixes:
                if value == prefix or value.startswith(prefix + os.sep):
                    return f"<{name}>" + value[len(prefix) :]
        return value

    return convert(node)


def dataset_identity(yaml: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved dataset YAML without its :data:`NON_IDENTITY_KEYS`."""
    return {k: v for k, v in yaml.items() if k not in NON_IDENTITY_KEYS}


def dataset_settings(
    pretrain: Mapping[str, Any], transfer: Mapping[str, Any], roots: Mapping[str, str | os.PathLike | None]
) -> dict[str, Any]:
    """The resolved pretraining and transfer dataset YAMLs as stored in a record (portable paths)."""
    return portable({"pretrain": dataset_identity(pretrain), "transfer": dataset_identity(transfer)}, roots)
