"""The ``compile`` setting of the encoder and the RQ operator: off, on, a ``torch.compile`` mode, or ``auto``.

``auto`` is resolved where the work runs, from the device of the tensors at hand: on for CUDA (each
component says with which mode), off on a CPU, so that one config runs compiled on a GPU and
eager on a laptop, and a CPU run never pays ``torch.compile``'s start-up (seconds to minutes).
"""

from __future__ import annotations

import torch

from dabs_rq.errors import UserError

#: The string settings besides ``"auto"``: ``torch.compile``'s modes (``"default"`` is the same as ``True``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile(setting: object) -> bool | str:
    """``setting`` itself if it is a valid ``compile`` setting: a bool, ``"auto"`` or a ``torch.compile`` mode."""
    if isinstance(setting, bool) or (isinstance(setting, str) and setting in ("auto", *COMPILE_MODES)):
        return setting
    raise UserError(f"compile must be true, false, auto or one of {', '.join(COMPILE_MODES)}; got {setting!r}")


def resolve_compile(setting: bool | str, device: torch.device | str, on_cuda: bool | str = True) -> bool | str:
    """What to run with on ``device``: ``"auto"`` -> ``on_cuda`` on a CUDA device, False elsewhere; any other
    setting (False, True, a mode) as it is."""
    if setting == "auto":
        return on_cuda if torch.device(device).type == "cuda" else False
    return setting


def compile_mode(resolved: bool | str) -> str | None:
    """The ``mode`` argument of ``torch.compile`` for a resolved, true setting (True -> None: the default)."""
    return None if resolved is True or resolved == "default" else str(resolved)
