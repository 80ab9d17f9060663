"""The device rule, the batch layout and the shipped launcher configs, with simulated ranks.

No GPU is needed: ``torch.cuda.is_available``/``device_count`` are patched, and every launcher
variable is set with monkeypatch, so nothing outlives a test (a leaked LOCAL_RANK once made
every later in-process training expect a rendezvous).
"""

from pathlib import Path

import pytest
import torch

from minirec import distributed
from minirec.distributed import batch_layout, process_device, quantized_device_map, to_process_device
from minirec.errors import MinirecError
from tests.conftest import INDUSTRIAL, ROOT

LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_DEEPSPEED",
            "ACCELERATE_DEEPSPEED_CONFIG_FILE")


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: pretend n CUDA devices are visible (0 = none); launcher variables start unset."""
    for name in LAUNCHER:
        monkeypatch.delenv(name, raising=False)

    def set_count(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)

    return set_count


@pytest.mark.parametrize("count, local_rank, expected", [
    (0, None, "cpu"), (0, "3", "cpu"),          # no GPU: every rank on the CPU
    (8, None, "cuda:0"), (8, "0", "cuda:0"), (8, "5", "cuda:5"), (4, "3", "cuda:3"),
    (1, "3", "cuda:0"),                         # one visible GPU per process (CUDA_VISIBLE_DEVICES per rank)
])
def test_each_rank_uses_the_device_of_its_local_rank(gpus, monkeypatch, count, local_rank, expected):
    gpus(count)
    if local_rank is not None:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert process_device() == torch.device(expected)
    assert quantized_device_map() == {"": "cpu" if expected == "cpu" else int(expected[-1])}


def test_more_ranks_than_gpus_is_an_error(gpus, monkeypatch):
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(MinirecError, match="LOCAL_RANK 2 but only 2 GPUs"):
        process_device()
    monkeypatch.setenv("LOCAL_RANK", "two")
    with pytest.raises(MinirecError, match="not an integer"):
        process_device()


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_loads_land_on_their_rank_not_gpu_0(gpus, monkeypatch, tmp_path, quantization):
    """Before: device_map={"": 0} put every rank of a QLoRA job on GPU 0."""
    from minirec.modeling import loading

    gpus(4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    (tmp_path / "config.json").write_text("{}")
    seen = {}
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: type("T", (), {"pad_token": 0})())
    # a real (tiny) module comes back: load_base copies a quantized model's CPU weights off the file map
    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: seen.update(kw) or torch.nn.Linear(2, 2))
    loading.load_base(tmp_path, quantization)
    assert seen["device_map"] == {"": 3}


@pytest.mark.parametrize("quantized", [False, True])
def test_models_are_moved_to_the_process_device_unless_quantized(gpus, monkeypatch, quantized):
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    moved = []
    model = type("M", (), {"is_quantized": quantized, "to": lambda self, d: moved.append(d)})()
    assert to_process_device(model) is model
    assert moved == ([] if quantized else [torch.device("cuda", 1)])


def test_evaluate_and_recommend_place_their_model_by_the_rule(monkeypatch, tmp_path, catalogue):
    """Both commands move the model they load to this process's device (the rule's answer, here a
    marker device); a command that skipped to_process_device would decode on the CPU of every rank."""
    from minirec import decoding, evaluate, recommend
    from minirec.modeling import loading
    from minirec.run_info import RunInfo

    RunInfo("tiny", ".", "full", "compact", 10, ["next_sid"], str(INDUSTRIAL), catalogue.index_sha256).write(tmp_path)
    moved = []
    model = type("M", (), {"is_quantized": False, "to": lambda self, d: moved.append(d)})()
    monkeypatch.setattr(distributed, "process_device", lambda: torch.device("meta"))
    monkeypatch.setattr(loading, "load_trained", lambda path, **kw: (model, None, RunInfo.read(path)))
    no_predictions = lambda model, tokenizer, catalogue, histories, *a, **k: [[] for _ in histories]  # noqa: E731
    monkeypatch.setattr(evaluate, "rank_sids", no_predictions)
    monkeypatch.setattr(decoding, "rank_sids", no_predictions)
    monkeypatch.setattr(decoding, "build_trie", lambda *a: None)
    monkeypatch.setattr(evaluate, "build_trie", lambda *a: None)
    evaluate.evaluate(str(tmp_path), split="valid", max_rows=3, output_dir=str(tmp_path / "eval"))
    assert moved == [torch.device("meta")]
    recommend.main(recommend.RecommendConfig.from_kwargs(model_path=str(tmp_path), history="117"))
    assert moved == [torch.device("meta")] * 2


@pytest.mark.parametrize("batch, micro, world, multiple, expected", [
    (128, 32, 1, 1, (32, 4)), (128, 32, 2, 1, (32, 2)), (128, 32, 8, 1, (16, 1)),  # global batch kept
    (66, 16, 1, 1, (11, 6)), (32, 32, 2, 16, (16, 1)), (64, 64, 2, 16, (32, 1)),
])
def test_global_batch_is_the_same_for_any_process_count(batch, micro, world, multiple, expected):
    got = batch_layout(batch, micro, world, multiple)
    assert got == expected and got[0] * got[1] * world == batch and got[0] <= micro and got[0] % multiple == 0


@pytest.mark.parametrize("batch, micro, world, multiple", [(128, 32, 3, 1), (32, 32, 4, 16), (2, 2, 4, 1)])
def test_a_batch_that_cannot_split_is_an_error(batch, micro, world, multiple):
    with pytest.raises(MinirecError, match="does not split into"):
        batch_layout(batch, micro, world, multiple)


def test_batch_line():
    assert distributed.batch_line(16, 2, 4) == "global batch 128 rows = micro 16 x accumulation 2 x 4 processes"


DEEPSPEED = sorted((ROOT / "configs" / "deepspeed").glob("*.json"))
ACCELERATE = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.stem for p in DEEPSPEED} == {"zero2", "zero2_offload", "zero3"}
    assert {p.stem for p in ACCELERATE} == {p.stem for p in DEEPSPEED}


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.name)
def test_every_deepspeed_config_parses(path):
    """minirec's check (DeepSpeed's own zero-section model), then DeepSpeed's config parser itself."""
    pytest.importorskip("deepspeed")
    from minirec.deepspeed_config import check_deepspeed

    config = check_deepspeed(path)
    stage = 3 if "zero3" in path.name else 2
    assert config["zero_optimization"]["stage"] == stage
    assert config["bf16"]["enabled"] == "auto" and config["train_micro_batch_size_per_gpu"] == "auto"
    from transformers.integrations.deepspeed import HfDeepSpeedConfig

    assert HfDeepSpeedConfig(str(path)).get_value("zero_optimization.stage") == stage


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_every_accelerate_config_parses_and_names_its_deepspeed_json(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type == "DEEPSPEED"
    ds_file = Path(ROOT / config.deepspeed_config["deepspeed_config_file"])
    assert ds_file.is_file() and ds_file.stem == path.stem
    assert config.deepspeed_config["zero3_init_flag"] == (path.stem == "zero3")


def test_accelerate_launch_config_is_checked_like_the_flag(gpus, monkeypatch):
    """`accelerate launch --config_file X.yaml` passes its DeepSpeed JSON in the environment."""
    from minirec.deepspeed_config import config_path

    assert config_path("") == ""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "configs/deepspeed/zero3.json")
    assert config_path("") == "configs/deepspeed/zero3.json"
    assert config_path("configs/deepspeed/zero2.json") == "configs/deepspeed/zero2.json"
