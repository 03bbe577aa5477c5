import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module's torch on one thread, as lib.device.tune_for_small_models does for the
    book's small networks: they gain nothing from threads, and on a busy machine threads waiting
    for each other made small forward passes up to a hundred times slower. Restored after."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
