"""One intra-op torch thread for a test module (import the fixture; it is autouse).

The CI machine has 2 shared cores: one thread per test worker is faster and steadier there.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
