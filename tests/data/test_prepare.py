"""minirec.data.prepare: exact rebuild of the shipped Industrial splits, splits, filters, errors."""

import json
import subprocess
import sys
from collections import Counter

import pytest

from minirec.data.prepare import prepare, read_order
from minirec.errors import MinirecError
from tests.conftest import INDUSTRIAL, ROOT

SEQUENCES = INDUSTRIAL / "user_sequences.json"
ITEMS = INDUSTRIAL / "item.json"


def shipped_rows():
    rows = []
    for split in ("train", "valid", "test"):
        lines = (INDUSTRIAL / f"{split}.inter").read_text().splitlines()[1:]
        rows += [tuple(line.split("\t")) for line in lines]
    return rows


def test_order_from_rebuilds_the_shipped_split_byte_for_byte(tmp_path):
    summary = prepare(out=tmp_path, items=ITEMS, sequences=SEQUENCES, order_from=INDUSTRIAL)
    assert summary["rows"] == {"train": 36259, "valid": 4532, "test": 4533}
    for name in ("train.inter", "valid.inter", "test.inter", "item.json"):
        assert (tmp_path / name).read_bytes() == (INDUSTRIAL / name).read_bytes(), name


def test_time_ranks_with_user_tiebreak_rebuild_the_shipped_split(tmp_path):
    """The shipped order is a stable sort by target time of windows listed user by user.

    Timestamps are not shipped, so give each row the index of the ascending (user, position)
    run it lies in (the coarsest times consistent with that rule): the timestamp path must
    then reproduce the shipped rows exactly, ties broken by user order.
    """
    rows, seqs = shipped_rows(), json.loads(SEQUENCES.read_text())
    run, prev, pos, times = 0, None, Counter(), {}
    for user, _, _ in rows:
        pos[user] += 1
        key = (int(user), pos[user])
        if prev is not None and key <= prev:
            run += 1
        times[user, pos[user]] = run
        prev = key
    timed = {u: [[item, times[u, max(t, 1)]] for t, item in enumerate(seq)] for u, seq in seqs.items()}
    path = tmp_path / "timed.json"
    path.write_text(json.dumps(timed))
    prepare(out=tmp_path / "out", items=ITEMS, sequences=path)
    for split in ("train", "valid", "test"):
        assert (tmp_path / "out" / f"{split}.inter").read_bytes() == (INDUSTRIAL / f"{split}.inter").read_bytes()


def test_sequences_alone_give_the_shipped_windows_in_per_user_order(tmp_path):
    """Without an order, leave-one-out uses the same windows: same multiset, same per-user order."""
    prepare(out=tmp_path, items=ITEMS, sequences=SEQUENCES, split="leave_one_out")
    mine = []
    for split in ("train", "valid", "test"):
        mine += [tuple(line.split("\t")) for line in (tmp_path / f"{split}.inter").read_text().splitlines()[1:]]
    shipped = shipped_rows()
    assert len(mine) == len(shipped) == 45324 and Counter(mine) == Counter(shipped)

    def per_user(rows):
        out = {}
        for row in rows:
            out.setdefault(row[0], []).append(row)
        return out

    assert per_user(mine) == per_user(shipped)


def test_global_split_without_timestamps_or_order_is_refused(tmp_path):
    with pytest.raises(MinirecError, match="no timestamps; pass --order_from"):
        prepare(out=tmp_path, items=ITEMS, sequences=SEQUENCES)


def write_items(path, ids):
    path.write_text(json.dumps({i: {"title": f"item {i}", "description": ""} for i in ids}))
    return path


def test_events_csv_sorted_by_time_windows_truncated_and_cut_80_10_10(tmp_path):
    items = write_items(tmp_path / "items.json", [f"i{k}" for k in range(8)])
    lines = ["user_id,item_id,timestamp,rating"]
    # two users; events deliberately out of order in the file
    for user, start in (("u1", 0), ("u2", 5)):
        for k in reversed(range(6)):
            lines.append(f"{user},i{k},{start + 10 * k},5")
    events = tmp_path / "events.csv"
    events.write_text("\n".join(lines) + "\n")
    prepare(out=tmp_path / "d", items=items, interactions=events, max_history=3)
    rows = {s: (tmp_path / "d" / f"{s}.inter").read_text().splitlines()[1:] for s in ("train", "valid", "test")}
    assert [len(r) for r in rows.values()] == [8, 1, 1]  # 10 windows: int(8), int(9)
    assert rows["train"][0] == "u1\ti0\ti1" and rows["train"][1] == "u2\ti0\ti1"  # t=10 before t=15
    assert rows["test"] == ["u2\ti2 i3 i4\ti5"]  # the latest target; history cut to 3
    assert json.loads((tmp_path / "d" / "item.json").read_text()).keys() == {f"i{k}" for k in range(6)}


def test_jsonl_events_kcore_time_window_and_min_rating(tmp_path):
    items = write_items(tmp_path / "items.json", ["a", "b", "c", "d", "e"])
    events = [{"user": u, "parent_asin": i, "time": t, "rating": r} for u, i, t, r in [
        ("u1", "a", 1, 5), ("u1", "b", 2, 5), ("u1", "c", 3, 5), ("u1", "a", 4, 5), ("u1", "d", 5, 1),
        ("u2", "a", 1, 5), ("u2", "b", 2, 5), ("u2", "c", 3, 5),
        ("u3", "a", 1, 5), ("u3", "e", 9, 5),
    ]]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    s = prepare(out=tmp_path / "k", items=items, interactions=path, kcore=2, split="leave_one_out")
    assert s["users"] == 2 and s["items"] == 3  # d and e (1 event each) go, then u3 (1 left) goes
    assert sorted(json.loads((tmp_path / "k" / "item.json").read_text())) == ["a", "b", "c"]
    s = prepare(out=tmp_path / "w", items=items, interactions=path, start=1, end=5, split="leave_one_out")
    assert (s["users"], s["interactions"]) == (2, 7)  # d at 5 and e at 9 are outside [1, 5); u3 keeps 1
    s = prepare(out=tmp_path / "r", items=items, interactions=path, min_rating=3, split="leave_one_out")
    assert (s["users"], s["interactions"]) == (3, 9)  # only d (rating 1) goes


def test_leave_one_out_puts_each_users_last_window_in_test(tmp_path):
    items = write_items(tmp_path / "items.json", ["a", "b", "c", "d"])
    seqs = tmp_path / "seqs.json"
    seqs.write_text(json.dumps({"u1": ["a", "b", "c", "d"], "u2": ["b", "c", "d"]}))
    prepare(out=tmp_path / "o", items=items, sequences=seqs, split="leave_one_out")
    def read(split):
        return (tmp_path / "o" / f"{split}.inter").read_text().splitlines()[1:]

    assert read("test") == ["u1\ta b c\td", "u2\tb c\td"]
    assert read("valid") == ["u1\ta b\tc", "u2\tb\tc"]
    assert read("train") == ["u1\ta\tb"]


@pytest.mark.parametrize("content, message", [
    ({"u1": [["a", 5], ["b", 3]]}, "go back in time at position 1"),
    ({"u1": ["a", "zzz"]}, "not in"),
    ({"u1": ["a", ["b", 1]]}, "mixes bare items"),
    ({"u1": ["a b", "c"]}, "contains whitespace"),
])
def test_bad_sequences_are_clear_errors(tmp_path, content, message):
    items = write_items(tmp_path / "items.json", ["a", "b", "c"])
    seqs = tmp_path / "seqs.json"
    seqs.write_text(json.dumps(content))
    with pytest.raises(MinirecError, match=message):
        prepare(out=tmp_path / "o", items=items, sequences=seqs, split="leave_one_out")


def test_missing_columns_and_bad_timestamps_in_events(tmp_path):
    items = write_items(tmp_path / "items.json", ["a", "b"])
    csv_path = tmp_path / "e.csv"
    csv_path.write_text("user_id,item_id\nu,a\n")
    with pytest.raises(MinirecError, match=r"missing column\(s\) timestamp"):
        prepare(out=tmp_path / "o", items=items, interactions=csv_path)
    csv_path.write_text("user_id,item_id,timestamp\nu,a,yesterday\n")
    with pytest.raises(MinirecError, match=r"e.csv:2: timestamp 'yesterday'"):
        prepare(out=tmp_path / "o", items=items, interactions=csv_path)


def test_order_from_must_match_the_data(tmp_path):
    items = write_items(tmp_path / "items.json", ["a", "b", "c"])
    seqs = tmp_path / "seqs.json"
    seqs.write_text(json.dumps({"u1": ["a", "b", "c"]}))
    order = tmp_path / "order"
    order.mkdir()
    for split, line in (("train", "u1\ta\tb"), ("valid", "u1\ta b\tc"), ("test", "u1\ta b c\ta")):
        (order / f"{split}.inter").write_text(f"user_id:token\titem_id_list:token_seq\titem_id:token\n{line}\n")
    assert read_order(order)[0] == ("u1", "b")
    with pytest.raises(MinirecError, match="has only 2 windows"):
        prepare(out=tmp_path / "o", items=items, sequences=seqs, order_from=order)


def test_cli_error_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minirec.data.prepare", "--sequences", str(SEQUENCES),
                           "--items", str(ITEMS), "--out", str(tmp_path / "o"), "--bogus", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown flag(s) --bogus")
    assert not (tmp_path / "o").exists()
