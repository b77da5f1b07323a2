"""Reads a run directory's TensorBoard event files with TensorBoard's own reader
(EventAccumulator, as `tensorboard --logdir` loads them) and prints JSON:
{"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height], ...]},
 "texts": {tag: [[step, text], ...]}, "files": n}. Usage: tensorboard_read.py RUN_DIR"""
import glob
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

run = sys.argv[1]
ea = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
ea.Reload()
tags = ea.Tags()
out = {
    "scalars": {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]},
    "images": {t: [[e.step, e.width, e.height] for e in ea.Images(t)] for t in tags["images"]},
    "texts": {
        t: [[e.step, e.tensor_proto.string_val[0].decode()] for e in ea.Tensors(t)]
        for t in tags["tensors"]
    },
    "files": len(glob.glob(os.path.join(run, "events.out.tfevents.*"))),
}
print(json.dumps(out))
