"""The top-level API: every public name resolves, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import mitoscope


def test_public_names_resolve() -> None:
    for name in mitoscope.__all__:
        assert getattr(mitoscope, name) is not None


def test_import_does_not_load_torch() -> None:
    code = "import sys, mitoscope; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
