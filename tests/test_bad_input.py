"""Bad input to every command, one row each, run as the user runs it (a subprocess).

Each row must end with exit code 2 and exactly one stderr line, ``error: ...``, with no
traceback, and must leave the files untouched: nothing written (no partial output) and
nothing changed (a finished run is never damaged). Most rows fail before a model or a heavy
library loads, so the whole table stays around a minute on 2 cores.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import INDUSTRIAL, ROOT

INDEX = {"1": ["<a_1>", "<b_1>", "<c_1>"], "2": ["<a_1>", "<b_2>", "<c_1>"], "3": ["<a_2>", "<b_1>", "<c_1>"]}
ITEMS = {k: {"title": f"item {k}", "description": ""} for k in INDEX}
INTER = "user_id:token\titem_id_list:token_seq\titem_id:token\nu1\t1\t2\nu1\t1 2\t3\n"
CSV_HEADER = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
CSV_ROW = "u1,\"['item 1']\",item 2,[1],2,\"['<a_1><b_1><c_1>']\",<a_1><b_2><c_1>"


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)


def _dataset(root, **overrides):
    files = {"index.json": json.dumps(INDEX), "item.json": json.dumps(ITEMS),
             **{f"{s}.inter": INTER for s in ("train", "valid", "test")}, **overrides}
    for name, content in files.items():
        if content is not None:
            _write(root / name, content)
    return root


def _run_json(data_dir, mode="full"):
    sha = hashlib.sha256((data_dir / "index.json").read_bytes()).hexdigest()
    return json.dumps({"base_model": "tiny", "base_model_path": ".", "mode": mode, "template": "compact",
                       "max_history": 10, "tasks": ["next_sid"], "data_dir": str(data_dir), "sid_index_sha256": sha})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    data = _dataset(w / "data")
    _dataset(w / "bad_utf8_inter", **{"train.inter": INTER.encode() + b"u2\t1\t\xff2\n"})
    _dataset(w / "bad_utf8_index", **{"index.json": b'{"1": ["<a_1>"], "2": ["<a_\xe92>"]}'})
    _dataset(w / "csv_extra", **{"train.inter": None, "train.csv": CSV_HEADER + CSV_ROW + "\n" + CSV_ROW + ",extra\n"})
    _write(w / "events_bad.csv", b"user_id,item_id,timestamp\nu1,1,1\nu1,\xff2,2\n")
    _write(w / "events_extra.csv", "user_id,item_id,timestamp\nu1,1,1\nu1,2,2,5\n")
    _write(w / "seq.json", json.dumps({"u1": ["1", "2", "3"]}))
    _write(w / "items_bad.json", b'{"1": {"title": "caf\xe9"}}')
    _write(w / "ds_bad.json", "{ zero_optimization: 2 }")
    _write(w / "ds_typo.json", json.dumps({"zero_optimisation": {"stage": 2}}))
    _write(w / "ds_field.json", json.dumps({"zero_optimization": {"stage": 2, "overlap_com": True}}))
    _write(w / "run_ok" / "run.json", _run_json(data))
    _write(w / "half_run" / "checkpoint-1" / "trainer_state.json", "{}")
    for name, content in (("run.json", _run_json(data)), ("model.safetensors", b"weights"), ("metrics.json", "{}")):
        _write(w / "finished" / name, content)
    _teacher(w / "teacher_other", sha="0" * 64)  # a SASRec dir trained on another catalogue
    emb = np.ones((3, 4))
    np.save(w / "bare.npy", emb)  # no sidecar: its rows' items are unknown
    emb[1, 2] = np.nan
    np.save(w / "nan.npy", emb)
    # an interrupted run whose newest checkpoint holds a truncated adapter
    for step, cut in ((1, None), (2, 40)):
        ckpt = w / "rl_ckpt" / f"checkpoint-{step}"
        _write(ckpt / "trainer_state.json", json.dumps({"global_step": step}))
        _write(ckpt / "adapter_model.safetensors", _safetensors()[:cut])
    (w / "cwd").mkdir()
    return w


def _safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"lora_A": torch.ones(4, 2)})


def _teacher(out, sha):
    from minirec.baselines.sasrec import SASRec, SASRecConfig
    from minirec.teacher import save_teacher

    config = SASRecConfig(hidden_size=8, num_heads=1, inner_size=8, num_layers=1)
    save_teacher(SASRec(len(INDEX), config), config, list(INDEX), sha, out)


def snapshot(root):
    return {str(p.relative_to(root)): (p.is_dir(), p.is_file() and p.read_bytes()) for p in sorted(root.rglob("*"))}


SFT = ["sft.py", "--output_dir", "{w}/cwd/sft"]
RL = ["rl.py", "--model_path", "{w}/run_ok", "--output_dir", "{w}/cwd/rl"]
EVAL = ["evaluate.py", "--model_path", "{w}/run_ok"]
PREPARE = ["-m", "minirec.data.prepare", "--out", "{w}/cwd/prep", "--items", "{w}/data/item.json"]
CONVERT = ["-m", "minirec.data.convert"]
BUILD = ["-m", "minirec.sid", "build", "--items", "{w}/data/item.json", "--out", "{w}/cwd/index.json"]
REC = ["-m", "minirec.recommend", "--model_path", "{w}/run_ok", "--history", "1"]
MERGE = ["-m", "minirec.merge", "--model_path", "{w}/run_ok", "--output_dir", "{w}/cwd/merged"]
RL_RESUME = RL[:-1] + ["{w}/rl_ckpt", "--num_generations", "2", "--resume_from_checkpoint", "last"]

ZERO3 = ROOT / "configs" / "deepspeed" / "zero3.json"

CASES = [
    # data files: bad bytes, bad rows (file and line named)
    ("inter not utf-8", CONVERT + ["{w}/bad_utf8_inter", "{w}/cwd/conv"], "train.inter:4: not UTF-8 text (byte 0xff"),
    ("index not utf-8", REC + ["--data_dir", "{w}/bad_utf8_index"], "index.json:1: not UTF-8 text (byte 0xe9"),
    ("csv extra field", CONVERT + ["{w}/csv_extra", "{w}/cwd/conv"], "train.csv:3: 8 fields but the header has 7"),
    ("events not utf-8", PREPARE + ["--interactions", "{w}/events_bad.csv"], "events_bad.csv:3: not UTF-8"),
    ("events extra field", PREPARE + ["--interactions", "{w}/events_extra.csv"], "events_extra.csv:3: 4 fields"),
    ("item.json not utf-8", BUILD[:3] + ["--items", "{w}/items_bad.json", "--out", "{w}/cwd/i.json", "--codebook_size",
                                         "2"], "items_bad.json:1: not UTF-8"),
    ("eval data before model", EVAL + ["--data_dir", "{w}/bad_utf8_inter", "--split", "train"], "train.inter:4"),
    ("missing data dir", SFT + ["--data_dir", "no/such/dir"], "dataset directory not found"),
    ("unknown task", SFT + ["--data_dir", str(INDUSTRIAL), "--tasks", "next_sid,bogus"], "unknown task 'bogus'"),
    ("missing base model", SFT + ["--data_dir", str(INDUSTRIAL), "--base_model", "/no/such/model"],
     "nothing is downloaded"),
    # RL semantic reward
    ("nan embeddings", RL + ["--reward_type", "semantic", "--item_embeddings", "{w}/nan.npy", "--num_generations", "2"],
     "nan.npy: 1 row(s) hold NaN or inf (first: row 1, item '2')"),
    ("embeddings without sidecar", RL + ["--reward_type", "semantic", "--item_embeddings", "{w}/bare.npy",
                                         "--num_generations", "2"], "bare.npy: no sidecar bare.npy.json"),
    ("text init without sidecar", SFT + ["--data_dir", "{w}/data", "--sid_init", "text", "--item_embeddings",
                                         "{w}/bare.npy"], "bare.npy: no sidecar bare.npy.json"),
    # resume from a damaged checkpoint (sft.py's: tests/test_checkpoints.py)
    ("rl damaged checkpoint", RL_RESUME, "checkpoint-2/adapter_model.safetensors is damaged"),
    ("rl damaged checkpoint names the intact one", RL_RESUME,
     "pass --resume_from_checkpoint {w}/rl_ckpt/checkpoint-1 instead"),
    # deepspeed
    ("deepspeed missing", SFT + ["--deepspeed", "{w}/nope.json"], "no such config file"),
    ("deepspeed not json", SFT + ["--deepspeed", "{w}/ds_bad.json"], "ds_bad.json: not valid JSON"),
    ("deepspeed unknown key", SFT + ["--deepspeed", "{w}/ds_typo.json"],
     "unknown key 'zero_optimisation' (DeepSpeed would ignore it); did you mean 'zero_optimization'?"),
    ("deepspeed unknown zero field", SFT + ["--deepspeed", "{w}/ds_field.json"],
     "zero_optimization.overlap_com: Extra inputs are not permitted"),
    ("zero3 with a 4-bit base", SFT + ["--use_qlora", "True", "--deepspeed", str(ZERO3)],
     "ZeRO-3 partitions the weights, which a 4bit (bitsandbytes) base cannot be"),
    ("zero3 for rl", RL + ["--deepspeed", str(ZERO3)], "rl.py runs on ZeRO-2"),
    # output dirs holding something finished are never touched
    ("sft over a run", SFT + ["--output_dir", "{w}/finished"], "already holds a finished run"),
    ("sft resume a finished run", SFT + ["--output_dir", "{w}/finished", "--resume_from_checkpoint", "last"],
     "already holds a finished run"),
    ("rl over a run", RL + ["--output_dir", "{w}/finished"], "already holds a finished run"),
    ("rl over its own input", RL + ["--output_dir", "{w}/run_ok"], "already holds a finished run"),
    ("eval into a run", EVAL + ["--output_dir", "{w}/finished"], "holds a run (run.json)"),
    ("merge over a dir", MERGE[:-1] + ["{w}/finished"], "already exists"),
    ("merge a full run", MERGE, "a full run has no adapter to merge"),
    ("prepare over a dataset", PREPARE[:2] + ["--out", "{w}/data", "--items", "{w}/data/item.json", "--sequences",
                                              "{w}/seq.json"], "already holds a dataset"),
    ("convert over a dataset", CONVERT + ["{w}/csv_extra", "{w}/data"], "already holds index.json"),
    ("convert onto itself", CONVERT + ["{w}/data", "{w}/data"], "is SRC"),
    ("convert without splits", CONVERT + ["{w}/half_run", "{w}/cwd/o"], "no train/valid/test .csv or .inter files"),
    # --model_path that is not a (finished) run
    ("eval unfinished run", ["evaluate.py", "--model_path", "{w}/half_run"], "no run.json; an unfinished run"),
    ("rl no such dir", ["rl.py", "--model_path", "{w}/nowhere", "--output_dir", "{w}/cwd/rl"], "no such directory"),
    ("eval a file as run", ["evaluate.py", "--model_path", "{w}/seq.json"], "no such directory"),
    ("eval no such dir", ["evaluate.py", "--model_path", "{w}/nowhere"], "no such directory"),  # no dir made first
    # outputs that cannot be written: one line naming the path, before any dir is made
    ("sft output under a file", SFT[:1] + ["--output_dir", "{w}/seq.json/x", "--data_dir", str(INDUSTRIAL)],
     "seq.json is not a directory"),
    ("report out in /proc", ["-m", "minirec.report", "--runs", "{w}/finished", "--out", "/proc/xx/report.md"],
     "--out /proc/xx/report.md: cannot take its lock"),
    ("baseline output the root", ["-m", "minirec.baselines", "popularity", "--data_dir", "{w}/data", "--output_dir",
                                  "/"], "--output_dir /: the current directory or one above it"),
    ("sft output the cwd", SFT[:1] + ["--output_dir", ".", "--data_dir", str(INDUSTRIAL)], "the current directory"),
    ("sft empty data dir", SFT + ["--data_dir", ""], "--data_dir is empty"),
    ("recommend not a run", ["-m", "minirec.recommend", "--model_path", "{w}/data", "--history", "1"], "not a run dir"),
    ("merge unfinished run", ["-m", "minirec.merge", "--model_path", "{w}/half_run", "--output_dir", "{w}/cwd/m"],
     "an unfinished run"),
    # flags, on every command
    ("typo suggestion", EVAL + ["--num_beam", "5"], "unknown flag(s) --num_beam (did you mean --num_beams?)"),
    ("bool spelling", SFT + ["--use_lora", "maybe"], "--use_lora 'maybe': expected a boolean"),
    ("float spelling", RL + ["--beam_search", "false", "--reward_type", "rule,prefix", "--temperature", "warm"],
     "--temperature 'warm': expected a finite number"),
    ("int spelling", BUILD + ["--levels", "2.0"], "--levels '2.0': expected an integer"),
    ("bool is not 2", MERGE + ["--trust_remote_code", "2"], "--trust_remote_code '2': expected a boolean"),
    ("unknown sub-command", ["-m", "minirec.sid", "biuld"], "unknown command 'biuld' (did you mean build?)"),
    ("baseline flag", ["-m", "minirec.baselines", "popularity", "--data_dir", "{w}/data", "--top-k", "x"],
     "--top_k 'x': expected an integer"),
    ("report before evaluation", ["-m", "minirec.report", "--runs", "{w}/run_ok", "--out", "{w}/cwd/r.md"],
     "cannot read metrics"),
    ("stray argument", CONVERT + ["a", "b", "c"], "unexpected argument(s) 'c'"),
    # combinations that mean nothing
    ("qlora and 8bit", SFT + ["--use_qlora", "true", "--load_in_8bit", "true"], "exclude each other"),
    ("lora flags on full", SFT + ["--lora_r", "16"], "--lora_r applies only to LoRA training"),
    ("batch not a multiple", SFT + ["--batch_size", "100", "--micro_batch_size", "32"], "not a multiple"),
    ("ranking with samples", RL + ["--beam_search", "False"], "rewards beam ranks, which samples do not have"),
    ("temperature with beams", RL + ["--temperature", "0.7"], "--temperature applies only to sampled rollouts"),
    ("history and interactive", REC + ["--interactive", "true"], "exclude each other"),
    ("cf weight without teacher", EVAL + ["--cf_weight", "1"], "--cf_weight 1.0 needs --cf_model DIR"),
    ("cf teacher without weight", EVAL + ["--cf_model", "{w}/teacher_other"], "needs --cf_weight W"),
    ("cf weight negative", EVAL + ["--cf_model", "{w}/teacher_other", "--cf_weight", "-1"], "finite number >= 0"),
    ("cf weight nan", EVAL + ["--cf_model", "{w}/teacher_other", "--cf_weight", "nan"], "a finite number"),
    ("cf teacher missing", EVAL + ["--cf_model", "{w}/nowhere", "--cf_weight", "1"], "no such directory"),
    ("cf teacher without weights", EVAL + ["--cf_model", "{w}/finished", "--cf_weight", "1"],
     "no teacher.json and model.safetensors"),
    ("cf teacher of another catalogue", EVAL + ["--cf_model", "{w}/teacher_other", "--cf_weight", "1"],
     "trained on another catalogue"),
    ("recommend cf teacher of another catalogue", REC + ["--cf_model", "{w}/teacher_other", "--cf_weight", "1"],
     "trained on another catalogue"),
    ("recommend cf weight alone", REC + ["--cf_weight", "0.5"], "needs --cf_model DIR"),
    ("rl cf reward without teacher", RL + ["--reward_type", "ranking,cf:0.5"], "cf needs --cf_model DIR"),
    ("rl teacher without cf reward", RL + ["--cf_model", "{w}/teacher_other"], "applies only with a cf reward"),
    ("rl cf teacher of another catalogue", RL + ["--reward_type", "ranking,cf:0.5", "--cf_model", "{w}/teacher_other",
                                                "--num_generations", "2"],
     "trained on another catalogue"),
    ("rqvae epochs", BUILD + ["--rqvae_epochs", "5"], "--rqvae_epochs applies only to --method rqvae"),
    ("repeat decay without bonus", EVAL + ["--repeat_decay", "0.8"], "--repeat_decay applies only with --repeat_bonus"),
    ("recommend repeat decay without bonus", REC + ["--repeat_prior", "0.5", "--repeat_decay", "0.8"],
     "--repeat_decay applies only with --repeat_bonus"),
    ("keep margin without keep best", RL + ["--keep_best", "False", "--keep_margin", "3"],
     "--keep_margin applies only with --keep_best True"),
    ("prompt order of all prompts", RL + ["--prompt_order", "recent"],
     "--prompt_order applies only with --max_prompts N"),
    ("merge weights of a full run", EVAL + ["--merge_weights", "True"], "is a full run: it has no adapter to merge"),
    ("recommend merge weights of a full run", REC + ["--merge_weights", "True"],
     "is a full run: it has no adapter to merge"),
    ("min_rating on sequences", PREPARE + ["--sequences", "{w}/seq.json", "--min_rating", "3"], "needs rated events"),
]


@pytest.mark.parametrize("name, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, name, argv, message):
    before = snapshot(world)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = [a.format(w=world) for a in argv]
    if args[0].endswith(".py"):
        args[0] = str(ROOT / args[0])
    proc = subprocess.run([sys.executable, *args], cwd=world / "cwd", env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    message = message.replace("{w}", str(world))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert snapshot(world) == before, "files were written or changed"
