"""Prompts: the one place that turns data rows into (prompt, completion) text.

SFT, RL and evaluation all call :func:`next_sid_prompt` / :func:`build_examples` with the
template recorded in the run's ``run.json``, so the text a model is trained on is the text
it is asked at RL and evaluation time, by construction. This module knows nothing about
tokenizers: the EOS token and loss masking are the trainer's business.

Tasks (``--tasks``):

==========================  ====================================  ==========  =============
task                        prompt -> completion                  one row per needs titles
==========================  ====================================  ==========  =============
``next_sid``                SID history -> next SID (the main)    interaction no
``title_history_to_sid``    title history -> next SID             interaction yes
``sid_history_to_title``    SID history -> next item's title      interaction yes
``title_to_sid``            item title -> its SID                 item        yes
``sid_to_title``            item SID -> its title                 item        yes
==========================  ====================================  ==========  =============

Templates: ``compact`` (``Items: <a_1><b_2><c_3>...\nNext:``, the default), ``instruct`` (an
instruction/response frame for instruct-tuned bases) and ``sids`` (SID tokens only, next_sid
only: each history item is closed by :data:`ITEM_END`, which the tokenizer layer turns into
its EOS token). In ``sids`` a completion (SID + EOS) is exactly one more closed history item,
so the prompt of a longer history extends a shorter history's whole row: one row can then
supervise every item of a user's sequence (:func:`build_sequence_examples`).
"""

from dataclasses import dataclass

from minirec.errors import MinirecError

TASKS = ("next_sid", "title_history_to_sid", "sid_history_to_title", "title_to_sid", "sid_to_title")
TITLE_TASKS = {"title_history_to_sid", "sid_history_to_title", "title_to_sid", "sid_to_title"}
ITEM_TASKS = {"title_to_sid", "sid_to_title"}
# History titles are cut to this many characters: ten full Amazon titles would be ~300 tokens.
MAX_HISTORY_TITLE_CHARS = 80


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    completion: str
    item: str  # the item the completion names (the target, for interaction tasks)


# Compact: few tokens per row, the default (short prompts are cheaper to train and decode).
COMPACT = {
    "next_sid": ("Items: {sids}\nNext:", "{sid}"),
    "title_history_to_sid": ("Titles: {titles}\nNext:", "{sid}"),
    "sid_history_to_title": ("Items: {sids}\nNext title:", " {title}"),
    "title_to_sid": ("Title: {title}\nSID:", "{sid}"),
    "sid_to_title": ("SID: {sid}\nTitle:", " {title}"),
}

# Instruction style, for instruct-tuned bases that expect a request and a response.
_INSTRUCT_FRAME = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
INSTRUCT = {
    "next_sid": ("Recommend the next item the user will interact with. Answer with its semantic ID.",
                 "The user has interacted with these items, in order: {sids_listed}", "{sid}"),
    "title_history_to_sid": ("Recommend the next item the user will interact with. Answer with its semantic ID.",
                             "The user has interacted with these items, in order: {titles}", "{sid}"),
    "sid_history_to_title": ("Recommend the next item the user will interact with. Answer with its title.",
                             "The user has interacted with these items, in order: {sids_listed}", "{title}"),
    "title_to_sid": ("Give the semantic ID of this item.", "{title}", "{sid}"),
    "sid_to_title": ("Give the title of the item with this semantic ID.", "{sid}", "{title}"),
}
# SIDs only: no text tokens, so a small model spends nothing on template words.
ITEM_END = "<|item_end|>"
SIDS = {"next_sid": ("{sids_closed}", "{sid}")}
TEMPLATES = ("compact", "instruct", "sids")


def _render(template: str, task: str, fields: dict) -> tuple[str, str]:
    if template == "compact":
        prompt, completion = COMPACT[task]
        return prompt.format(**fields), completion.format(**fields)
    if template == "instruct":
        instruction, inp, completion = INSTRUCT[task]
        prompt = _INSTRUCT_FRAME.format(instruction=instruction, input=inp.format(**fields))
        return prompt, completion.format(**fields)
    if template == "sids":
        if task not in SIDS:
            raise MinirecError(f"template 'sids' has only the next_sid task, not {task!r}; pass --tasks next_sid")
        prompt, completion = SIDS[task]
        return prompt.format(**fields), completion.format(**fields)
    raise MinirecError(f"unknown template {template!r}; choose one of {TEMPLATES}")


def _history_fields(history, catalogue, max_history):
    history = history[-max_history:] if max_history else history
    sids = [catalogue.sid(i) for i in history]
    fields = {"sids": "".join(sids), "sids_listed": ", ".join(sids), "sids_closed": "".join(s + ITEM_END for s in sids)}
    if catalogue.has_titles:
        fields["titles"] = "; ".join(catalogue.title(i)[:MAX_HISTORY_TITLE_CHARS] for i in history)
    return fields


def next_sid_prompt(history, catalogue, template="compact", max_history=10) -> str:
    """The main task's prompt for a history of item ids: what RL and evaluation decode from."""
    return _render(template, "next_sid", {**_history_fields(history, catalogue, max_history), "sid": ""})[0]


def resolve_tasks(tasks, catalogue, template="compact") -> tuple[str, ...]:
    """``None``/``"all"`` -> every task the data (and template) supports; otherwise validate the list."""
    if tasks in (None, "", "all"):
        if template == "sids":
            return tuple(SIDS)
        return tuple(t for t in TASKS if catalogue.has_titles or t not in TITLE_TASKS)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = tuple(tasks)
    for t in tasks:
        if t not in TASKS:
            raise MinirecError(f"unknown task {t!r} in --tasks; choose from {', '.join(TASKS)}")
        if t in TITLE_TASKS and not catalogue.has_titles:
            raise MinirecError(f"task {t!r} needs item titles, but the dataset has no item.json titles; drop it from --tasks")
    if not tasks:
        raise MinirecError("--tasks is empty; name at least one of " + ", ".join(TASKS))
    if template == "sids" and set(tasks) - set(SIDS):
        raise MinirecError(f"--template sids has only the next_sid task; drop {', '.join(sorted(set(tasks) - set(SIDS)))} from --tasks")
    return tasks


def build_examples(rows, catalogue, tasks=("next_sid",), template="compact", max_history=10) -> list[Example]:
    """Interaction rows (and, for item tasks, the catalogue) -> examples, task by task."""
    examples = []
    for task in tasks:
        if task in ITEM_TASKS:
            for item in catalogue.sids:
                fields = {"sid": catalogue.sid(item), "title": catalogue.title(item)}
                examples.append(Example(task, *_render(template, task, fields), item))
            continue
        for row in rows:
            fields = _history_fields(row.history, catalogue, max_history)
            fields["sid"] = catalogue.sid(row.target)
            if task == "sid_history_to_title":
                fields["title"] = catalogue.title(row.target)
            examples.append(Example(task, *_render(template, task, fields), row.target))
    return examples


@dataclass(frozen=True)
class SequenceExample:
    """Consecutive items of one user's train sequence in one row: ``prompt`` holds the context
    items, and each of ``completions`` (one SID each, in order) is a target (template ``sids``)."""

    prompt: str
    completions: tuple[str, ...]


def build_sequence_examples(sequences, catalogue, max_history=10) -> list[SequenceExample]:
    """``(items, first_target)`` sequences -> rows of up to ``max_history`` targets each.

    A row's targets are preceded by up to ``max_history`` context items, so the first target
    of a row sees what an interaction row would, and later ones see up to ``2 * max_history - 1``
    items (only users with more than ``max_history + 1`` train items have such rows).
    """
    if max_history <= 0:
        raise MinirecError("dense sequence rows need a positive --max_history")
    examples = []
    for items, first_target in sequences:
        for start in range(first_target, len(items), max_history):
            context = items[max(0, start - max_history):start]
            prompt = _render("sids", "next_sid", {**_history_fields(context, catalogue, 0), "sid": ""})[0]
            targets = tuple(catalogue.sid(i) for i in items[start:start + max_history])
            examples.append(SequenceExample(prompt, targets))
    return examples
