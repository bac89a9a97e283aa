"""Shared test fixtures: every test starts from a fixed global seed."""

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: the suite is many small kernels, and on a shared 2-core machine two OpenMP
    threads spin against each other (10x slower seen here). Restored after each test."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
