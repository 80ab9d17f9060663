import pytest

from minirec.data import Interaction
from minirec.errors import MinirecError
from minirec.prompts import TASKS, build_examples, next_sid_prompt, resolve_tasks
from minirec.sid import Catalogue


@pytest.fixture
def cat():
    return Catalogue(
        sids={"1": ("<a_1>", "<b_1>"), "2": ("<a_2>", "<b_1>"), "3": ("<a_3>", "<b_3>")},
        titles={"1": "Glue", "2": "Tape", "3": "Saw"},
    )


ROWS = [Interaction("u", ("1", "2"), "3")]


def test_main_task_prompt_is_shared_with_rl_and_eval(cat):
    ex = build_examples(ROWS, cat, ("next_sid",))[0]
    assert ex.prompt == next_sid_prompt(("1", "2"), cat)
    assert ex.prompt == "Items: <a_1><b_1><a_2><b_1>\nNext:" and ex.completion == "<a_3><b_3>"
    for template in ("compact", "instruct"):
        ex = build_examples(ROWS, cat, ("next_sid",), template=template)[0]
        assert ex.prompt == next_sid_prompt(("1", "2"), cat, template=template)


def test_every_task_renders(cat):
    examples = build_examples(ROWS, cat, TASKS)
    by_task = {e.task: e for e in examples}
    assert set(by_task) == set(TASKS)
    assert by_task["title_history_to_sid"].prompt == "Titles: Glue; Tape\nNext:"
    assert by_task["sid_history_to_title"].completion == " Saw"
    assert sum(e.task == "title_to_sid" for e in examples) == len(cat)  # one per catalogue item
    assert by_task["sid_to_title"].completion.strip() == cat.title(by_task["sid_to_title"].item)


def test_instruct_template_lists_history_with_commas(cat):
    ex = build_examples(ROWS, cat, ("next_sid",), template="instruct")[0]
    assert "<a_1><b_1>, <a_2><b_1>" in ex.prompt and ex.prompt.endswith("### Response:\n")


def test_max_history_keeps_the_most_recent(cat):
    assert next_sid_prompt(("1", "2", "3"), cat, max_history=1) == "Items: <a_3><b_3>\nNext:"


def test_resolve_tasks(cat):
    assert resolve_tasks("all", cat) == TASKS
    assert resolve_tasks("all", Catalogue(sids=cat.sids)) == ("next_sid",)  # no titles -> SID-only tasks
    with pytest.raises(MinirecError, match="unknown task 'nope'"):
        resolve_tasks("next_sid,nope", cat)
    with pytest.raises(MinirecError, match="needs item titles"):
        resolve_tasks("title_to_sid", Catalogue(sids=cat.sids))


def test_sids_template_prompt_extends_the_shorter_history_row(cat):
    from minirec.prompts import ITEM_END

    short = build_examples([Interaction("u", ("1",), "2")], cat, ("next_sid",), template="sids")[0]
    longer = next_sid_prompt(("1", "2"), cat, template="sids")
    assert short.prompt == "<a_1><b_1>" + ITEM_END and short.completion == "<a_2><b_1>"
    assert longer == short.prompt + short.completion + ITEM_END


def test_sids_template_has_only_the_next_sid_task(cat):
    assert resolve_tasks("all", cat, template="sids") == ("next_sid",)
    with pytest.raises(MinirecError, match="only the next_sid task"):
        resolve_tasks("next_sid,sid_to_title", cat, template="sids")


def test_sequence_examples_cover_each_target_once_with_bounded_context(cat):
    from minirec.prompts import ITEM_END, build_sequence_examples

    items = ("1", "2", "3", "1", "2", "3", "1")
    rows = build_sequence_examples([(items, 1)], cat, max_history=2)
    assert [len(r.completions) for r in rows] == [2, 2, 2]
    assert rows[0].prompt == "<a_1><b_1>" + ITEM_END
    assert rows[1].prompt == next_sid_prompt(items[1:3], cat, template="sids", max_history=2)
    assert [c for r in rows for c in r.completions] == [cat.sid(i) for i in items[1:]]
