"""`import deltatune` stays light: the core needs only torch and safetensors."""

import subprocess
import sys


def test_import_does_not_pull_heavy_libraries() -> None:
    heavy = ("transformers", "accelerate", "matplotlib", "peft")
    code = f"import sys, deltatune; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
