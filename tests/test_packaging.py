"""Packaging: one source of pinned versions, and the module commands run from any directory."""

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT


def pins(name):
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def test_versions_come_from_the_pinned_requirement_files_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert set(project["project"]["dynamic"]) == {"dependencies", "optional-dependencies"}
    assert "dependencies" not in project["project"]  # no second list of versions
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    assert dynamic["optional-dependencies"] == {"dev": {"file": ["requirements-dev.txt"]}}
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    for name, version in {**runtime, **dev}.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name) and re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version), name
    assert not runtime.keys() & dev.keys() and {"pandas", "numpy", "torch"} <= runtime.keys() and "pytest" in dev


@pytest.mark.skipif(not any(d.metadata["Name"] == "minirec" for d in importlib.metadata.distributions()),
                    reason="minirec is not installed in this environment (bash scripts/setup.sh installs it)")
def test_installed_module_commands_run_from_any_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_text = subprocess.run([sys.executable, "-m", "minirec.data.prepare", "--help"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120, check=True).stdout
    assert "--interactions" in help_text
    items = ROOT / "data" / "Industrial_and_Scientific" / "item.json"
    proc = subprocess.run([sys.executable, "-m", "minirec.data.prepare", "--items", str(items), "--out", "o",
                           "--sequences", "missing.json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: missing.json: sequences file not found"
