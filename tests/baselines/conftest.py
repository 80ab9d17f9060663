"""A hand-made six-item dataset: items 5 and 6 share one SID (a collision group), item 7
is only ever a valid/test target (never seen in train)."""

import json

import pytest

SIDS = {
    "1": ["<a_1>", "<b_1>"], "2": ["<a_1>", "<b_2>"], "3": ["<a_2>", "<b_1>"], "4": ["<a_2>", "<b_2>"],
    "5": ["<a_3>", "<b_1>"], "6": ["<a_3>", "<b_1>"], "7": ["<a_3>", "<b_2>"],
}
TRAIN = [  # user, history, target; popularity by target: 2 x3, 3 x2, 6 x1, the rest 0
    ("u1", "1", "2"), ("u1", "1 2", "3"), ("u1", "1 2 3", "2"),
    ("u2", "4", "2"), ("u2", "4 2", "3"),
    ("u3", "1", "6"),
]
VALID = [("u1", "1 2 3 2", "7"), ("u2", "4 2 3", "3")]
TEST = [("u1", "2 3 2 7", "1"), ("u3", "1 6", "5")]


def write_dataset(root, train=TRAIN, valid=VALID, test=TEST):
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.json").write_text(json.dumps(SIDS))
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        (root / f"{name}.inter").write_text("".join(f"{u}\t{h}\t{t}\n" for u, h, t in rows))
    return root


@pytest.fixture
def tiny_dir(tmp_path):
    return write_dataset(tmp_path / "tiny")


@pytest.fixture
def tiny(tiny_dir):
    from minirec.data import load_dataset

    return load_dataset(tiny_dir)
