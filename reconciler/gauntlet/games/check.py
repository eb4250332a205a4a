"""Does a game sync with the host inside a ply? ``python -m reconciler.gauntlet.games.check
games/mygame.py`` tells a game's author, on any machine.

Why: a ply that reads a value back to the host (``.item()``, ``bool(tensor)``,
``nonzero``, a boolean-mask index) cannot be captured as a CUDA graph, and on a GPU it
stalls every ply; the play loop then falls back to eager plies, several times slower. The
check plays plies of the real loop (match.Ply) with the game's own players and reports every
call that needs a tensor's value on the host, with the line of the game's code that made
it. It watches calls through a ``TorchFunctionMode``, so it works on the CPU, where no sync
costs anything and CUDA's own sync detection sees nothing; on a GPU it also plays the same
plies under ``torch.cuda.set_sync_debug_mode("error")``, which catches syncs inside torch.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from reconciler.gauntlet.match import Ply

# Calls that hand a tensor's value (or its data-dependent size) to the host.
READS_BACK = frozenset({
    "item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__",
    "__complex__", "__array__", "__format__", "__repr__", "__str__", "nonzero", "argwhere",
    "masked_select", "unique", "unique_consecutive", "bincount", "equal", "allclose",
})
_INDEXING = frozenset({"__getitem__", "__setitem__", "index_put", "index_put_"})
_OURS = (str(Path(torch.__file__).parent), __file__)


def _is_bool_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool and value.dim() > 0
    if isinstance(value, tuple | list):
        return any(_is_bool_tensor(v) for v in value)
    return False


def _syncs(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if name in READS_BACK:
        return True
    if name in _INDEXING:  # a boolean mask as an index: the result's size is data
        return len(args) > 1 and _is_bool_tensor(args[1])
    if name == "where":  # torch.where(condition) is nonzero
        return len(args) + len(kwargs) == 1
    if name == "repeat_interleave":  # the output size is data unless given
        return "output_size" not in kwargs
    if name == "to":  # to the host
        target = [a for a in (*args[1:], kwargs.get("device")) if a is not None]
        return any(str(t).startswith("cpu") for t in target if isinstance(t, str | torch.device))
    return False


def _caller() -> str:
    """The innermost frame outside torch and this module: the line that asked."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(_OURS):
            return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"
    return "?"


class _Spy(TorchFunctionMode):
    """Records every torch call that reads a device value back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func: Callable[..., Any], types: Any,
                           args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if _syncs(name, args, kwargs):
            self.found.append(f"{name} at {_caller()}")
        return func(*args, **kwargs)


def host_syncs(game: Any, network: torch.nn.Module | None = None,
               batch: int = 16) -> list[str]:
    """Each host sync found in two plies (one of each parity) against every built-in
    opponent, the policy played by ``network`` (the game's own, untrained, by default).
    An empty list: the game can be captured."""
    device = game.initial(1).mover.device
    net = (network or game.network()).to(device).eval()

    def policy(boards: Any, noise: torch.Tensor) -> torch.Tensor:
        return game.policy_moves(net, boards)  # type: ignore[no-any-return]

    opponents = {"random": game.random_moves, "heuristic": game.heuristic_moves,
                 "previous": policy}
    seed = torch.zeros(1, dtype=torch.long, device=device)
    found: list[str] = []
    with torch.no_grad():
        for name, opponent in opponents.items():
            ply = Ply(game, policy, opponent, batch, seed)
            spy = _Spy()
            with spy:
                for parity in (0, 1):
                    ply.step(parity)
            found += [f"against {name}: {f}" for f in dict.fromkeys(spy.found)]
            if device.type == "cuda":
                found += _cuda_syncs(ply, name)
    return found


def _cuda_syncs(ply: Ply, name: str) -> list[str]:
    """Syncs CUDA itself sees (inside torch's own functions too)."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ply.step(0)
    except RuntimeError as error:
        return [f"against {name}: CUDA reports a sync: {str(error).splitlines()[0]}"]
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return []


def main(argv: list[str] | None = None) -> int:
    from reconciler.gauntlet.worker import load_game, pick_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("module", help="a game module defining create_game(device)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    options = parser.parse_args(argv)
    device = pick_device(options.device)
    found = host_syncs(load_game("custom", options.module, device))
    for line in found:
        print(line)
    print("syncs with the host: plies run eagerly, not as a CUDA graph" if found else
          "no host syncs: plies can be captured as a CUDA graph")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
