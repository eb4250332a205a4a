"""The gauntlet subprocess: ``python -m reconciler.gauntlet.worker JOB.json``.

The only process that imports torch. It loads the verified weights safely, plays the
match and writes JSON lines to stdout: ``{"event": "start"}``, ``{"event": "progress"}``
per batch, and a final ``{"event": "result"}`` or ``{"event": "error"}``. Exit 0 when it
produced a result (pass or fail), 2 on an error. Only events reach stdout: everything else
written there (a game module's prints, torch's warnings) is sent to stderr, because the
daemon rejects any line that is not a valid event (reconciler.sandbox.channel).

Games: ``connect4`` is built in. A game module from the desired-state folder defines
``create_game(device)`` returning an object with the same methods as
:class:`reconciler.gauntlet.games.connect4.Connect4` (initial, legal, play, random_moves,
heuristic_moves, network, policy_moves; the game interface of docs/gauntlets.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from reconciler.gauntlet.games.connect4 import Connect4
from reconciler.gauntlet.match import OpponentResult, fusing_pays_off, run_opponent
from reconciler.gauntlet.sprt import SprtSettings
from reconciler.gauntlet.weights import load_state_dict

_events = sys.stdout


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), file=_events, flush=True)


def _events_only_on_stdout() -> None:
    """Events keep the original stdout; fd 1 and sys.stdout now lead to stderr."""
    global _events
    _events = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def pick_device(wanted: str) -> torch.device:
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda was asked for and no GPU is available")
        return torch.device("cuda")
    return torch.device("cpu")


def load_game(name: str, module_path: str | None, device: torch.device) -> Any:
    if module_path is None:
        return Connect4(device)
    spec = importlib.util.spec_from_file_location("reconciler_user_game", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_game(device)


def load_policy(game: Any, path: str, device: torch.device) -> torch.nn.Module:
    network = game.network()
    network.load_state_dict(load_state_dict(Path(path), str(device)))
    return network.to(device).eval()  # type: ignore[no-any-return]


def run(job: dict[str, Any]) -> dict[str, Any]:
    spec = job["spec"]
    match = spec["match"]
    device = pick_device(spec.get("device", "auto"))
    started = time.monotonic()
    emit("start", device=str(device))
    game = load_game(match["game"], job.get("gameModule"), device)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(match.get("seed", 0)))
    candidate_net = load_policy(game, job["candidate"], device)

    def candidate(boards: Any, noise: torch.Tensor) -> torch.Tensor:
        return game.policy_moves(candidate_net, boards)  # type: ignore[no-any-return]

    previous_net = load_policy(game, job["previous"], device) if job.get("previous") else None
    players = {
        "random": game.random_moves,
        "heuristic": game.heuristic_moves,
        "previous": (lambda boards, noise: game.policy_moves(previous_net, boards)),
    }
    sprt = match.get("sprt", {})
    batch_pairs = int(match.get("batchSize", 256))
    games = sum(o.get("games", match.get("games", 400)) for o in match["opponents"])
    fused = hasattr(game, "fuse") and fusing_pays_off(device.type, batch_pairs, games) \
        and bool(game.fuse())
    results: list[dict[str, Any]] = []
    for opponent in match["opponents"]:
        name = opponent["name"]
        if name == "previous" and previous_net is None:
            results.append({"opponent": name, "skipped": "no canonical model yet (first "
                            "promotion)", "passed": True})
            continue
        settings = SprtSettings(min_score=opponent["minScore"],
                                margin=opponent.get("margin", sprt.get("margin", 0.05)),
                                alpha=sprt.get("alpha", 0.05), beta=sprt.get("beta", 0.05),
                                max_games=opponent.get("games", match.get("games", 400)))

        def report(outcome: OpponentResult) -> None:
            emit("progress", **outcome.to_json())

        outcome = run_opponent(game, candidate, name, players[name], settings,
                               batch_pairs, generator, report)
        results.append(outcome.to_json())
        if not results[-1]["passed"]:
            break  # one failed bar decides: no GPU time on the rest
    seconds = time.monotonic() - started
    return {"passed": all(r["passed"] for r in results) and len(results) == len(
        match["opponents"]), "opponents": results, "device": str(device),
        "seconds": round(seconds, 3), "fusedRules": fused,
        "gpuSeconds": round(seconds, 3) if device.type == "cuda" else 0.0}


def fetch_artifacts(job: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """In a Job, models come as {uri, sha256, format}: fetched and verified before any byte
    is loaded; a game module comes as source."""
    from reconciler.artifacts.fetch import fetch
    from reconciler.digests import DigestCache
    from reconciler.store import Store

    store = Store(scratch / "store", DigestCache())

    def no_repository(path: str) -> bytes:
        raise FileNotFoundError(f"{path}: a gauntlet Job has no repository to read from")

    for role in ("candidate", "previous"):
        source = job.get(role)
        if isinstance(source, dict):
            emit("fetch", role=role, uri=source["uri"])
            job[role] = str(fetch(source["uri"], source["sha256"], source.get("format", "file"),
                                  store, no_repository))
    if "gameSource" in job:
        module = scratch / "game.py"
        module.write_text(job.pop("gameSource"))
        job["gameModule"] = str(module)
    return job


def main() -> int:
    """``worker JOB.json``, or ``worker -`` with the request in $RECONCILER_GAUNTLET_JOB
    (a gauntlet Job's container)."""
    _events_only_on_stdout()
    if sys.argv[1] == "-":
        job = json.loads(os.environ["RECONCILER_GAUNTLET_JOB"])
    else:
        job = json.loads(Path(sys.argv[1]).read_text())
    try:
        with tempfile.TemporaryDirectory(prefix="reconciler-gauntlet-job-") as scratch:
            result = run(fetch_artifacts(job, Path(scratch)))
    except MemoryError:
        emit("error", error="out of memory")
        return 2
    except Exception as error:
        kind = "out of memory" if "out of memory" in str(error).lower() else "error"
        emit("error", error=f"{kind}: {type(error).__name__}: {error}")
        return 2
    emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
