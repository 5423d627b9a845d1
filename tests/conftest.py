import pytest
import torch

# Small tensors dominate the suite: one thread is several times faster than two on small CPUs.
torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


