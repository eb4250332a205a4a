"""URLs lose their userinfo, query and fragment before they are shown (promise 6)."""

from __future__ import annotations

import pytest

from reconciler.errors import StalledError, classify
from reconciler.redaction import redact, redact_text


@pytest.mark.parametrize(("url", "shown"), [
    ("https://x-access-token:ghp_s3cret@github.com/org/fleet.git",
     "https://github.com/org/fleet.git"),
    ("https://oauth2:glpat-s3cret@gitlab.example.com:8443/org/fleet.git",
     "https://gitlab.example.com:8443/org/fleet.git"),
    ("https://models.example.com/p.pt?X-Amz-Signature=abc&X-Amz-Credential=k#frag",
     "https://models.example.com/p.pt"),
    ("ssh://git@example.com:2222/org/fleet.git", "ssh://example.com:2222/org/fleet.git"),
    ("git@github.com:org/fleet.git", "git@github.com:org/fleet.git"),  # no secret in it
    ("/srv/git/fleet", "/srv/git/fleet"),
    ("https://user:p@ss@host/x", "https://host/x"),  # an '@' inside the password
    ("http://u:tok@[::1/x?t=tok", "http://<redacted>"),  # unparsable: nothing shown
])
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_urls_inside_text_are_redacted() -> None:
    text = "cannot fetch 'https://u:tok@h/r.git?k=tok': 401; see https://docs.example.com/a"
    assert redact_text(text) == "cannot fetch 'https://h/r.git': 401; see " \
                                "https://docs.example.com/a"


def test_the_classifier_redacts_every_message() -> None:
    outcome = classify(StalledError("GET https://u:tok@h/m.pt?sig=tok answered 403"))
    assert "tok" not in outcome.message and "https://h/m.pt" in outcome.message
