"""Imports one strategy module and reports how that went. Runs in a child process.

Standard library only, started with ``python -I`` inside the sandbox: it must not depend
on, or be able to touch, the daemon. The report is one JSON line on the pipe whose number
is the last argument, because the module under test may print anything to stdout; the
daemon validates it (reconciler.sandbox.channel.strategy_report).
"""

import importlib.util
import json
import os
import sys
import traceback


def _innermost_line(error: BaseException, module_path: str) -> int:
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if os.path.abspath(f.filename) == module_path]
    return frames[-1].lineno or 1 if frames else 1


def main() -> None:
    root, relative, entrypoint, report_fd = sys.argv[1:5]
    module_path = os.path.abspath(os.path.join(root, relative))
    sys.path[:0] = [os.path.dirname(module_path), root]
    name = os.path.splitext(os.path.basename(module_path))[0]
    report: dict[str, object]
    try:
        spec = importlib.util.spec_from_file_location(name, module_path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if entrypoint and not callable(getattr(module, entrypoint, None)):
            report = {"outcome": "entrypoint", "detail": f"the module defines no callable "
                      f"{entrypoint!r}"}
        else:
            report = {"outcome": "ok"}
    except SystemExit as error:
        report = {"outcome": "exit", "detail": f"importing the module called sys.exit"
                  f"({error.code!r})", "line": _innermost_line(error, module_path)}
    except BaseException as error:
        report = {"outcome": "raise", "detail": f"importing the module raised "
                  f"{type(error).__name__}: {error}", "line": _innermost_line(error, module_path)}
    with os.fdopen(int(report_fd), "w") as stream:
        stream.write(json.dumps(report) + "\n")
    # Threads or atexit handlers the module started must not keep the check alive.
    os._exit(0)


if __name__ == "__main__":
    main()
