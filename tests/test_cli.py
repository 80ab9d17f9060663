"""The command layer: Fire reads the words, the config dataclass checks them.

--help on every command, a table of spellings typed at every command (through ``fire.Fire``, as
a user types them), the values Python callers give, and each real entry point run as a process.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from minirec.cli import Command, run
from minirec.config import field_docs
from minirec.errors import MinirecError
from tests.conftest import INDUSTRIAL, ROOT


def _commands():
    from minirec.baselines.commands import (PopularityConfig, RecentPopularConfig, run_popularity,
                                            run_recent_popular, run_sasrec)
    from minirec.baselines.sasrec import SASRecConfig
    from minirec.data import convert, prepare
    from minirec.evaluate import EvalConfig, main as evaluate
    from minirec.merge import MergeConfig, main as merge
    from minirec.recommend import RecommendConfig, main as recommend
    from minirec.report import ReportConfig, main as report
    from minirec.rl import RLConfig, main as rl
    from minirec.sft import SFTConfig, main as sft
    from minirec.sid.build import BuildConfig, main as build

    b = "-m minirec.baselines"
    return {"sft": Command("sft.py", SFTConfig, sft), "rl": Command("rl.py", RLConfig, rl),
            "evaluate": Command("evaluate.py", EvalConfig, evaluate),
            "recommend": Command("-m minirec.recommend", RecommendConfig, recommend),
            "merge": Command("-m minirec.merge", MergeConfig, merge),
            "build": Command("-m minirec.sid build", BuildConfig, build),
            "prepare": Command("-m minirec.data.prepare", prepare.PrepareConfig, prepare.main),
            "convert": Command("-m minirec.data.convert", convert.ConvertConfig, convert.main, ("src", "dst")),
            "report": Command("-m minirec.report", ReportConfig, report),
            "popularity": Command(f"{b} popularity", PopularityConfig, run_popularity),
            "recent_popular": Command(f"{b} recent_popular", RecentPopularConfig, run_recent_popular),
            "sasrec": Command(f"{b} sasrec", SASRecConfig, run_sasrec)}


COMMANDS = _commands()
# How each is typed: every real entry point, run as a process below.
ENTRY_POINTS = {"sft": ["sft.py"], "rl": ["rl.py"], "evaluate": ["evaluate.py"],
                "build": ["-m", "minirec.sid", "build"],
                **{n: ["-m", "minirec.baselines", n] for n in ("popularity", "recent_popular", "sasrec")},
                **{n: ["-m", c.prog.split()[1]] for n, c in COMMANDS.items() if c.prog.split()[1:2] in (
                    ["minirec.recommend"], ["minirec.merge"], ["minirec.report"], ["minirec.data.prepare"],
                    ["minirec.data.convert"])}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run as far as flags can tell: run.json only (the RL command checks it)."""
    path = tmp_path_factory.mktemp("run")
    (path / "run.json").write_text(json.dumps({
        "base_model": "tiny", "base_model_path": ".", "mode": "full", "template": "compact", "max_history": 10,
        "tasks": ["next_sid"], "data_dir": "data/Industrial_and_Scientific", "sid_index_sha256": "0"}))
    return path


def required(name, run_dir, tmp):
    """The least each command needs besides the flag under test."""
    return {
        "sft": ["--output_dir", f"{tmp}/sft", "--data_dir", str(INDUSTRIAL)],
        "rl": ["--model_path", str(run_dir), "--output_dir", f"{tmp}/rl"],
        "evaluate": ["--model_path", str(run_dir)], "recommend": ["--model_path", str(run_dir), "--history", "1"],
        "merge": ["--model_path", str(run_dir), "--output_dir", f"{tmp}/merged"],
        "build": ["--items", "item.json", "--out", f"{tmp}/index.json"],
        "prepare": ["--out", f"{tmp}/data", "--items", "item.json", "--sequences", "seq.json"],
        "convert": [], "report": [], "popularity": [], "recent_popular": [], "sasrec": [],
    }[name]


def typed(name, argv, capsys):
    """``argv`` typed at command ``name`` through Fire -> the config its main receives, or the error line."""
    seen = []
    try:
        run(dataclasses.replace(COMMANDS[name], main=seen.append), argv=argv)
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (e.code, err)
        return err.removeprefix("error: ").strip()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_flag_is_documented(name):
    cls = COMMANDS[name].config
    docs = field_docs(cls)
    undocumented = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, ("", ""))[1]]
    assert not undocumented, f"{cls.__name__}: add a docstring after {undocumented}"


def assert_lists_every_flag(out, cmd):
    out = " ".join(out.split())
    assert out.startswith(f"usage: python {cmd.prog}"), out[:200]
    for f in dataclasses.fields(cmd.config):
        doc = field_docs(cmd.config)[f.name][1]
        assert f"--{f.name} " in out and doc[:40] in out, f.name
        default = {dataclasses.MISSING: "required", None: "default: none", "": "default: ''"}.get(
            f.default, f"default: {f.default}")
        assert default in out, (f.name, default)


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("spelling", ["--help", "-h"])
def test_help_lists_every_flag_with_its_doc_and_default(name, spelling, capsys):
    cmd = COMMANDS[name]
    run(cmd, argv=[*cmd.positional, "--bogus", spelling])  # help wins over other words
    assert_lists_every_flag(capsys.readouterr().out, cmd)


def test_every_entry_point_goes_through_fire_and_lists_every_flag():
    """Each command as typed, in its own process: --help lists every flag on stdout (exit 0), and a
    misspelt flag is one error line (exit 2); Fire's own help (`-- --help`) lists the flags too."""
    assert set(ENTRY_POINTS) == set(COMMANDS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(argv):
        return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    procs = {n: (start([*e, "--help"]), start([*e, "--bogus_flag", "1"])) for n, e in ENTRY_POINTS.items()}
    procs["fire"] = (start(["sft.py", "--", "--help"]), None)
    for name, (helped, bogus) in procs.items():
        out, err = helped.communicate(timeout=300)
        if name == "fire":  # Fire's help text, to stderr
            assert helped.returncode == 0 and "--use_lora=USE_LORA" in err and "Train LoRA adapters" in err, err[-2000:]
            continue
        assert helped.returncode == 0 and not err.strip(), (name, err[-2000:])
        assert_lists_every_flag(out, COMMANDS[name])
        out, err = bogus.communicate(timeout=300)
        assert bogus.returncode == 2 and not out and err.startswith("error: unknown flag(s) --bogus_flag"), (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err and "Fire" not in err, (name, err)


# (command, argv, field, expected value) or (command, argv, None, an error fragment)
SPELLINGS = [
    ("sft", ["--use_lora", "false"], "use_lora", False),
    ("sft", ["--use_lora", "FALSE"], "use_lora", False),
    ("sft", ["--use_lora", "No"], "use_lora", False),
    ("sft", ["--use_lora", "0"], "use_lora", False),
    ("sft", ["--use_lora", "True"], "use_lora", True),
    ("sft", ["--use_lora", "yes"], "use_lora", True),
    ("sft", ["--use_lora", "1"], "use_lora", True),
    ("sft", ["--use_lora"], "use_lora", True),
    ("sft", ["--use_lora=true"], "use_lora", True),
    ("sft", ["--use-lora", "true"], "use_lora", True),
    ("sft", ["--use_lora", "maybe"], None, "--use_lora 'maybe': expected a boolean: true/false, yes/no or 1/0"),
    ("sft", ["--use_lora", "2"], None, "--use_lora '2': expected a boolean"),
    ("sft", ["--use_lora", "on"], None, "--use_lora 'on': expected a boolean"),
    ("sft", ["--use_lora", ""], None, "--use_lora '': expected a boolean"),
    ("sft", ["--lora_r", "16", "--use_lora", "true"], "lora_r", 16),
    ("sft", ["--batch_size", "1.5"], None, "--batch_size '1.5': expected an integer"),
    ("sft", ["--batch_size", "1e2"], None, "--batch_size '1e2': expected an integer"),
    ("sft", ["--batch_size", "many"], None, "--batch_size 'many': expected an integer"),
    ("sft", ["--max_steps", "-1"], "max_steps", -1),
    ("sft", ["--learning_rate", "3"], "learning_rate", 3.0),
    ("sft", ["--learning_rate", "1e-3"], "learning_rate", 1e-3),
    ("sft", ["--learning_rate", "nan"], None, "--learning_rate 'nan': expected a finite number"),
    ("sft", ["--learning_rate", "fast"], None, "--learning_rate 'fast': expected a finite number"),
    ("sft", ["--learning_rate"], None, "--learning_rate needs a value"),
    ("sft", ["--output_dir"], None, "--output_dir needs a value"),  # Fire reads a bare flag as True
    ("sft", ["--output_dir", "True"], None, "--output_dir needs a value"),  # the trade-off (README)
    ("sft", ["--learning_rate=1.10"], "learning_rate", 1.1),
    ("sft", ["--base_model", "1.10", "--tiny_num_layers", "2"], None, "--tiny_num_layers applies only to --base_model tiny, not 1.10"),
    ("sft", ["-o", "out/x"], "output_dir", "out/x"),  # Fire's one-letter shortcut, as its own help lists it
    ("sft", ["-c", "128"], None, "-c is ambiguous: --cutoff_len, --cf_model, --cf_distill start with it"),
    ("sft", ["--nouse_lora"], "use_lora", False),  # Fire's --noFLAG
    ("sft", ["--output_dir", ""], None, "--output_dir is empty; pass a value"),
    ("sft", ["--output_dir", "."], None, "--output_dir .: the current directory or one above it"),
    ("sft", ["--output_dir", ".."], None, "--output_dir ..: the current directory or one above it"),
    ("sft", ["--data_dir", ""], None, "--data_dir is empty; pass a value"),
    ("sft", ["--data_dir=  "], None, "--data_dir is empty; pass a value"),
    ("evaluate", ["--data_dir", ""], "data_dir", ""),  # empty is its default: the run's own data dir
    ("popularity", ["--output_dir", "/"], None, "--output_dir /: the current directory or one above it"),
    ("sft", ["--nooutput_dir"], None, "unknown flag(s) --nooutput_dir (--noFLAG is only for BOOL flags; did you mean --output_dir VALUE?)"),
    ("sft", ["--nolearning-rate"], None, "unknown flag(s) --nolearning_rate"),
    ("build", ["--noreassign_collisions"], "reassign_collisions", False),
    ("sft", ["--seed", "1", "-", "--seed", "2"], None, "a lone '-' is not a value here"),
    ("sft", ["--", "--epochz", "3"], None, "a lone '--' is not accepted"),  # Fire would drop every word after it
    ("sft", ["--seed", "1", "--"], None, "a lone '--' is not accepted"),
    ("sft", ["--", "--help", "--seed", "2"], None, "a lone '--' is not accepted"),
    ("recommend", ["--sep=--"], "sep", "--"),  # the value "--" is one word, not the separator
    ("sft", ["--tasks", "next_sid,sid_to_title"], "tasks", "next_sid,sid_to_title"),
    ("sft", ["--lerning_rate", "1"], None, "unknown flag(s) --lerning_rate (did you mean --learning_rate?)"),
    ("sft", ["--seed", "1", "--seed", "2"], "seed", 2),  # the last one wins: scripts' extra flags override
    ("sft", ["--local_rank=0"], "seed", 42),  # the deepspeed launcher's flag is accepted
    ("sft", ["stray"], None, "unexpected argument(s) 'stray'"),
    ("sft", ["--use_qlora", "--load_in_8bit"], None, "--use_qlora and --load_in_8bit exclude each other"),
    ("sft", ["--lora_r", "16"], None, "--lora_r applies only to LoRA training"),
    ("sft", ["--freeze_llm", "--use_dora"], None, "--use_dora applies only to LoRA training"),
    ("sft", ["--base_model", "/m", "--tiny_num_layers", "2"], None, "--tiny_num_layers applies only to --base_model"),
    ("sft", ["--deepspeed", "nope.json"], None, "--deepspeed nope.json: no such config file"),
    ("sft", ["--select_by", "loss", "--select_rows", "10"], None, "--select_rows applies only with --select_by"),
    ("sft", ["--dense", "yes"], None, "--dense True needs --template sids"),
    ("sft", ["--dense", "yes", "--template", "sids", "--adam_beta2", "0.98"], "adam_beta2", 0.98),
    ("sft", ["--lora_dropout", "1.5", "--use_lora"], None, "--lora_dropout 1.5: use a probability"),
    ("sft", ["--tiny_hidden_dropout", "0.1"], "tiny_hidden_dropout", 0.1),
    ("sft", ["--tiny_hidden_dropout", "1"], None, "--tiny_hidden_dropout 1.0: use a probability"),
    ("sft", ["--base_model", "/m", "--tiny_hidden_dropout", "0.1"], None,
     "--tiny_hidden_dropout applies only to --base_model"),
    ("sft", ["--tiny_hidden_dropout", "0.1", "--use_lora"], None,
     "--tiny_hidden_dropout applies only to full fine-tuning"),
    ("sft", ["--sid_init", "text"], None, "--sid_init text and --item_embeddings FILE.npy go together"),
    ("sft", ["--item_embeddings", "e.npy"], None, "--sid_init text and --item_embeddings FILE.npy go together"),
    ("sft", ["--label_smoothing", "-0.1"], None, "--label_smoothing -0.1: use a probability"),
    ("sft", ["--decay_embeddings"], None, "--decay_embeddings applies only with --weight_decay > 0"),
    ("sft", ["--decay_embeddings", "--weight_decay", "0.1"], "decay_embeddings", True),
    ("evaluate", ["--max_history", "-1"], None, "--max_rows and --max_history >= 0"),
    ("evaluate", ["--repeat_prior", "0.25"], "repeat_prior", 0.25),
    ("rl", ["--reward_type", "rule,prefix", "--beam_search", "false"], "reward_type", "rule,prefix"),
    ("rl", ["--reward_type", "rule:1,prefix:0.5"], "reward_type", "rule:1,prefix:0.5"),
    ("rl", ["--beam_search", "False"], None, "--reward_type ranking rewards beam ranks, which samples do not have"),
    ("rl", ["--beam_search", "0", "--reward_type", "ranking_only"], None, "--reward_type ranking_only rewards beam"),
    ("rl", ["--temperature", "0.7"], None, "--temperature applies only to sampled rollouts"),
    ("rl", ["--beam_search", "no", "--reward_type", "rule", "--temperature", "0.7"], "temperature", 0.7),
    ("rl", ["--use_lora", "--use_qlora"], None, "--use_lora and --use_qlora exclude each other"),
    ("rl", ["--lora_r", "4"], None, "--lora_r applies only with --use_lora or --use_qlora"),
    ("rl", ["--reward_type", "semantic"], None, "--reward_type semantic needs --item_embeddings"),
    ("rl", ["--item_embeddings", "e.npy"], None, "--item_embeddings only applies with a semantic reward"),
    ("rl", ["--reward_type", "rule:0"], None, "every weight is 0"),
    ("rl", ["--reward_type", "rule,rule:2"], None, "'rule' is given twice"),
    ("rl", ["--reward_type", "ranking,ranking_only"], None, "ranking already is rule + ranking_only"),
    ("rl", ["--beta", "-1"], None, "--beta must be >= 0"),
    ("evaluate", ["--num_beam", "5"], None, "unknown flag(s) --num_beam (did you mean --num_beams?)"),
    ("evaluate", ["--num_beams", "5"], "num_beams", 5),
    ("evaluate", ["--ks", "1,5,10"], "ks", "1,5,10"),
    ("evaluate", ["--ks", "1,x"], None, "--ks '1,x': give positive integer cut-offs"),
    ("evaluate", ["--split", "tset"], None, "--split 'tset': choose one of train, valid, test"),
    ("evaluate", ["--merge_weights", "Yes"], None, "--merge_weights True: "),  # read as True; refused on a full run
    ("recommend", ["--history", "Widget, 2.50|1.10", "--sep", "|"], "history", "Widget, 2.50|1.10"),
    ("recommend", ["--history=1.10,2"], "history", "1.10,2"),
    ("recommend", ["--sep=-"], "sep", "-"),
    ("recommend", ["--interactive"], None, "--history and --interactive True exclude each other"),
    ("recommend", ["--top_k", "10", "--num_beams", "5"], None, "--num_beams 5 yields fewer than --top_k 10"),
    ("recommend", ["--top_k", "ten"], None, "--top_k 'ten': expected an integer"),
    ("merge", ["--trust_remote_code", "nope"], None, "--trust_remote_code 'nope': expected a boolean"),
    ("merge", ["--output_path", "x"], None, "unknown flag(s) --output_path (did you mean --output_dir?)"),
    ("build", ["--levels", "2"], "levels", 2),
    ("build", ["--levels", "2.0"], None, "--levels '2.0': expected an integer"),
    ("build", ["--reassign_collisions", "no"], "reassign_collisions", False),
    ("build", ["--rqvae_epochs", "5"], None, "--rqvae_epochs applies only to --method rqvae"),
    ("build", ["--method", "rqvae", "--rqvae_epochs", "5"], "rqvae_epochs", 5),
    ("build", ["--method", "pq"], None, "--method 'pq': choose one of"),
    ("prepare", ["--min_rating", "3"], None, "--min_rating needs rated events"),
    ("prepare", ["--start", "2018-11-30"], "start", "2018-11-30"),
    ("prepare", ["--kcore", "-1"], None, "--kcore -1: use a non-negative integer"),
    ("prepare", ["--kcore", "two"], None, "--kcore 'two': expected an integer"),
    ("prepare", ["--interactions", "e.csv"], None, "pass exactly one of --interactions FILE / --sequences FILE"),
    ("convert", ["a", "b"], "dst", "b"),
    ("convert", ["--dst", "b", "a"], "src", "a"),
    ("convert", ["a", "b", "c"], None, "unexpected argument(s) 'c'"),
    ("convert", ["a"], None, "missing required flag(s) --dst"),
    ("report", ["--runs", "out/a,out/b", "--split", "valid"], "runs", "out/a,out/b"),
    ("report", ["--split", "train"], None, "--split 'train': choose valid or test"),
    ("popularity", ["--split", "valid,test", "--top_k", "10"], "top_k", 10),
    ("recent_popular", ["--split", "train"], None, "choose from valid, test"),
    ("sasrec", ["--hidden_size", "64", "--num_heads", "3"], None, "not a multiple of --num_heads 3"),
    ("sasrec", ["--dropout", "0.1"], "dropout", 0.1),
]


@pytest.mark.parametrize("name, argv, field, expected", SPELLINGS, ids=[" ".join([r[0], *r[1]]) for r in SPELLINGS])
def test_spellings(name, argv, field, expected, run_dir, tmp_path, monkeypatch, capsys):
    # `--local_rank` is written to LOCAL_RANK; it must not outlive the test (a leaked LOCAL_RANK
    # makes every later training in this process expect a torch.distributed rendezvous)
    monkeypatch.setenv("LOCAL_RANK", "unset")  # records the original so teardown restores it
    monkeypatch.delenv("LOCAL_RANK")
    got = typed(name, required(name, run_dir, tmp_path) + argv, capsys)
    if field is None:
        assert isinstance(got, str) and expected in got, got
    else:
        assert not isinstance(got, str), got
        value = getattr(got, field)
        assert value == expected and type(value) is type(expected), value
        if "--local_rank=0" in argv:
            assert os.environ.get("LOCAL_RANK") == "0"


@pytest.mark.parametrize("flags, message", [
    ({"use_lora": "false"}, None),  # text, as the command line gives it
    ({"use_lora": 2}, "--use_lora 2: expected a boolean"),
    ({"lora_r": True, "use_lora": True}, "--lora_r True: expected an integer"),
    ({"lora_r": 1.5, "use_lora": True}, "--lora_r 1.5: expected an integer"),
    ({"learning_rate": 3}, None),
    ({"tasks": ("next_sid", "sid_to_title")}, None),  # a Python sequence for a comma list
    ({"tasks": None, "use_lora": None}, None),  # None from Python: not given, the default applies
    ({"lerning_rate": 1}, "unknown flag(s) --lerning_rate (did you mean --learning_rate?)"),
])
def test_python_values_are_checked_the_same_way(flags, message, tmp_path):
    from minirec.sft import SFTConfig

    flags = {"output_dir": str(tmp_path / "o"), "data_dir": INDUSTRIAL, **flags}
    if message:
        with pytest.raises(MinirecError, match=re.escape(message)):
            SFTConfig.from_kwargs(**flags)
    else:
        config = SFTConfig.from_kwargs(**flags)
        assert config.use_lora is False and config.learning_rate in (3.0, 3e-4)
        assert config.tasks in ("all", "next_sid,sid_to_title")


def test_values_are_checked_without_touching_files(tmp_path):
    """from_kwargs checks values only; the files they name are check_paths()'s job, run by the command."""
    from minirec.rl import RLConfig

    config = RLConfig.from_kwargs(model_path=str(tmp_path / "nowhere"), output_dir=str(tmp_path / "rl"))
    with pytest.raises(MinirecError, match="no such directory"):
        config.check_paths()
    with pytest.raises(MinirecError, match="no such directory"):
        RLConfig.checked(model_path=str(tmp_path / "nowhere"))


def test_sub_commands(capsys):
    from minirec.sid.build import BuildConfig, main

    group = {"build": Command("-m minirec.sid build", BuildConfig, main)}
    with pytest.raises(SystemExit) as e:
        run(group, argv=["biuld"], group="-m minirec.sid")
    assert e.value.code == 2 and "unknown command 'biuld' (did you mean build?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(group, argv=[], group="-m minirec.sid")
    assert capsys.readouterr().err.startswith("error: name a command")
    run(group, argv=["--help"], group="-m minirec.sid")
    assert capsys.readouterr().out.startswith("usage: python -m minirec.sid {build}")
