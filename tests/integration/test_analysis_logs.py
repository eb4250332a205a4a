"""Log checks on a host: a service that logs errors after a change is rolled back, a quiet
one is applied; a path that leads out of the allowed folders is refused before anything is
changed, and a hostile pattern cannot hang the daemon."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.vocabulary import ActionResult, Reason
from tests.fleet import HEALTHY, Fleet

# The restarted service writes one line to its log: an error when the delivered strategy is
# broken (it says ERRORS), else a start line. LOG is where; the test chooses.
RESTART = ("import os, pathlib; log = pathlib.Path(os.environ.get('LOG', 'logs/app.log')); "
           "log.parent.mkdir(exist_ok=True); bad = 'ERRORS' in open('app/app.py').read(); "
           "open(log, 'a').write(('ERROR crashed' if bad else 'INFO started') + chr(10))")


def logged(fleet: Fleet, source: str, check: str, restart: str = RESTART) -> None:
    fleet.strategy(source, restart=f'[python3, -c, "{restart}"]', extra=f"""  analysis:
    - name: errors
      interval: 200ms
      count: 3
      log: {check}
""")
    fleet.commit("strategy with a log check")


def app(fleet: Fleet) -> dict[str, object]:
    journal = fleet.journal()
    try:
        row = journal.object(("edge", "Strategy", "app"))
    finally:
        journal.close()
    assert row is not None
    return row


def converged(tmp_path: Path) -> Fleet:
    fleet = Fleet(tmp_path)
    assert fleet.results(fleet.apply())["Strategy/app"] == ActionResult.APPLIED
    return fleet


def test_errors_in_the_log_after_the_change_roll_it_back(tmp_path: Path) -> None:
    fleet = converged(tmp_path)
    logged(fleet, HEALTHY + "ERRORS = 1\n", "{path: logs/app.log, pattern: '^ERROR', maxCount: 0}")
    assert fleet.results(fleet.apply())["Strategy/app"] == ActionResult.ROLLED_BACK
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY
    message = str(app(fleet)["message"])
    assert "check errors (log logs/app.log =~ /^ERROR/)" in message
    assert "1 matching lines > maxCount 0" in message


def test_a_quiet_log_is_applied_and_lines_from_before_the_change_do_not_count(
        tmp_path: Path) -> None:
    fleet = converged(tmp_path)
    (fleet.root / "logs").mkdir()
    (fleet.root / "logs" / "app.log").write_text("ERROR from last week\n" * 5)
    logged(fleet, HEALTHY + "VERSION = 2\n",
           "{path: logs/app.log, pattern: '^ERROR', maxCount: 0}")
    assert fleet.results(fleet.apply())["Strategy/app"] == ActionResult.APPLIED
    assert "VERSION = 2" in (fleet.root / "app" / "app.py").read_text()
    assert (fleet.root / "logs" / "app.log").read_text().endswith("INFO started\n")


def test_a_log_outside_the_allowed_folders_is_refused_before_any_change(
        tmp_path: Path) -> None:
    fleet = converged(tmp_path)
    restarts = (fleet.root / "restarts").read_text()
    logged(fleet, HEALTHY + "VERSION = 3\n", "{path: /etc/hostname, pattern: x, maxCount: 0}")
    assert fleet.results(fleet.apply())["Strategy/app"] == ActionResult.FAILED
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY
    assert (fleet.root / "restarts").read_text() == restarts
    row = app(fleet)
    assert row["reason"] == Reason.ANALYSIS_UNAVAILABLE
    assert "/etc/hostname is not beneath the target's root" in str(row["message"])
    assert "nothing was changed" in str(row["message"])


def test_a_log_that_is_a_link_out_of_the_root_is_never_read(tmp_path: Path) -> None:
    fleet = converged(tmp_path)
    (fleet.root / "logs").mkdir()
    os.symlink("/etc/passwd", fleet.root / "logs" / "app.log")
    logged(fleet, HEALTHY + "VERSION = 4\n", "{path: logs/app.log, pattern: root, maxCount: 0}")
    assert fleet.results(fleet.apply())["Strategy/app"] == ActionResult.FAILED
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY
    assert "is a symlink or lies behind one: refused" in str(app(fleet)["message"])


def test_a_log_beneath_an_allowed_log_root_is_read(tmp_path: Path) -> None:
    fleet = converged(tmp_path)
    logs = tmp_path / "var-log"
    logs.mkdir()
    fleet.settings_file.write_text(fleet.settings_file.read_text()
                                   + f"analysis:\n  logRoots: ['{logs}']\n")
    restart = RESTART.replace("os.environ.get('LOG', 'logs/app.log')", f"'{logs}/app.log'")
    logged(fleet, HEALTHY + "ERRORS = 2\n",
           f"{{path: '{logs}/app.log', pattern: ERROR, maxCount: 0}}", restart)
    assert fleet.results(fleet.apply())["Strategy/app"] == ActionResult.ROLLED_BACK
    assert (logs / "app.log").read_text().startswith("ERROR crashed")


def test_a_catastrophic_backtracking_pattern_runs_in_linear_time(tmp_path: Path) -> None:
    """``(a+)+$`` on a long line of a's ending in 'b' takes Python's re longer than the age of
    the universe; RE2 answers at once, so the analysis completes."""
    fleet = converged(tmp_path)
    (fleet.root / "logs").mkdir()
    restart = RESTART.replace("('ERROR crashed' if bad else 'INFO started')", "'a' * 4000 + 'b'")
    logged(fleet, HEALTHY + "VERSION = 5\n", "{path: logs/app.log, pattern: '(a+)+$', "
           "maxCount: 0}", restart)
    assert fleet.results(fleet.apply())["Strategy/app"] == ActionResult.APPLIED
