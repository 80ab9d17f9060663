"""A collaborative teacher: a trained SASRec dir -> log-probabilities of SIDs and SID prefixes.

``python -m minirec.baselines sasrec --output_dir DIR`` leaves in DIR, beside its metrics.json:

* ``model.safetensors``: the best epoch's weights;
* ``teacher.json``: the model's config, the item order its score columns follow, and the
  SHA-256 of the catalogue's index.json it was trained on.

:func:`load_teacher` reads them back as a :class:`CFTeacher`, refusing (one line) a dir without
weights or a teacher trained on another catalogue. The teacher scores a history without its
target (it never sees one): ``item_logp`` is a softmax over every catalogue item; a SID's
probability is the sum over its collision group, a prefix's the sum over its subtree, each a
log-sum-exp in log space (no underflow at 4k items). :class:`PrefixScores` lays those on a
:class:`~minirec.constrained.SIDTrie`'s nodes, which is what CF-guided beam search
(:func:`minirec.beam.constrained_beam_search`) adds at every step.
"""

import json
import math
from pathlib import Path

import torch

from minirec.baselines.sasrec import SASRec, SASRecConfig, history_batch
from minirec.errors import MinirecError
from minirec.io import atomic_path, read_text, write_json

WEIGHTS, TEACHER_FILE = "model.safetensors", "teacher.json"
HOW_TO_TRAIN = "train one with python -m minirec.baselines sasrec --data_dir <the run's dataset> --output_dir DIR"


def check_cf_options(cf_model: str, cf_weight) -> None:
    """The flags of CF-guided decoding (evaluate.py, minirec.recommend), as one-line errors."""
    if cf_weight is not None and not cf_model:
        raise MinirecError(f"--cf_weight {cf_weight} needs --cf_model DIR (a SASRec output dir); {HOW_TO_TRAIN}")
    if cf_model and cf_weight is None:
        raise MinirecError(f"--cf_model {cf_model} needs --cf_weight W (choose W on valid with bench/cf_weight.py; "
                           "0 = the model alone)")
    if cf_weight is not None and not (cf_weight >= 0 and math.isfinite(cf_weight)):
        raise MinirecError(f"--cf_weight {cf_weight}: must be a finite number >= 0 (0 = the model alone)")


def check_teacher_dir(path) -> None:
    """A teacher dir's files are there (before an output dir is made; the contents load later)."""
    root = Path(path)
    if not root.is_dir():
        raise MinirecError(f"--cf_model {path}: no such directory; {HOW_TO_TRAIN}")
    if not (root / TEACHER_FILE).is_file() or not (root / WEIGHTS).is_file():
        raise MinirecError(f"--cf_model {path}: no {TEACHER_FILE} and {WEIGHTS} (not a SASRec dir, or one trained "
                           f"before SASRec saved its weights); {HOW_TO_TRAIN}")


def save_teacher(model: SASRec, config: SASRecConfig, items: list[str], index_sha256: str, out_dir) -> None:
    """The weights, then teacher.json last (its presence marks a complete teacher)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    model_fields = ("max_len", "hidden_size", "num_layers", "num_heads", "inner_size", "dropout")
    write_json(out / TEACHER_FILE, {"kind": "sasrec", "config": {k: getattr(config, k) for k in model_fields},
                                    "index_sha256": index_sha256, "data_dir": str(Path(config.data_dir).resolve()),
                                    "seed": config.seed, "items": list(items)})


SHIFT_RANGE = 80.0  # exp(-80) is still a normal float32: within this of a row's max, one shift is exact


def group_logsumexp(values: torch.Tensor, columns: torch.Tensor, groups: torch.Tensor, size: int) -> torch.Tensor:
    """``out[b, g] = logsumexp(values[b, columns[e]] for e with groups[e] == g)``; -inf for an empty group.

    ``values`` [B, N] log-probabilities; ``columns``/``groups`` [E] pairs. Each row is shifted by its
    max and summed with one ``index_add_``; a row holding values more than ``SHIFT_RANGE`` below its
    max (whose exponentials could underflow) takes the exact per-group shift instead. One shift,
    item-major: 300 rows x 11k pairs in ~0.04 s on one (busy) CPU thread, against 0.85 s with a
    shift per group (the beam and SFT distillation call it once per batch)."""
    top = values.max(-1, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    # item-major: exponentiate the items once, then gather and add whole rows of B values
    picked = (values - top).exp().T.contiguous()[columns]  # [E, B]
    out = torch.zeros((size, values.shape[0]), dtype=values.dtype, device=values.device)
    out = out.index_add_(0, groups, picked).T.log() + top
    spread = ((values < top - SHIFT_RANGE) & torch.isfinite(values)).any(-1)
    if spread.any():
        out[spread] = _group_logsumexp_exact(values[spread], columns, groups, size)
    return out


def _group_logsumexp_exact(values, columns, groups, size) -> torch.Tensor:
    """:func:`group_logsumexp` with a max shift per group: exact at any spread, ~15x slower."""
    picked = values[:, columns]  # [B, E]
    top = torch.full((values.shape[0], size), float("-inf"), dtype=values.dtype, device=values.device)
    top.scatter_reduce_(1, groups.expand_as(picked), picked, reduce="amax")
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros_like(top).scatter_add_(1, groups.expand_as(picked), (picked - safe[:, groups]).exp())
    return total.log() + safe


class CFTeacher:
    """A trained SASRec and the item order of its score columns; histories are item-id lists."""

    def __init__(self, model: SASRec, config: SASRecConfig, items: list[str], index_sha256: str, source: str):
        self.model, self.config, self.items = model.eval(), config, items
        self.index_sha256, self.source = index_sha256, source
        self.ids = {item: i for i, item in enumerate(items, 1)}  # model ids; 0 is padding

    def check_catalogue(self, catalogue, what="the run's") -> None:
        if catalogue.index_sha256 != self.index_sha256:
            raise MinirecError(f"--cf_model {self.source}: trained on another catalogue than {what} (index.json "
                               f"sha256 {self.index_sha256[:12]} vs {catalogue.index_sha256[:12]}); {HOW_TO_TRAIN}")

    def to(self, device):
        self.model.to(device)
        return self

    @torch.no_grad()
    def item_logp(self, histories) -> torch.Tensor:
        """[B, N] log-softmax over every item (column j is ``items[j]``) after each history."""
        device = next(self.model.parameters()).device
        x, last = history_batch(histories, self.ids, self.config.max_len)
        hidden = self.model(x.to(device))[torch.arange(len(histories), device=device), last.to(device)]
        return self.model.scores(hidden).float().log_softmax(-1)

    def _sid_groups(self, catalogue):
        """(distinct SIDs, SID -> column, item column -> SID column), made once per catalogue."""
        if getattr(self, "_groups_of", None) != catalogue.index_sha256:
            sids = catalogue.distinct_sids()
            position = {s: g for g, s in enumerate(sids)}
            self._groups = sids, position, torch.tensor([position[catalogue.sid(item)] for item in self.items])
            self._groups_of = catalogue.index_sha256
        return self._groups

    def sid_table(self, histories, catalogue) -> torch.Tensor:
        """[B, S] log-probability of each distinct SID (``catalogue.distinct_sids()`` order): its
        collision group's items summed."""
        sids, _, groups = self._sid_groups(catalogue)
        logp = self.item_logp(histories)
        return group_logsumexp(logp, torch.arange(len(self.items), device=logp.device), groups.to(logp.device),
                               len(sids))

    def sid_logp(self, histories, catalogue, wanted=None, batch_size=256) -> list[dict]:
        """Per history, {SID: log-probability of its collision group}, over the row's ``wanted`` SIDs
        (a list per row) or, without ``wanted``, over every catalogue SID (S floats a row: small
        catalogues only). Rows go through the teacher ``batch_size`` at a time."""
        sids, position, _ = self._sid_groups(catalogue)
        out = []
        for start in range(0, len(histories), batch_size):
            table = self.sid_table(histories[start : start + batch_size], catalogue)
            if wanted is None:
                out += [dict(zip(sids, row)) for row in table.tolist()]
                continue
            for row, want in zip(table, wanted[start : start + batch_size]):
                values = row[torch.tensor([position[s] for s in want], dtype=torch.long, device=row.device)]
                out.append(dict(zip(want, values.tolist())))
        return out

    def top_sids(self, histories, catalogue, n: int, batch_size=256) -> list[list[tuple[str, float]]]:
        """Per history, the teacher's ``n`` most probable SIDs with their log-probabilities, best first."""
        sids, _, _ = self._sid_groups(catalogue)
        out = []
        for start in range(0, len(histories), batch_size):
            top = self.sid_table(histories[start : start + batch_size], catalogue).topk(min(n, len(sids)), dim=-1)
            out += [[(sids[j], v) for j, v in zip(idx, val)] for idx, val in zip(top.indices.tolist(),
                                                                                 top.values.tolist())]
        return out

    def describe(self) -> dict:
        return {"path": str(self.source), "index_sha256": self.index_sha256}


def load_teacher(path, catalogue=None) -> CFTeacher:
    """A teacher dir -> :class:`CFTeacher` (CPU, eval mode), checked against ``catalogue`` if given."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    check_teacher_dir(root)
    try:
        meta = json.loads(read_text(root / TEACHER_FILE))
        config = SASRecConfig(**meta["config"])
        items, sha = [str(i) for i in meta["items"]], str(meta["index_sha256"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MinirecError(f"{root / TEACHER_FILE}: unreadable teacher description ({e!r}); {HOW_TO_TRAIN}")
    model = SASRec(len(items), config)
    try:
        model.load_state_dict(load_file(str(root / WEIGHTS)))
    except (SafetensorError, RuntimeError, OSError) as e:
        raise MinirecError(f"{root / WEIGHTS}: cannot load the teacher's weights ({str(e).splitlines()[0]}); "
                           f"{HOW_TO_TRAIN}")
    teacher = CFTeacher(model, config, items, sha, str(path))
    if catalogue is not None:
        teacher.check_catalogue(catalogue)
        if set(items) != set(catalogue.sids):
            raise MinirecError(f"--cf_model {path}: its items differ from the catalogue's; {HOW_TO_TRAIN}")
    return teacher


class PrefixScores:
    """The teacher's log-probabilities laid on a trie's nodes, times a weight, for CF-guided beams.

    For each history, ``subtree[b, node]`` is W x log p_CF(the prefix that ends at ``node``) (the
    sum over every SID below it) and ``terminal[b, node]`` is W x log p_CF(the SID that ends there)
    (-inf where none does; a node can be both when SIDs of mixed depth share a prefix). Two extra
    columns stand for the trie's DONE and DEAD states (-inf)."""

    def __init__(self, teacher: CFTeacher, catalogue, trie, sid_token_ids, weight: float):
        self.teacher, self.weight, self.width = teacher, weight, trie.num_nodes + 2
        position = {item: j for j, item in enumerate(teacher.items)}
        sub_cols, sub_nodes, end_cols, end_nodes = [], [], [], []
        self.prefix_node = {(): 0}  # SID token-id prefix -> trie node (SFT distillation reads it)
        for sid, group in catalogue.items_by_sid.items():
            tokens = tuple(sid_token_ids(sid))
            path = trie.node_path(tokens)
            for k, node in enumerate(path):
                self.prefix_node[tokens[:k + 1]] = node
            for item in group:
                sub_cols += [position[item]] * len(path)
                sub_nodes += path
                end_cols.append(position[item])
                end_nodes.append(path[-1])
        device = trie.edge_keys.device
        self.sub = (torch.tensor(sub_cols, device=device), torch.tensor(sub_nodes, device=device))
        self.end = (torch.tensor(end_cols, device=device), torch.tensor(end_nodes, device=device))

    def sid_scores(self, histories, catalogue, wanted) -> list[dict]:
        """Per history, {SID: W x log p_CF(SID)} over its ``wanted`` SIDs: what the fused beam adds to a
        finished SID."""
        rows = self.teacher.sid_logp(histories, catalogue, wanted)
        return [{sid: self.weight * v for sid, v in row.items()} for row in rows]

    def tables(self, histories) -> tuple[torch.Tensor, torch.Tensor]:
        """(subtree, terminal), each [B, nodes + 2], weighted."""
        logp = self.teacher.item_logp(histories).to(self.sub[0].device)
        subtree = group_logsumexp(logp, *self.sub, self.width)
        terminal = group_logsumexp(logp, *self.end, self.width)
        # -inf (no SID there) stays -inf at any weight, 0 included
        return tuple(torch.where(torch.isfinite(t), t * self.weight, t) for t in (subtree, terminal))
