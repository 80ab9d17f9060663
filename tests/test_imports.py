"""One-way imports: the command layer (minirec.cli, which brings Fire) sits on top, and no library
module loads it. Checked by importing every library module in a fresh process."""

import pkgutil
import subprocess
import sys

import minirec
from tests.conftest import ROOT

COMMAND_LAYER = ("minirec.cli", "fire")


def library_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(minirec.__path__, "minirec.")]
    return [n for n in names if n != "minirec.cli" and not n.endswith(".__main__")]


def test_no_library_module_loads_the_command_layer():
    modules = library_modules()
    assert {"minirec.rl.rewards", "minirec.baselines.sasrec", "minirec.recommend", "minirec.config"} <= set(modules)
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in {COMMAND_LAYER!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]
