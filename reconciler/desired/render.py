"""What a Config delivers: its data rendered as JSON or YAML, byte-for-byte reproducible."""

from __future__ import annotations

import io
import json

from ruamel.yaml import YAML

from reconciler.desired.documents import Config


def render_config(config: Config) -> bytes:
    if config.format == "json":
        return (json.dumps(config.data, indent=2, ensure_ascii=False) + "\n").encode()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(dict(config.data), buffer)
    return buffer.getvalue().encode()
