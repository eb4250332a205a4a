"""Commit signature policy: the tip must be signed by an allowed SSH or OpenPGP key.

Verification runs the real tools (``ssh-keygen -Y``, ``gpg``) in a throwaway home so the
operator's own keyrings and agents never influence the answer.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler.errors import StalledError

_SSH_ARMOR = b"-----BEGIN SSH SIGNATURE-----"
_PGP_ARMOR = b"-----BEGIN PGP SIGNATURE-----"
_TIMEOUT_SECONDS = 20


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """``ssh`` checks an allowed-signers file; ``gpg`` a dedicated keyring (and optionally
    a list of primary-key fingerprints)."""

    kind: Literal["ssh", "gpg"]
    allowed_signers: Path | None = None
    keyring: Path | None = None
    fingerprints: tuple[str, ...] = ()


class SignatureRefused(StalledError):
    reason = "SignatureRefused"


def verify_signature(policy: SignaturePolicy, commit_id: str, signature: bytes | None,
                     payload: bytes) -> str:
    """Who signed ``commit_id`` (``ssh:<principal>`` or ``gpg:<fingerprint>``), or refuse."""
    if not signature:
        raise SignatureRefused(f"commit {commit_id} is not signed; the signature policy "
                               f"requires a {policy.kind} signature by an allowed key")
    ssh = policy.kind == "ssh"
    armor, wanted, other = ((_SSH_ARMOR, "SSH", "OpenPGP") if ssh
                            else (_PGP_ARMOR, "OpenPGP", "SSH"))
    if not signature.lstrip().startswith(armor):
        raise SignatureRefused(f"commit {commit_id} carries an {other} signature; the policy "
                               f"requires an {wanted} signature")
    keys = policy.allowed_signers if ssh else policy.keyring
    if keys is None or not keys.is_file():
        what = "allowed-signers file" if ssh else "gpg keyring"
        raise SignatureRefused(f"{what} {keys} is missing")
    with tempfile.TemporaryDirectory(prefix="reconciler-sig-") as scratch_name:
        scratch = Path(scratch_name)
        signature_file = scratch / "commit.sig"
        signature_file.write_bytes(signature)
        verify = _verify_ssh if ssh else _verify_gpg
        return verify(policy, keys, commit_id, signature_file, payload, scratch)


def _run(argv: list[str], payload: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=payload, capture_output=True,
                              timeout=_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SignatureRefused(f"cannot run {argv[0]} to verify the signature: {error}") from None


def _verify_ssh(policy: SignaturePolicy, keys: Path, commit_id: str, signature_file: Path,
                payload: bytes, scratch: Path) -> str:
    allowed = str(keys)
    found = _run(["ssh-keygen", "-Y", "find-principals", "-s", str(signature_file), "-f", allowed])
    principals = found.stdout.decode(errors="replace").split()
    if found.returncode != 0 or not principals:
        raise SignatureRefused(f"commit {commit_id} is signed by a key that is not in {keys}")
    checked = _run(["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", principals[0],
                    "-n", "git", "-s", str(signature_file)], payload)
    if checked.returncode != 0:
        detail = checked.stderr.decode(errors="replace").strip() or "verification failed"
        raise SignatureRefused(f"commit {commit_id} has an invalid SSH signature: {detail}")
    return f"ssh:{principals[0]}"


def _verify_gpg(policy: SignaturePolicy, keys: Path, commit_id: str, signature_file: Path,
                payload: bytes, scratch: Path) -> str:
    home = scratch / "gnupg"
    home.mkdir(mode=0o700)
    payload_file = scratch / "commit.payload"
    payload_file.write_bytes(payload)
    checked = _run(["gpg", "--batch", "--homedir", str(home), "--no-default-keyring",
                    "--keyring", str(keys.resolve()), "--trust-model", "always",
                    "--lock-never", "--status-fd", "1", "--verify", str(signature_file),
                    str(payload_file)])
    status = checked.stdout.decode(errors="replace").splitlines()
    valid = [line.split() for line in status if line.startswith("[GNUPG:] VALIDSIG ")]
    if checked.returncode != 0 or not valid:
        problems = [line.split()[1] for line in status
                    if line.split()[1:2] and line.split()[1] in
                    ("BADSIG", "NO_PUBKEY", "EXPKEYSIG", "REVKEYSIG", "ERRSIG", "EXPSIG")]
        detail = ", ".join(problems) or "verification failed"
        raise SignatureRefused(f"commit {commit_id} has no valid OpenPGP signature by a key in "
                               f"{keys} ({detail})")
    primary = valid[0][-1]
    if policy.fingerprints and primary not in policy.fingerprints:
        raise SignatureRefused(f"commit {commit_id} is signed by {primary}, which is not among "
                               "the allowed fingerprints")
    return f"gpg:{primary}"
