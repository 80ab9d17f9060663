import csv
import json

import pytest

from minirec.data import Interaction, load_dataset, read_csv, read_inter, write_inter
from minirec.errors import MinirecError
from minirec.sid import load_catalogue

INDEX = {"1": ["<a_1>", "<b_1>", "<c_1>"], "2": ["<a_1>", "<b_2>", "<c_1>"], "3": ["<a_2>", "<b_1>", "<c_1>", "<d_0>"]}
ITEMS = {k: {"title": f"Item &amp;quot;{k}&amp;quot;", "description": "", "brand": "", "categories": ""} for k in INDEX}
HEADER = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid", "item_sid"]


def sid(i):
    return "".join(INDEX[i])


def write_dir(tmp_path, train_rows=None, fmt="inter"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "index.json").write_text(json.dumps(INDEX))
    (tmp_path / "item.json").write_text(json.dumps(ITEMS))
    rows = train_rows or [Interaction("u1", ("1",), "2"), Interaction("u1", ("1", "2"), "3")]
    for split in ("train", "valid", "test"):
        if fmt == "inter":
            write_inter(tmp_path / f"{split}.inter", rows)
        else:
            write_csv(tmp_path / f"{split}.csv", rows)
    return tmp_path


def csv_record(r):
    return [r.user, repr([f"t{i}" for i in r.history]), f"t{r.target}", repr([int(i) for i in r.history]),
            r.target, repr([sid(i) for i in r.history]), sid(r.target)]


def write_csv(path, rows, records=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for rec in records or [csv_record(r) for r in rows]:
            w.writerow(rec)


def test_csv_and_inter_give_the_same_rows(tmp_path):
    a = load_dataset(write_dir(tmp_path / "a", fmt="inter"))
    b = load_dataset(write_dir(tmp_path / "b", fmt="csv"))
    assert a.splits == b.splits
    assert a.catalogue.title("1") == 'Item "1"'  # HTML entity residue is cleaned


def test_bundled_industrial_matches_the_published_counts(industrial):
    assert {k: len(v) for k, v in industrial.splits.items()} == {"train": 36259, "valid": 4532, "test": 4533}
    assert len(industrial.catalogue) == 3686
    assert len(industrial.catalogue.distinct_sids()) == 3670
    assert all(1 <= len(r.history) <= 10 for r in industrial.split("train"))


def test_bundled_industrial_csv_round_trip(tmp_path, industrial):
    """The CSV reader accepts the MiniOneRec form of the bundled rows and returns the same rows."""
    cat = industrial.catalogue
    rows = industrial.split("test")[:200]
    records = [[r.user, repr([cat.title(i) for i in r.history]), cat.title(r.target), repr([int(i) for i in r.history]),
                r.target, repr([cat.sid(i) for i in r.history]), cat.sid(r.target)] for r in rows]
    write_csv(tmp_path / "test.csv", rows, records)
    assert read_csv(tmp_path / "test.csv", cat) == rows


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rec: rec.__setitem__(3, "[1, 2"), "not a Python list literal"),
        (lambda rec: rec.__setitem__(3, "__import__('os')"), "not a Python list literal"),
        (lambda rec: rec.__setitem__(5, "[]"), "2 item ids but 0 SIDs"),
        (lambda rec: rec.__setitem__(4, "99"), "item id '99' is not in index.json"),
        (lambda rec: rec.__setitem__(6, "<a_9><b_9><c_9>"), "has SID '<a_9><b_9><c_9>' here"),
        (lambda rec: (rec.__setitem__(3, "[]"), rec.__setitem__(5, "[]")), "empty history"),
    ],
)
def test_csv_row_errors_name_file_and_line(tmp_path, mutate, message):
    cat = load_catalogue(write_dir(tmp_path) / "index.json")
    rec = csv_record(Interaction("u1", ("1", "2"), "3"))
    mutate(rec)
    write_csv(tmp_path / "bad.csv", None, [csv_record(Interaction("u1", ("1",), "2")), rec])
    with pytest.raises(MinirecError, match=message) as e:
        read_csv(tmp_path / "bad.csv", cat)
    assert "bad.csv:3" in str(e.value)


def test_csv_missing_column(tmp_path):
    cat = load_catalogue(write_dir(tmp_path) / "index.json")
    (tmp_path / "x.csv").write_text("user_id,item_id\nu,1\n")
    with pytest.raises(MinirecError, match="missing column"):
        read_csv(tmp_path / "x.csv", cat)


@pytest.mark.parametrize(
    "line, message",
    [("u1\t\t2", "empty history"), ("u1\t1 7\t2", "item id '7'"), ("u1\t1", "expected 3 tab-separated")],
)
def test_inter_row_errors(tmp_path, line, message):
    cat = load_catalogue(write_dir(tmp_path) / "index.json")
    (tmp_path / "bad.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\nu1\t1\t2\n" + line + "\n")
    with pytest.raises(MinirecError, match=message) as e:
        read_inter(tmp_path / "bad.inter", cat)
    assert "bad.inter:3" in str(e.value)


def test_duplicate_item_ids_in_index(tmp_path):
    (tmp_path / "index.json").write_text('{"1": ["<a_1>"], "1": ["<a_2>"]}')
    with pytest.raises(MinirecError, match="item id '1' appears twice"):
        load_catalogue(tmp_path / "index.json")


def test_malformed_sid_in_index(tmp_path):
    (tmp_path / "index.json").write_text('{"1": ["a_1"]}')
    with pytest.raises(MinirecError, match="expected a list of tokens"):
        load_catalogue(tmp_path / "index.json")


def test_empty_split_and_missing_split(tmp_path):
    root = write_dir(tmp_path)
    (root / "valid.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n")
    with pytest.raises(MinirecError, match="valid split is empty"):
        load_dataset(root)
    (root / "valid.inter").unlink()
    with pytest.raises(MinirecError, match="no valid.inter or valid.csv"):
        load_dataset(root)


def test_mixed_depth_sids_are_supported(tmp_path):
    data = load_dataset(write_dir(tmp_path))
    assert data.catalogue.sid("3") == "<a_2><b_1><c_1><d_0>"
    assert "<d_0>" in data.catalogue.sid_tokens()


def test_bundled_office_products_loads_as_a_second_catalogue():
    from minirec.prompts import build_examples, resolve_tasks
    from tests.conftest import ROOT

    office = load_dataset(ROOT / "data" / "Office_Products")
    assert {k: len(v) for k, v in office.splits.items()} == {"train": 7648, "valid": 4866, "test": 4866}
    assert len(office.catalogue) == 3459 and office.catalogue.has_titles
    tasks = resolve_tasks("all", office.catalogue)
    examples = build_examples(office.split("valid")[:5], office.catalogue, tasks)
    assert {e.task for e in examples} == set(tasks)
