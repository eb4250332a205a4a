"""The forges that host the repository (GitHub, GitLab, Gitea/Forgejo), through their REST
APIs: pull requests for proposed changes and commit statuses on revisions.

An adapter: it knows HTTP and the three APIs, nothing of passes or the journal. The token
is read from its file at each request and never appears in a message, a log or an error.
"""

from reconciler.forge.clients import (
    Forge,
    ForgeRefused,
    ForgeUnavailable,
    PullRequest,
    StatusState,
    forge_client,
)

__all__ = ["Forge", "ForgeRefused", "ForgeUnavailable", "PullRequest", "StatusState",
           "forge_client"]
