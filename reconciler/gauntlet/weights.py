"""Loading model weights without running code from them.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only: a pickle
that carries code (a ``__reduce__`` calling ``os.system``) is refused, not executed. It is
called only on artifacts whose digest was verified first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class UnsafeWeights(Exception):
    """The file is not plain weights (it may carry code); it was not executed."""


def load_state_dict(path: Path, device: str = "cpu") -> dict[str, Any]:
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError and friends
        raise UnsafeWeights(f"{path} is not plain weights and was not loaded: "
                            f"{type(error).__name__}: {str(error).splitlines()[0]}") from None
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise UnsafeWeights(f"{path} holds {type(loaded).__name__}, not a state dict")
    return loaded
