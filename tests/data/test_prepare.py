"""minirec.data.prepare: exact rebuild of the shipped Industrial splits, splits, filters, errors."""

import json
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def reference(events, kcore, max_history, split, start=None, min_rating=None):
    """The row-by-row semantics, written plainly: what the vectorised path must reproduce."""
    users = {}
    for user, item, time, rating in events:
        users.setdefault(user, []).append((item, time, rating))
    users = {u: sorted(evs, key=lambda e: e[1]) for u, evs in users.items()}
    if start is not None:
        users = {u: [e for e in evs if e[1] >= start] for u, evs in users.items()}
    if min_rating is not None:
        users = {u: [e for e in evs if e[2] is None or e[2] >= min_rating] for u, evs in users.items()}
    while kcore:
        counts = Counter(e[0] for evs in users.values() for e in evs)
        kept = {u: [e for e in evs if counts[e[0]] >= kcore] for u, evs in users.items()}
        kept = {u: evs for u, evs in kept.items() if len(evs) >= kcore}
        if kept == users:
            break
        users = kept
    users = {u: evs for u, evs in users.items() if len(evs) >= 2}
    rows = [(evs[t][1], f"{u}\t{' '.join(e[0] for e in evs[max(0, t - max_history):t])}\t{evs[t][0]}")
            for u, evs in users.items() for t in range(1, len(evs))]
    if split == "leave_one_out":
        out = {"train": [], "valid": [], "test": []}
        for u in users:
            mine = [r for _, r in rows if r.startswith(f"{u}\t")]
            out["test"] += mine[-1:]
            out["valid"] += mine[-2:-1]
            out["train"] += mine[:-2]
        return out
    ordered = [r for _, r in sorted(rows, key=lambda pair: pair[0])]
    cut1, cut2 = int(len(ordered) * 0.8), int(len(ordered) * 0.9)
    return {"train": ordered[:cut1], "valid": ordered[cut1:cut2], "test": ordered[cut2:]}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3", "ü4", "u5"]), st.sampled_from(list("abcdefg")),
                          st.integers(0, 12), st.one_of(st.none(), st.integers(1, 5))), min_size=1, max_size=60),
       st.sampled_from([0, 2, 3]), st.integers(1, 4), st.sampled_from(["chronological_global", "leave_one_out"]),
       st.sampled_from([None, 4]), st.sampled_from([None, 3]))
def test_vectorised_prepare_matches_the_row_by_row_rules(tmp_path_factory, events, kcore, max_history, split,
                                                         start, min_rating):
    tmp_path = tmp_path_factory.mktemp("prop")
    items = write_items(tmp_path / "items.json", list("abcdefg"))
    lines = ["user_id,item_id,timestamp,rating"] + [f"{u},{i},{t},{'' if r is None else r}" for u, i, t, r in events]
    (tmp_path / "e.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = reference(events, kcore, max_history, split, start, min_rating)
    try:
        prepare(out=tmp_path / "o", items=items, interactions=tmp_path / "e.csv", kcore=kcore,
                max_history=max_history, split=split, start=start, min_rating=min_rating)
    except MinirecError as e:
        assert "no user has 2" in str(e) or "too few windows" in str(e), e
        assert not all(expected.values())
        return
    for name, rows in expected.items():
        assert (tmp_path / "o" / f"{name}.inter").read_text(encoding="utf-8").splitlines()[1:] == rows, name


def test_csv_with_iso_dates_quotes_and_padded_ids_reads_like_the_plain_file(tmp_path):
    items = write_items(tmp_path / "items.json", ["a", "b", "c"])
    plain = tmp_path / "plain.csv"
    plain.write_text("user_id,item_id,timestamp\nu1,a,1515024000\nu1,b,1514851200\nu2,c,1514764800\nu2,a,1514937600\n"
                     "u1,c,1514937600\nu1,b,1514764800\n")
    fancy = tmp_path / "fancy.csv"  # ISO dates (once per distinct string), quoted and padded ids, a blank line
    fancy.write_text('user_id,item_id,timestamp\n" u1",a,2018-01-04\nu1,"b ",2018-01-02T00:00:00Z\n\n'
                     "u2,c,1514764800\nu2,a,2018-01-03\nu1 ,c,2018-01-03T01:00:00+01:00\nu1,b,2018-01-01\n")
    for path, out in ((plain, "p"), (fancy, "f")):
        prepare(out=tmp_path / out, items=items, interactions=path, split="leave_one_out")
    for name in ("train.inter", "valid.inter", "test.inter"):
        assert (tmp_path / "p" / name).read_bytes() == (tmp_path / "f" / name).read_bytes()
    assert (tmp_path / "f" / "test.inter").read_text().splitlines()[1:] == ["u1\tb b c\ta", "u2\tc\ta"]


@pytest.mark.parametrize("body, message", [
    ("u1,a,1,5\n\nu1,b,2,x\n", r"e.csv:4: rating 'x' is not a number"),
    ("u1,a,1,5\nu1,a b,2,5\n", r"e.csv:3: item id 'a b' is empty or contains whitespace"),
    ("u1,a,1,5\n,b,2,5\n", r"e.csv:3: empty user_id"),
    ("u1,a,1,5\nu1,b,nan,5\n", r"e.csv:3: timestamp 'nan' is NaN"),
    ("u1,a,1,5\nu1,b,2018-13-40,5\n", r"e.csv:3: timestamp '2018-13-40' is neither"),
])
def test_first_bad_csv_row_is_named_with_its_line(tmp_path, body, message):
    items = write_items(tmp_path / "items.json", ["a", "b"])
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp,rating\n" + body)
    with pytest.raises(MinirecError, match=message):
        prepare(out=tmp_path / "o", items=items, interactions=tmp_path / "e.csv")


def test_jsonl_errors_name_the_line_and_unrated_events_pass_min_rating(tmp_path):
    items = write_items(tmp_path / "items.json", ["a", "b", "c"])
    path = tmp_path / "e.jsonl"
    path.write_text('{"user_id": "u1", "item_id": "a", "timestamp": 1}\n\n{"user_id": "u1", "item_id": "b", "timestamp": "x"}\n')
    with pytest.raises(MinirecError, match=r"e.jsonl:3: timestamp 'x'"):
        prepare(out=tmp_path / "o", items=items, interactions=path)
    path.write_text("\n".join(json.dumps({"user_id": "u1", "item_id": i, "timestamp": t, "rating": r})
                              for i, t, r in (("a", 1, None), ("b", 2, 1), ("c", 3, 5), ("a", 4, None), ("c", 5, 4))) + "\n")
    s = prepare(out=tmp_path / "o", items=items, interactions=path, min_rating=3, split="leave_one_out")
    assert s["interactions"] == 4  # b (rating 1) goes; events without a rating stay


def test_sequences_may_mix_timed_and_bare_users_for_leave_one_out(tmp_path):
    """Each user's list is one form; users may differ (read by the per-user rules)."""
    items = write_items(tmp_path / "items.json", ["a", "b", "c"])
    seqs = tmp_path / "seqs.json"
    seqs.write_text(json.dumps({"u1": ["a", "b", "c", "a"], "u2": [["b", 5], ["c", 7]]}))
    prepare(out=tmp_path / "o", items=items, sequences=seqs, split="leave_one_out")
    assert (tmp_path / "o" / "test.inter").read_text().splitlines()[1:] == ["u1\ta b c\ta", "u2\tb\tc"]
    with pytest.raises(MinirecError, match="no timestamps; pass --order_from"):
        prepare(out=tmp_path / "g", items=items, sequences=seqs)
