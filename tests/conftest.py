import pytest
import torch

# Small tensors dominate the suite: one thread is several times faster than two on small CPUs.
torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)




@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group (torch.distributed initialised) for the test's duration."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
