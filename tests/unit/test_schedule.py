"""The daemon's scheduling arithmetic, table-tested."""

from __future__ import annotations

import pytest

from reconciler.daemon.schedule import next_delay
from reconciler.vocabulary import PassResult


@pytest.mark.parametrize(("result", "poll", "retry_in", "backoff", "expected"), [
    (PassResult.CONVERGED, None, None, 0.0, 600.0),  # local repo: resync only
    (PassResult.CONVERGED, 60.0, None, 0.0, 60.0),  # remote: poll
    (PassResult.CONVERGED, 900.0, None, 0.0, 600.0),  # poll slower than resync: resync
    (PassResult.WAITING, None, 30.0, 0.0, 30.5),  # just after the soak ends
    (PassResult.WAITING, None, 7200.0, 0.0, 600.0),  # a far window: resync first
    (PassResult.CHANGED, 60.0, 30.0, 0.0, 0.0),  # downstream may be released now
    (PassResult.TRANSIENT, 60.0, 5.0, 12.0, 12.0),  # the backoff decides
    (PassResult.FAILED, None, None, 0.0, 600.0),
    (PassResult.INVALID, 60.0, None, 0.0, 60.0),  # a new commit arrives by poll
    (PassResult.STALLED, None, 0.2, 0.0, 0.7),
])
def test_next_delay(result: PassResult, poll: float | None, retry_in: float | None,
                    backoff: float, expected: float) -> None:
    assert next_delay(result, resync=600.0, poll=poll, retry_in=retry_in,
                      backoff=backoff) == pytest.approx(expected)
