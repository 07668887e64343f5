"""Set-up shared by every test file (the pytest configuration itself is tests/pytest.ini).

The tests run tiny networks whose tensor operations are far too small for intra-op threads: on a busy
2-core machine torch's OpenMP threads spin waiting for each other, and a training step of the tiny
TIM-Net cost about 50 times the CPU time it costs on one thread. So the tests run torch on one thread,
as serkit's own jobs do (``--num-threads`` defaults to 1), and so do the processes they start.
"""
import os

import torch

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
