"""The check runner the compatibility clients share.

Each check prints `ok   <what>` or `FAIL <what>: <why>` (an exception is a
failure with its message); `finish()` prints `N passed, N failed` and exits
non-zero if anything failed.
"""

import sys
import traceback


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, body):
        """Runs body(), which returns (ok, detail); returns its detail or None."""
        try:
            ok, detail = body()
        except Exception as error:  # noqa: BLE001 - any error is this check's failure
            frame = traceback.extract_tb(error.__traceback__)[-1]
            ok, detail = False, f"{type(error).__name__}: {error} (at {frame.filename}:{frame.lineno})"
        if ok:
            self.passed += 1
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {str(detail)[:600]}", flush=True)
        return detail if ok else None

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


class FailFast:
    """The smoke tests' runner: `check(name, condition, detail)` stops the
    run at the first failure with `N passed, 1 failed`; `finish()` prints
    `N passed, 0 failed`."""

    def __init__(self):
        self.passed = 0

    def __call__(self, name, condition, detail=""):
        if not condition:
            print(f"FAIL {name}: {detail}")
            print(f"{self.passed} passed, 1 failed")
            sys.exit(1)
        self.passed += 1
        print(f"ok   {name}")

    def finish(self):
        print(f"{self.passed} passed, 0 failed")
