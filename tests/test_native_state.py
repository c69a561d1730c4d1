"""Native libraries' process state meeting later forks and signals.

Each check runs in a fresh interpreter: what it tests is the state a process is left in, so it
must neither inherit the suite's state nor leave its own to later tests.
"""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The product's OpenVINO path (two compiled models, bf16 probed), the models dropped in the
# order they were made, then what a scan does next: DataLoader workers forked and reaped
# (SIGCHLD), a subprocess, and a Python signal handler run. With one openvino.Core per call
# (before the fix) the CPU plugin left the main thread's alternate signal stack on an unmapped
# buffer and the first SIGCHLD killed the process (SIGSEGV, si_code SI_KERNEL).
OPENVINO_THEN_FORK = textwrap.dedent("""
    import faulthandler, gc, signal, subprocess, sys
    faulthandler.enable()
    import numpy as np, torch
    from dqaudit.embed import encode_batch, load_encoder
    from dqaudit.embed.backends import cpu_has_bf16, with_backend

    cache = sys.argv[1]
    base = load_encoder("lite0", image_size=64)
    batch = np.zeros((2, 3, 64, 64), dtype=np.uint8)
    first = with_backend(base, "openvino", cache_dir=cache, required=True)
    encode_batch(first, batch, "cpu")
    cpu_has_bf16()
    second = with_backend(base, "openvino-bf16", cache_dir=cache)
    encode_batch(second, batch, "cpu")
    del first; gc.collect(); del second; gc.collect()

    hits = []
    signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
    signal.raise_signal(signal.SIGUSR1)
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2, num_workers=2)
    assert sum(len(b) for b in loader) == 8
    for _ in range(3):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert hits == [1]
    print("survived")
""")


def test_openvino_then_forks_and_signals_do_not_crash(tmp_path):
    pytest.importorskip("openvino")
    res = subprocess.run([sys.executable, "-c", OPENVINO_THEN_FORK, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    assert "survived" in res.stdout
