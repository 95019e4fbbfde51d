"""utils.device.resolve_device: the one --device resolver of inference, evaluation, training and guide masks."""
import pytest
import torch

from utils.cli import UserError
from utils.device import resolve_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown --device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(UserError, match="CUDA is not available"):
                resolve_device(name)
