"""Exit 0 when FiftyOne's database starts and a dataset can be created, 1 otherwise.

Used by scripts/setup.sh to decide whether the offline database fallback is needed.
"""

import os
import sys

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

try:
    import fiftyone as fo

    name = "dqaudit-setup-check"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name)
    ds.delete()
except Exception as exc:  # any failure means the database is not usable
    print(f"FiftyOne database check failed: {type(exc).__name__}: {exc}".splitlines()[0],
          file=sys.stderr)
    sys.exit(1)
print("FiftyOne database: ok")
