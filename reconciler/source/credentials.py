"""How the daemon authenticates to its repository: files named in ``reconciler.yaml``.

Only file names are kept here; the secrets are read at each fetch (a rotated token works
without a restart) and never leave :mod:`reconciler.source.git`. Nothing in the repository
and nothing in a URL we print carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import StalledError
from reconciler.vocabulary import Reason


class CredentialsUnreadable(StalledError):
    """A credentials file named in the settings cannot be read: a person must fix it."""

    reason = Reason.AUTHENTICATION_FAILED


@dataclass(frozen=True, slots=True)
class GitCredentials:
    """``username`` with ``password_file`` for HTTP(S); ``ssh_key`` (and its passphrase)
    for SSH, whose host must be in ``known_hosts`` or match the pinned ``host_key``."""

    username: str | None = None
    password_file: Path | None = None
    ssh_key: Path | None = None
    ssh_key_passphrase_file: Path | None = None
    known_hosts: Path | None = None
    host_key: str | None = None

    def password(self) -> str:
        return _read_secret(self.password_file)

    def passphrase(self) -> str:
        return _read_secret(self.ssh_key_passphrase_file) \
            if self.ssh_key_passphrase_file is not None else ""

    def known_hosts_lines(self, host: str, port: int | None) -> str:
        """known_hosts content for libgit2: the operator's file, plus the pinned key as a
        line for this host (``[host]:port`` when the port is not 22, as OpenSSH writes it)."""
        lines = ""
        if self.known_hosts is not None:
            try:
                lines = self.known_hosts.read_text()
            except OSError as error:
                raise CredentialsUnreadable(f"cannot read knownHosts {self.known_hosts}: "
                                            f"{error.strerror}") from None
            if lines and not lines.endswith("\n"):
                lines += "\n"
        if self.host_key is not None:
            name = host if port in (None, 22) else f"[{host}]:{port}"
            lines += f"{name} {self.host_key}\n"
        return lines


def _read_secret(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise CredentialsUnreadable(f"cannot read credentials file {path}: "
                                    f"{error.strerror}") from None
    if not secret:
        raise CredentialsUnreadable(f"credentials file {path} is empty")
    return secret
