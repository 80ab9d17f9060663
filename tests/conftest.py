"""Shared fixtures: the bundled Industrial data and a very small locally built base model."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INDUSTRIAL = ROOT / "data" / "Industrial_and_Scientific"

# Smaller than the default tiny model so that unit tests stay fast on 2 CPU cores.
TEST_SPEC = dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=600)


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
