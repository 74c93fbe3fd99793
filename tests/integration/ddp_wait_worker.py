"""Run under torchrun by test_training.py: rank 0 works alone for a while (as it validates,
saves and uploads) while the others wait for it, through the trainer's own helpers."""

import sys
import time
from pathlib import Path

from emoflow.training.distributed import (
    all_sum,
    broadcast_object,
    init_distributed,
    shutdown,
    wait_for_all,
)

out, alone_s = Path(sys.argv[1]), float(sys.argv[2])
d = init_distributed()
total = all_sum([1.0], d)  # a collective of every rank: the main group works
if d.main:
    time.sleep(alone_s)  # rank 0 alone, longer than the main group's timeout
val = broadcast_object({"war": 0.5} if d.main else None, d)
if d.main:
    time.sleep(alone_s)
wait_for_all()
(out / f"rank{d.rank}.txt").write_text(f"{total[0]} {val}")
shutdown()
