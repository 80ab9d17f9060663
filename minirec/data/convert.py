"""Convert a MiniOneRec CSV dataset dir into the compact ``.inter`` form.

    python -m minirec.data.convert SRC_DIR DST_DIR

Validates every row against SRC_DIR/index.json, then writes DST_DIR/{split}.inter and
copies index.json / item.json. The result loads with ``load_dataset`` exactly like SRC_DIR.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

from minirec.config import Config
from minirec.data.readers import SPLITS, _split_file, load_dataset, write_inter
from minirec.errors import MinirecError


@dataclass
class ConvertConfig(Config):
    src: str
    """A dataset dir with index.json and train/valid/test .csv (or .inter) files."""
    dst: str
    """A new dataset dir for the .inter files and copies of index.json and item.json."""

    def output(self):
        return "DST", self.dst

    def check_paths(self) -> None:
        src, dst = Path(self.src), Path(self.dst)
        if dst.exists() and src.exists() and dst.resolve() == src.resolve():
            raise MinirecError(f"DST {dst} is SRC; convert into a new dir")
        taken = [p.name for p in (dst / n for n in ("index.json", "item.json", *(f"{s}.inter" for s in SPLITS)))
                 if p.exists()]
        if taken:
            raise MinirecError(f"DST {dst} already holds {', '.join(taken)}; pass a new dir (nothing was changed)")


def convert(src, dst) -> None:
    """:func:`main` for Python callers."""
    main(ConvertConfig.checked(src=src, dst=dst))


def main(config: ConvertConfig) -> None:
    """Convert a MiniOneRec CSV dataset dir (SRC) into the compact .inter form (DST), every row validated."""
    src, dst = Path(config.src), Path(config.dst)
    present = [s for s in SPLITS if _split_file(src, s) is not None]
    if not present:
        raise MinirecError(f"{src}: no train/valid/test .csv or .inter files to convert")
    data = load_dataset(src, splits=present)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("index.json", "item.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    for split, rows in data.splits.items():
        stem = _split_file(src, split).stem
        write_inter(dst / f"{stem}.inter", rows)
        print(f"{split}: {len(rows)} rows -> {dst / (stem + '.inter')}")


if __name__ == "__main__":
    from minirec.cli import Command, run

    run(Command("-m minirec.data.convert", ConvertConfig, main, positional=("src", "dst")))
