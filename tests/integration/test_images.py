"""The container images of deploy/images/, built by scripts/build-images.sh with podman and
run here: the daemon answers `--version` and validates the example it carries, with the
bubblewrap sandbox working inside (non-root, default seccomp, a read-only root); the
gauntlet worker plays a match from the request in its environment and refuses a model
whose digest does not match; both are non-root and the daemon's has no torch.

Marker `images`, deselected by default (the first build takes minutes; later ones reuse
podman's layer cache): `scripts/test.sh -m images`. Needs root, podman and mmdebstrap."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from reconciler import __version__
from tests.conftest import EXAMPLE, REPO_ROOT

pytestmark = pytest.mark.images

DAEMON = f"localhost/reconciler:{__version__}"
GAUNTLET = f"localhost/reconciler-gauntlet:{__version__}"
BASE = "localhost/reconciler-base:bookworm"
PODMAN = ["podman", "--storage-driver=vfs"]
# Where the daemon image carries the example desired state.
EMBEDDED = "/usr/share/reconciler/desired-state"


@cache
def _environment() -> dict[str, str]:
    """podman's environment: deploy/images/containers-nested.conf on a host that is itself
    a container, as scripts/build-images.sh decides."""
    plain = subprocess.run([*PODMAN, "run", "--rm", "--network=none", BASE, "true"],
                           capture_output=True, timeout=300, check=False)
    if plain.returncode == 0:
        return dict(os.environ)
    return {**os.environ,
            "CONTAINERS_CONF": str(REPO_ROOT / "deploy" / "images" / "containers-nested.conf")}


def _run(image: str, *args: str, entrypoint: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A container as a pod runs it: no network, a read-only root, /tmp writable."""
    options = ["--rm", "--network=none", "--read-only", "--tmpfs", "/tmp"]
    options += [f"--entrypoint={entrypoint}"] if entrypoint else []
    options += [f"--env={key}={value}" for key, value in (env or {}).items()]
    return subprocess.run([*PODMAN, "run", *options, image, *args], capture_output=True,
                          text=True, timeout=600, check=False, env=_environment())


def _inspect(image: str) -> dict[str, object]:
    done = subprocess.run([*PODMAN, "image", "inspect", image], capture_output=True,
                          text=True, timeout=120, check=True, env=_environment())
    [found] = json.loads(done.stdout)
    return dict(found)


@pytest.fixture(scope="module", autouse=True)
def _images() -> None:
    """Builds (or, with the layer cache, brings up to date) both images."""
    done = subprocess.run([str(REPO_ROOT / "scripts" / "build-images.sh")],
                          capture_output=True, text=True, timeout=3600, check=False,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    sizes = {image: int(str(_inspect(image)["Size"])) for image in (BASE, DAEMON, GAUNTLET)}
    print("image sizes (MB):", {image: round(size / 1e6) for image, size in sizes.items()})


def test_the_daemon_image_answers_and_validates_its_example() -> None:
    version = _run(DAEMON, "--version")
    assert version.stdout.strip() == f"reconciler {__version__}", version.stderr
    validated = _run(DAEMON, "validate", EMBEDDED)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "2 strategies" in validated.stdout
    config = _inspect(DAEMON)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["reconciler"]
    assert config["Cmd"] == ["run", "--config", "/etc/reconciler/reconciler.yaml"]


def _code_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_the_images_carry_this_checkout_not_a_stale_layer() -> None:
    """The wheels are bind-mounted, out of sight of podman's layer cache: a changed
    reconciler of the same version must still reach the images."""
    script = ("import hashlib, pathlib, reconciler\n"
              "package = pathlib.Path(reconciler.__file__).parent\n"
              "digest = hashlib.sha256()\n"
              "for path in sorted(package.rglob('*.py')):\n"
              "    digest.update(path.relative_to(package).as_posix().encode() + b'\\0'"
              " + path.read_bytes())\n"
              "print(digest.hexdigest())\n")
    expected = _code_digest(REPO_ROOT / "reconciler")
    for image in (DAEMON, GAUNTLET):
        done = _run(image, "-c", script, entrypoint="python")
        assert done.stdout.strip() == expected, (image, done.stderr[-2000:])


def test_the_sandbox_works_inside_the_daemon_image() -> None:
    """bubblewrap's namespaces as the image's non-root user under podman's default seccomp
    profile; the repository's code would otherwise not run at all (validate exits 3)."""
    script = ("import os, reconciler.kube.api\n"
              "from reconciler.sandbox.runner import Sandbox\n"
              "assert os.getuid() == 10001, os.getuid()\n"
              "print(Sandbox().problem())\n"
              "try:\n    import torch\nexcept ImportError:\n    print('no torch')\n")
    done = _run(DAEMON, "-c", script, entrypoint="python")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["None", "no torch"]


def test_the_gauntlet_image_plays_and_refuses_a_tampered_model() -> None:
    model = EXAMPLE / "models" / "connect4-policy-v2.pt"
    request = {"candidate": {"uri": f"file://{EMBEDDED}/models/{model.name}",
                             "format": "torch",
                             "sha256": hashlib.sha256(model.read_bytes()).hexdigest()},
               "previous": None,
               "spec": {"device": "cpu", "match": {
                   "game": "connect4", "games": 16, "batchSize": 16, "seed": 1,
                   "opponents": [{"name": "random", "minScore": 0.5}]}}}
    played = _run(GAUNTLET, env={"RECONCILER_GAUNTLET_JOB": json.dumps(request)})
    assert played.returncode == 0, played.stderr[-3000:]
    events = [json.loads(line) for line in played.stdout.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[0] == "fetch" and "start" in kinds, "verified by digest, then played"
    assert kinds[-1] == "result"
    assert events[-1]["opponents"][0]["opponent"] == "random"
    request["candidate"]["sha256"] = "0" * 64  # type: ignore[index]
    tampered = _run(GAUNTLET, env={"RECONCILER_GAUNTLET_JOB": json.dumps(request)})
    assert tampered.returncode == 2
    assert json.loads(tampered.stdout.splitlines()[-1])["event"] == "error"
    config = _inspect(GAUNTLET)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "65534:65534", "the uid the gauntlet Job's pod runs as"
    assert config["Entrypoint"] == ["python", "-m", "reconciler.gauntlet.worker"]


def test_the_build_context_left_no_wheel_in_the_images() -> None:
    """The wheels are a bind mount during the build, not a layer."""
    done = _run(GAUNTLET, "-c", "import os; print(os.path.exists('/wheels'))",
                entrypoint="python")
    assert done.stdout.strip() == "False", done.stderr
    assert Path(REPO_ROOT / "build" / "images" / "context" / "wheels" / "common").is_dir()
