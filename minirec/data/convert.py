"""Convert a MiniOneRec CSV dataset dir into the compact ``.inter`` form.

    python -m minirec.data.convert SRC_DIR DST_DIR

Validates every row against SRC_DIR/index.json, then writes DST_DIR/{split}.inter and
copies index.json / item.json. The result loads with ``load_dataset`` exactly like SRC_DIR.
"""

import shutil
from pathlib import Path

from minirec.cli import run_cli
from minirec.data.readers import SPLITS, _split_file, load_dataset, write_inter
from minirec.errors import MinirecError


def convert(src: str, dst: str) -> None:
    src, dst = Path(src), Path(dst)
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
    run_cli(convert)
