"""Run under torchrun by test_training.py: train, then save this rank's final weights."""

import os
import sys
from pathlib import Path

import torch

from emoflow.config import load_params
from emoflow.training.distributed import shutdown
from emoflow.training.trainer import train_model

params, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
result = train_model("deep_emotion", load_params(params), data / "faces", data / "splits", out)
torch.save({"state": result.model.state_dict(), "history": result.history},
           out / f"rank{os.environ['RANK']}.pt")
shutdown()
