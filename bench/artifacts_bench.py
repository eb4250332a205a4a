"""Artifact hashing, against hashlib in the same run.

- throughput of our streaming hash (with progress) on one file vs ``hashlib.file_digest``
  (target: at least 0.9x);
- re-verifying an unchanged file of --size-gb (default 2) through the digest cache vs
  hashing it;
- a bundle of 8 files hashed in parallel vs one thread (2 cores here).

Run: ``.venv/bin/python bench/artifacts_bench.py [--size-gb 2]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from report import finish

from reconciler.digests import DigestCache, sha256_stream, verify_bundle, write_manifest


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def write_random(path: Path, size: int) -> None:
    block = os.urandom(1 << 24)
    with open(path, "wb") as stream:
        for _ in range(size // len(block)):
            stream.write(block)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=2.0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="reconciler-hash-"))
    try:
        big = scratch / "model.pt"
        write_random(big, int(args.size_gb * (1 << 30)))
        old = time.time() - 60
        os.utime(big, (old, old))
        size = big.stat().st_size

        def baseline() -> None:
            with open(big, "rb") as stream:
                hashlib.file_digest(stream, "sha256")

        baseline()  # page cache warm for both
        ours = min(timed(lambda: sha256_stream(big, lambda d, t: None, size)) for _ in range(2))
        theirs = min(timed(baseline) for _ in range(2))
        cache = DigestCache()
        first = timed(lambda: cache.sha256(big))
        again = min(timed(lambda: cache.sha256(big)) for _ in range(5))

        bundle = scratch / "bundle"
        bundle.mkdir()
        for index in range(8):
            write_random(bundle / f"shard-{index}.bin", 1 << 27)
        digest = write_manifest(bundle)
        serial = min(timed(lambda: verify_bundle(bundle, digest, workers=1)) for _ in range(2))
        parallel = min(timed(lambda: verify_bundle(bundle, digest)) for _ in range(2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = {
        "file_gb": round(size / 2**30, 2),
        "ours_mb_per_s": round(size / ours / 2**20),
        "hashlib_mb_per_s": round(size / theirs / 2**20),
        "throughput_vs_hashlib": round(theirs / ours, 3),
        "first_verify_s": round(first, 2),
        "cached_reverify_ms": round(again * 1000, 3),
        "cached_speedup": round(first / again),
        "bundle_1_thread_s": round(serial, 3),
        "bundle_parallel_s": round(parallel, 3),
        "bundle_speedup": round(serial / parallel, 2),
        "cores": os.cpu_count(),
    }
    checks = {"throughput >= 0.9x hashlib": results["throughput_vs_hashlib"] >= 0.9}
    return finish(results, checks)


if __name__ == "__main__":
    sys.exit(main())
