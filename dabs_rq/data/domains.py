"""Dataset/domain YAMLs: found by name in ``domains/`` (and extra folders), validated on load.

One YAML per dataset. Required keys for every file:

``name`` (= file stem), ``domain`` (the group it is reported under), ``role``
(``pretrain`` or ``transfer``), ``inputs`` (list of embedder configs, each with a
``_target_``), ``reader`` (a ``_target_`` callable ``(split, cache_dir) -> Dataset``)
and ``batch_size``. A ``pretrain`` file also lists its ``transfer`` datasets; a
``transfer`` file has a ``task`` (``_target_`` of :mod:`dabs_rq.tasks`). Optional:
``display_name``, ``paper_name`` (row of the paper's table), ``synthetic``,
``num_workers``, ``description``, ``data`` (where the files live; see
:mod:`dabs_rq.data.storage`), ``reader_options`` (extra reader arguments that choose a DABS
behaviour: a quirk of DABS reproduced or fixed; recorded with results) and ``examples`` (the
dataset's size for ``dabs-rq plan``: ``{train: N, test: M, source: "...", approximate: bool}``, a
count ``null`` where unknown; not part of the dataset's identity, see
:data:`dabs_rq.results.protocol.NON_IDENTITY_KEYS`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dabs_rq.errors import UserError
from dabs_rq.paths import DOMAINS_DIR

ROLES = ("pretrain", "transfer")
REQUIRED = ("name", "domain", "role", "inputs", "reader", "batch_size")
OPTIONAL = (
    "display_name",
    "paper_name",
    "synthetic",
    "num_workers",
    "description",
    "transfer",
    "task",
    "data",
    "reader_options",
    "examples",
)
#: Keys of ``examples`` (``train`` and ``test`` required: a count or null).
EXAMPLES_KEYS = ("train", "test", "source", "approximate")
EXTRA_DIRS_ENV = "DABS_RQ_DOMAINS"


class DomainConfigError(UserError):
    """A domain YAML is missing, unknown or malformed (message names file, key and expectation)."""


def search_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Built-in ``domains/`` first, then ``extra`` folders, then ``$DABS_RQ_DOMAINS`` (os.pathsep list).

    A folder named there that does not exist is an error (a typo would otherwise hide its YAMLs).
    """
    env = [p for p in os.environ.get(EXTRA_DIRS_ENV, "").split(os.pathsep) if p]
    folders = [DOMAINS_DIR]
    for source, paths in (("extra_domain_dirs", list(extra)), (f"${EXTRA_DIRS_ENV}", env)):
        for raw in paths:
            folder = Path(raw).expanduser()
            if not folder.is_dir():
                raise DomainConfigError(
                    f"{source}: folder {folder} does not exist (it should hold your dataset "
                    f"YAMLs); fix the path or remove it"
                )
            folders.append(folder)
    _refuse_shadowing(folders)
    return folders


def _refuse_shadowing(folders: Sequence[Path]) -> None:
    """Two YAMLs of one name in the search folders (e.g. a user's ``cifar10.yaml`` beside the built-in one)
    are refused: the later one would silently never be read, or the earlier one silently replaced."""
    seen: dict[str, Path] = {}
    for folder in dict.fromkeys(f.resolve() for f in folders):
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in seen:
                raise DomainConfigError(
                    f"dataset '{path.stem}' is defined twice: {seen[path.stem]} and {path}; "
                    f"rename one of them (and its 'name:' key)"
                )
            seen[path.stem] = path


def available(extra: Iterable[str | Path] = (), role: str | None = None) -> list[str]:
    """Names of every dataset YAML found (optionally only those of one role)."""
    names = {}
    for folder in search_dirs(extra):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            names.setdefault(path.stem, path)
    if role is None:
        return sorted(names)
    return sorted(n for n, p in names.items() if OmegaConf.load(p).get("role") == role)


def find(name: str, extra: Iterable[str | Path] = ()) -> Path:
    """The YAML of dataset ``name`` in the search folders."""
    for folder in search_dirs(extra):  # (which refuses a name defined twice)
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    raise DomainConfigError(f"unknown domain/dataset '{name}'; valid: {', '.join(available(extra))}")


def _validate_generic_reader(cfg: DictConfig, path: Path) -> None:
    """Generic readers (dabs_rq.data.generic) declare a schema: check it, resolve relative paths."""
    from dabs_rq.data.generic import InputsMismatchError, ReaderSpecError, validate_reader

    try:
        resolved = validate_reader(
            OmegaConf.to_container(cfg.reader, resolve=True), path, OmegaConf.to_container(cfg.inputs, resolve=True)
        )
    except (ReaderSpecError, InputsMismatchError) as err:
        raise DomainConfigError(f"{path}: {err}") from None
    if resolved is not None:
        cfg.reader = OmegaConf.create(resolved)


def _validate_examples(examples: Any, fail: Any) -> None:
    """``examples``: ``{train, test}`` counts (non-negative integers or null), optional ``source`` and
    ``approximate``."""
    if not isinstance(examples, DictConfig):
        fail("examples", "must be a mapping {train: N, test: M, source: '...', approximate: true|false}")
    for key in examples:
        if key not in EXAMPLES_KEYS:
            fail(f"examples.{key}", f"is not a known key; valid keys: {', '.join(EXAMPLES_KEYS)}")
    for key in ("train", "test"):
        if key not in examples:
            fail(f"examples.{key}", "is missing (give null where the count is unknown)")
        value = examples[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            fail(f"examples.{key}", f"must be a non-negative integer or null, got {value!r}")
    if not isinstance(examples.get("approximate", False), bool):
        fail("examples.approximate", f"must be true or false, got {examples.approximate!r}")


def validate(cfg: DictConfig, path: Path) -> DictConfig:
    def fail(key: str, expected: str) -> None:
        raise DomainConfigError(f"{path}: key '{key}' {expected}")

    for key in REQUIRED:
        if key not in cfg:
            fail(key, "is missing")
    for key in cfg:
        if key not in REQUIRED and key not in OPTIONAL:
            fail(key, f"is not a known key; valid keys: {', '.join(REQUIRED + OPTIONAL)}")
    if cfg.name != path.stem:
        fail("name", f"must equal the file name '{path.stem}', got '{cfg.name}'")
    if cfg.role not in ROLES:
        fail("role", f"must be one of {', '.join(ROLES)}, got '{cfg.role}'")
    if not isinstance(cfg.inputs, ListConfig) or not cfg.inputs:
        fail("inputs", "must be a non-empty list of embedder configs")
    for i, spec in enumerate(cfg.inputs):
        if not isinstance(spec, DictConfig) or "_target_" not in spec:
            fail(f"inputs[{i}]", "must be a mapping with a '_target_'")
    if not isinstance(cfg.reader, DictConfig) or "_target_" not in cfg.reader:
        fail("reader", "must be a mapping with a '_target_'")
    _validate_generic_reader(cfg, path)
    if not isinstance(cfg.batch_size, int) or cfg.batch_size <= 0:
        fail("batch_size", f"must be a positive integer, got {cfg.batch_size!r}")
    if "examples" in cfg:
        _validate_examples(cfg.examples, fail)
    if cfg.role == "pretrain":
        if not isinstance(cfg.get("transfer"), ListConfig) or not cfg.transfer:
            fail("transfer", "must list the transfer datasets of a pretrain domain")
    elif not isinstance(cfg.get("task"), DictConfig) or "_target_" not in cfg.task:
        fail("task", "must be a mapping with a '_target_' (e.g. dabs_rq.tasks.MulticlassTask)")
    return cfg


def load(
    name: str, extra: Iterable[str | Path] = (), role: str | None = None, overrides: Mapping[str, Any] | None = None
) -> DictConfig:
    """The validated config of dataset ``name`` (of ``role``, if given).

    ``overrides`` (from the run config's ``dataset_overrides.<name>``) are merged over the
    YAML before validation, e.g. ``{"reader": {"max_train": 1000}, "batch_size": 32}``; a
    mapping that names another ``_target_`` replaces the YAML's mapping instead of merging
    into it (its arguments belong to the new target).
    """
    path = find(name, extra)
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - yaml errors come in many types
        raise DomainConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(cfg, DictConfig):
        raise DomainConfigError(f"{path}: must be a YAML mapping")
    if overrides:
        overrides = OmegaConf.to_container(OmegaConf.create(dict(overrides)))
        for key, value in overrides.items():
            if (
                isinstance(value, dict)
                and "_target_" in value
                and value["_target_"] != cfg.get(key, {}).get("_target_")
            ):
                cfg[key] = value
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
        except Exception as err:  # noqa: BLE001 - omegaconf raises several error types
            raise DomainConfigError(
                f"{path}: dataset_overrides.{name} do not fit the YAML "
                f"({str(err).splitlines()[0]}); give a list as a whole list"
            ) from None
    validate(cfg, path)
    if role is not None and cfg.role != role:
        valid = ", ".join(available(extra, role))
        raise DomainConfigError(f"'{name}' is a {cfg.role} dataset, not a {role} one; valid: {valid}")
    return cfg


def transfer_datasets(
    domain: DictConfig, extra: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None
) -> list[DictConfig]:
    """The validated transfer datasets of a pretrain domain, checked to share its input spec."""
    out = []
    known = set(available(extra))
    for name in domain.transfer:
        if str(name) not in known:
            raise DomainConfigError(
                f"{find(str(domain.name), extra)}: 'transfer' lists '{name}', which is not a "
                f"dataset YAML; valid transfer datasets: {', '.join(available(extra, 'transfer'))}"
            )
        cfg = load(str(name), extra, role="transfer", overrides=(overrides or {}).get(str(name)))
        if OmegaConf.to_container(cfg.inputs) != OmegaConf.to_container(domain.inputs):
            raise DomainConfigError(
                f"transfer dataset '{name}' has inputs that differ from domain '{domain.name}': "
                "the pretrained encoder's embedders cannot read it"
            )
        out.append(cfg)
    return out
