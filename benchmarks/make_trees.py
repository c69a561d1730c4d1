"""Build user-style datasets from ../shared/data: class-folder trees (symlinks) and manifests.

    .venv/bin/python benchmarks/make_trees.py OUT_DIR [--label aggre]

Writes OUT_DIR/cifar10n-<label>/<class>/<file>.jpg (symlinks to the shared images) and
OUT_DIR/cifar10h.csv (paths + n_<class> count columns), the inputs a user would hand to
`dqaudit scan`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import common


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--label", default="aggre", choices=["clean", *common.NOISE_SETS])
    args = ap.parse_args()
    df = common.cifar10n_table()
    tree = args.out / f"cifar10n-{args.label}"
    for path, label in zip(df["path"], df[args.label]):
        dst = tree / label / Path(path).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(path, dst)
    h = common.cifar10h_table()
    cols = [c for c in h.columns if c.startswith("n_")]
    h[["path", *cols]].to_csv(args.out / "cifar10h.csv", index=False)
    print(f"wrote {tree} ({len(df)} images) and {args.out / 'cifar10h.csv'} ({len(h)} rows)")


if __name__ == "__main__":
    main()
