"""Fixtures: tiny models built offline; a guard that fails any test touching the network."""

import os
import socket
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402

import tinymodels  # noqa: E402

_real_connect = socket.socket.connect


def _local_only_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host in ("localhost", "::1", "0.0.0.0") or host.startswith("127.") or host.startswith("/")):
        return _real_connect(self, address)
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect(self, address)
    raise RuntimeError(f"test tried to reach the network: {address!r}")


@pytest.fixture(autouse=True, scope="session")
def no_network():
    socket.socket.connect = _local_only_connect
    yield
    socket.socket.connect = _real_connect


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "browser: drives headless Chromium")
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    """Tiny random BERT QA model (structure tests)."""
    return tinymodels.make_random_model(tmp_path_factory.mktemp("random_tiny"))


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """Small BERT trained for 400 steps on templated facts: it really answers."""
    return tinymodels.make_trained_model(tmp_path_factory.mktemp("trained_tiny"), steps=400)


@pytest.fixture(scope="session")
def trained(trained_model_dir):
    from quant import Comparator

    return Comparator(str(trained_model_dir), log=None)


@pytest.fixture(scope="session")
def app_url(trained_model_dir, tmp_path_factory):
    """The app (all variants) launched in this process on a free port, as its tests need it."""
    import app as app_module
    from quant import Comparator

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio_tmp"))
    demo = app_module.build_demo(Comparator(str(trained_model_dir), variants=app_module.ALL_VARIANTS, log=None))
    demo.launch(prevent_thread_lock=True, quiet=True, **app_module.launch_kwargs(port=None))
    try:
        yield demo.local_url
    finally:
        demo.close()
