"""Hugging Face Spaces: ZeroGPU keeps the line in the app's process; what a Space installs is what was tested."""

import multiprocessing
import os
import threading

import pytest

import tinymodels
from quant import gpu as quant_gpu
from quant.serving import CompareService, Scheduler
from quant.variants import _Variant


def fork_per_call(fn, duration=None):
    """A stand-in for ZeroGPU's @spaces.GPU: every call runs `fn` in a process forked for it, with its arguments
    and result pickled across (spaces 0.51.3, zero/wrappers.py), and asks for `duration(*args)` seconds."""
    asked, pids = [], []

    def call(*args, **kwargs):
        import torch

        asked.append(duration(*args, **kwargs))
        # the real worker runs CUDA; this one runs the CPU, whose OpenMP pool does not survive a fork: one thread
        with multiprocessing.get_context("fork").Pool(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            pids.append(pool.apply(os.getpid))
            return pool.apply(fn, args, kwargs)

    call.asked, call.pids = asked, pids
    return call


def test_zerogpu_times_only_cuda_in_its_worker_and_the_line_stays_here(trained_model_dir):
    """Two identical requests on a (faked) ZeroGPU Space share one measurement: the line and the stored results
    live in the app's process; only the CUDA variant's timing goes to the forked GPU worker, once."""
    from quant import ModelSet

    models = ModelSet(str(trained_model_dir), variants=("fp32-cpu", "int8-cpu", "fp32-cuda"), log=None)
    models._variants["fp32-cuda"] = _Variant("fp32-cuda", models.fp32_eager, "cpu")  # the GPU, played by the CPU
    runner = fork_per_call(quant_gpu.time_cuda, duration=quant_gpu.duration)
    quant_gpu.use(runner)
    try:
        svc = CompareService(models, Scheduler())
        ex = tinymodels.held_out_examples(1, seed=85)[0]
        out = [None, None]
        ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, svc.compare(
            ex.context, ex.question, 3, ("fp32-cpu", "int8-cpu", "fp32-cuda"), session=f"v{i}"))) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
    finally:
        quant_gpu.use(None)
    assert svc.scheduler.counts["measured"] == 1  # one measurement, shared by both visitors
    assert sum("shared" in d for d in out) == 1
    assert len(runner.asked) == 1 and runner.pids[0] != os.getpid()  # one call into a forked worker
    assert 0 < runner.asked[0] <= 60  # its duration comes from the request's size
    for d in out:
        by = {r["variant"]: r for r in d["results"]}
        assert by["fp32-cuda"]["answer"] == by["fp32-cpu"]["answer"] == ex.answer
        assert by["fp32-cuda"]["latency_ms"]["runs"] == 3 and by["int8-cpu"]["latency_ms"]["runs"] == 3


def test_the_app_installs_the_zerogpu_runner_only_on_zerogpu(monkeypatch):
    """`spaces` is on every Gradio Space; only with SPACES_ZERO_GPU set does the app route CUDA to a GPU worker, and
    then only quant.gpu.time_cuda is decorated (not the Compare handler, as before)."""
    import sys
    import types

    import app as app_module

    assert app_module.zero_gpu_runner() is None  # not a ZeroGPU Space: CUDA (if any) is timed in-process
    decorated = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda fn, duration=None: decorated.append((fn, duration)) or ("wrapped", fn)
    config = types.ModuleType("spaces.config")
    config.Config = types.SimpleNamespace(zero_gpu=False)
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setitem(sys.modules, "spaces.config", config)
    monkeypatch.setattr(app_module, "spaces", fake)
    assert app_module.zero_gpu_runner() is None and not decorated  # a Space on CPU or a paid GPU: nothing
    config.Config.zero_gpu = True
    assert app_module.zero_gpu_runner() == ("wrapped", quant_gpu.time_cuda)
    assert decorated == [(quant_gpu.time_cuda, quant_gpu.duration)]


# ------------------------------------------------------------------ what a Space installs


def _pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, ver = line.split("==", 1)
            out[name.strip()] = ver.strip()
    return out


def _front_matter() -> dict[str, str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    head = text.split("---", 2)[1]
    return {k.strip(): v.strip().strip('"') for k, v in (ln.split(":", 1) for ln in head.splitlines() if ":" in ln)}


def test_requirements_pin_what_ran_and_nothing_floats():
    """Every runtime requirement is pinned (==), and each pin is the version installed in the environment the
    suite runs in: the Space gets exactly what was tested."""
    from importlib.metadata import version
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for f in ("requirements.txt", "requirements-dev.txt"):
        for line in (root / f).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                assert "==" in line, f"{f}: {line!r} is not pinned"
    pins = {**_pins(root / "requirements.txt"), **_pins(root / "requirements-dev.txt")}
    assert {"torch", "torchao", "transformers", "gradio", "tokenizers"} <= set(pins)
    drift = {n: (v, version(n).split("+")[0]) for n, v in pins.items() if version(n).split("+")[0] != v}
    assert not drift, f"installed versions differ from the pins: {drift}"


def test_the_front_matter_names_the_python_and_gradio_that_ran():
    import sys
    from pathlib import Path

    fm = _front_matter()
    assert fm["sdk"] == "gradio" and fm["app_file"] == "app.py"
    assert fm["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert fm["sdk_version"] == _pins(Path(__file__).resolve().parents[1] / "requirements.txt")["gradio"]


def test_space_check_installs_and_starts_the_app_as_a_space_does(tmp_path):
    """scripts/space_check.sh: a fresh environment from requirements.txt on the front matter's Python (with what
    the platform adds: gradio at sdk_version, spaces), `python app.py` with a Space's environment, the page and
    /compare answered, and a console without tracebacks or deprecation noise."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = subprocess.run(["bash", str(root / "scripts" / "space_check.sh")], capture_output=True, text=True,
                       timeout=1800, env={**os.environ, "SPACE_CHECK_DIR": str(tmp_path / "space")})
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "[space] OK" in out, out[-4000:]
    assert "GET / : 200" in out and "/compare through gradio_client" in out
    assert "spaces==" in out and "torch==2.13.0" in out
