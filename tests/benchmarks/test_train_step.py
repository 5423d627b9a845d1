"""train_step.py's CPU memory figure: the peak of live tensors during one step, on top of what is held."""
import torch

from benchmarks import train_step


def test_tensor_peak_counts_held_tensors_and_the_largest_transient():
    mib = 2**20
    held = torch.zeros(mib // 4)  # 1 MiB held between steps

    def step():
        first = torch.ones(2 * mib // 4)  # 2 MiB
        second = torch.ones(3 * mib // 4)  # 3 MiB while the first is alive: peak 5 MiB
        del first, second
        third = torch.ones(4 * mib // 4)  # 4 MiB alone
        del third

    step.held = lambda: held.numel() * held.element_size()
    peak = train_step.cpu_tensor_peak_mib(step)
    assert 6.0 <= peak < 6.1


def test_held_bytes_are_parameters_optimiser_state_and_batch():
    model = torch.nn.Linear(10, 10)  # 110 parameters
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.zeros(4, 10)
    model(x).sum().backward()
    optimizer.step()  # two state tensors per parameter (+ a step count)
    assert train_step.held_bytes(model, optimizer, x) >= 4 * (3 * 110 + 40)
