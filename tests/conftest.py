import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import `helpers`


@pytest.fixture(scope="session")
def tiny3_weights(tmp_path_factory) -> str:
    """A random rtmdet-tiny checkpoint (seed 0) with classes a, b, c and a 64 px test size: what
    the CLI tests predict with."""
    from helpers import save_random_checkpoint
    return str(save_random_checkpoint(tmp_path_factory.mktemp("tiny3") / "m.pth", class_names=["a", "b", "c"],
                                      imgsz=64, seed=0))
