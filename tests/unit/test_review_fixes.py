"""Faults a review found: each reproduced here, so it stays fixed."""

from __future__ import annotations

import random
import time
from pathlib import Path

from reconciler.daemon.backoff import Backoff
from reconciler.journal import Journal
from reconciler.vocabulary import JournalAction, Phase


def test_backoff_survives_days_of_failures_within_its_cap() -> None:
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(5000)]  # ~1,024 ended the daemon
    assert max(delays) <= 300.0 and min(delays[20:]) >= 150.0


def test_finishing_an_interrupted_flip_is_not_a_second_promotion(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    key = ("edge", "Model", "policy")
    for finish in (False, True):  # the promotion, then its restart finished after a crash
        intent = journal.intent(JournalAction.FLIP, key, pass_id=1, revision="r",
                                detail={"drift": False, "finish": finish})
        journal.outcome(intent, Phase.DONE)
    assert len(journal.history(time.time()).promotions) == 1
