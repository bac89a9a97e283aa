"""The command line on bad inputs and outputs: one line on stderr, exit 2, no traceback, no file written.

Also what a user's model gets: ``--batch``/``--patch`` honoured, its own dtype, a hint for several inputs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from initwise._cli.main import main

from _sigint import sigint_not_ignored

SRC = str(Path(__file__).resolve().parents[1] / "src")

MODEL_FILE = textwrap.dedent("""
    import torch
    from torch import nn

    class TwoInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x, y):
            return self.conv(x) + y

    def build():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def build64():
        return build().double()

    def two():
        return TwoInput()

    def two_with_example():
        return TwoInput(), (torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8))

    def with_example():
        return build(), torch.randn(2, 3, 8, 8)

    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            assert x.shape[-1] == 32, "Picky wants 32 pixels"
            return self.conv(x)

    def picky():
        return Picky()

    class Wordy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            raise RuntimeError("first line" + chr(10) + "  second line")

    def wordy():
        return Wordy()
""")


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    path = tmp_path / "mynet.py"
    path.write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    return path


def _files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def _one_line_error(capsys, command: str) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert err.startswith(f"initwise {command}: error: "), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


# --- output paths, checked before any work, all or nothing -------------------------------------------------------

BAD_OUTPUTS = [
    (["--json", "{dir}"], "is a directory"),
    (["--json", "nowhere/x.json"], "folder nowhere does not exist"),
    (["--json", "mynet.py/x.json"], "is not a folder"),
    (["--plot", "spp.xyz"], "unknown image format .xyz"),
    (["--plot", "spp"], "unknown image format (no suffix)"),
    (["--json", "ok.json", "--plot", "spp.xyz"], "unknown image format .xyz"),
    (["--json", "same.png", "--plot", "same.png"], "name the same file"),
    (["--json", ""], "--json is empty"),
]


@pytest.mark.parametrize("command", ["diagnose", "advise"])
@pytest.mark.parametrize("flags, message", BAD_OUTPUTS)
def test_bad_output_path_fails_first_and_writes_nothing(model_file, capsys, monkeypatch, command, flags, message):
    import initwise

    def boom(*a, **k):
        raise AssertionError("the model was run before the output paths were checked")

    monkeypatch.setattr(initwise, "diagnose", boom)
    monkeypatch.setattr(initwise, "advise", boom)
    before = _files(model_file.parent)
    argv = [command, f"{model_file.name}:build", "--input", "1x3x8x8",
            *(f.format(dir=model_file.parent) for f in flags)]
    assert main(argv) == 2
    assert message in _one_line_error(capsys, command)
    assert _files(model_file.parent) == before


def test_advise_save_to_directory_or_missing_folder(model_file, capsys):
    for bad, message in ((".", "is a directory"), ("no/such/init.pt", "does not exist")):
        assert main(["advise", f"{model_file.name}:build", "--input", "1x3x8x8", "--save", bad]) == 2
        assert message in _one_line_error(capsys, "advise")
    assert _files(model_file.parent) == {"mynet.py", "__pycache__"} or _files(model_file.parent) == {"mynet.py"}


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder(model_file, capsys):
    ro = model_file.parent / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["diagnose", f"{model_file.name}:build", "--input", "1x3x8x8", "--json", "ro/x.json"]) == 2
        assert "not writable" in _one_line_error(capsys, "diagnose")
    finally:
        ro.chmod(0o700)


def test_a_write_failing_late_leaves_no_file(model_file, capsys, monkeypatch):
    """The JSON is staged beside its destination and renamed only when the plot was written too."""
    from initwise._diagnose import Profile

    def fail(self, path=None, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Profile, "plot", fail)
    before = _files(model_file.parent)
    assert main(["diagnose", f"{model_file.name}:build", "--input", "1x3x8x8", "--json", "p.json",
                 "--plot", "p.png"]) == 2
    assert "cannot write p.png" in _one_line_error(capsys, "diagnose")
    assert _files(model_file.parent) == before  # neither p.json nor a temporary file


def test_outputs_written_when_all_good(model_file, capsys):
    assert main(["advise", f"{model_file.name}:build", "--input", "1x3x8x8", "--seeds", "1", "--json", "a.json",
                 "--save", "init.pt"]) == 0
    out = capsys.readouterr().out
    assert "wrote a.json" in out and "state_dict saved to init.pt" in out
    assert {"a.json", "init.pt"} <= _files(model_file.parent)
    assert not [n for n in _files(model_file.parent) if n.startswith(".")]  # no temporary file left
    import torch

    state = torch.load(model_file.parent / "init.pt")
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert oct((model_file.parent / "a.json").stat().st_mode & 0o777) != oct(0o600)  # the umask's mode


# --- what a user's model gets ---------------------------------------------------------------------------------------

def test_batch_and_patch_shape_a_users_random_input(model_file, capsys):
    assert main(["advise", f"{model_file.name}:build", "--batch", "2", "--patch", "12", "--seeds", "1"]) == 0
    assert "on random normal input 2x3x12x12" in capsys.readouterr().out
    assert main(["advise", f"{model_file.name}:build", "--seeds", "1"]) == 0
    assert "on random normal input 8x3x48x48" in capsys.readouterr().out  # the defaults the help gives


@pytest.mark.parametrize("tail, message", [
    (["--input", "1x3x8x8", "--batch", "2"], "--batch cannot change --input 1x3x8x8"),
    (["--input", "1x3x8x8", "--patch", "16"], "--patch cannot change --input"),
])
def test_batch_or_patch_with_input_is_refused(model_file, capsys, tail, message):
    assert main(["advise", f"{model_file.name}:build", *tail]) == 2
    assert message in _one_line_error(capsys, "advise")


def test_batch_with_a_factory_example_is_refused(model_file, capsys):
    assert main(["advise", f"{model_file.name}:with_example", "--batch", "4"]) == 2
    assert "--batch cannot resize the example input" in _one_line_error(capsys, "advise")


def test_help_says_what_batch_and_patch_do(capsys):
    with pytest.raises(SystemExit):
        main(["advise", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "random input of a user's model without --input" in out and "H = W of the random input" in out
    assert "``" not in out  # no raw reST


@pytest.mark.parametrize("command", ["diagnose", "advise"])
def test_input_without_batch_dimension(model_file, capsys, command):
    assert main([command, f"{model_file.name}:build", "--input", "3x48x48"]) == 2
    err = _one_line_error(capsys, command)
    assert "--input 3x48x48 has 3 sizes" in err and "Conv2d" in err and "--input 1x3x48x48" in err


@pytest.mark.parametrize("command", ["diagnose", "advise"])
def test_two_input_forward_hints_at_the_factory(model_file, capsys, command):
    assert main([command, f"{model_file.name}:two", "--input", "1x3x8x8"]) == 2
    err = _one_line_error(capsys, command)
    assert "TwoInput.forward takes 2 inputs (x, y)" in err
    assert "let the factory return (model, (x, y))" in err


def test_two_input_forward_with_the_factory_example_works(model_file, capsys):
    assert main(["diagnose", f"{model_file.name}:two_with_example"]) == 0
    assert "input 1x3x8x8" in capsys.readouterr().out


def test_float64_model_gets_a_float64_input(model_file, capsys, monkeypatch):
    import initwise

    seen = []
    real = initwise.diagnose

    def spy(model, example, **kw):
        seen.append(example.dtype)
        return real(model, example, **kw)

    monkeypatch.setattr(initwise, "diagnose", spy)
    assert main(["diagnose", f"{model_file.name}:build64", "--input", "1x3x8x8"]) == 0
    import torch

    assert seen == [torch.float64]


# --- Ctrl-C and python -m ------------------------------------------------------------------------------------------

def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    from initwise._cli import fans

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fans, "run", interrupted)
    assert main(["fans"]) == 130
    cap = capsys.readouterr()
    assert cap.err.strip() == "initwise fans: interrupted"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches the child's memory maps (Linux /proc)")
def test_ctrl_c_while_torch_is_still_importing_is_one_line_and_exit_130():
    """``import initwise`` does not import torch (the package's names load on first use), so the command's own
    Ctrl-C handling is in place before torch starts loading: the interrupt lands inside torch's import, seen here
    by torch's library appearing in the child's memory maps, and still ends in one line and exit status 130."""
    env = {**os.environ, "PYTHONPATH": SRC}
    with sigint_not_ignored():  # (a runner started as a background job would pass SIGINT on ignored)
        child = subprocess.Popen([sys.executable, "-m", "initwise", "fans", "no_such_model"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            try:
                if "libtorch" in Path(f"/proc/{child.pid}/maps").read_text():
                    break
            except OSError:
                pass
            time.sleep(0.002)
        assert child.poll() is None, "the command ended before torch was loaded"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert "Traceback" not in err, err
    assert child.returncode == 130 and err.strip() == "initwise: interrupted", (child.returncode, err)


def test_python_dash_m_reports_cli_errors_as_one_line(model_file):
    """``python -m initwise._cli.main`` (the torchrun form) runs this file as __main__: its errors still are one
    line with exit 2, not a traceback of an uncaught CLIError."""
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-m", "initwise._cli.main", "diagnose", "no_such_model"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("initwise diagnose: error: unknown TARGET") and "Traceback" not in r.stderr


# --- initwise fans TARGET --------------------------------------------------------------------------------------------

FANS_MODEL = textwrap.dedent("""
    from torch import nn

    def build():
        return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.Tanh(),
                             nn.ConvTranspose2d(12, 3, 4, stride=2, padding=1))
""")


def test_fans_of_any_target(tmp_path, monkeypatch, capsys):
    (tmp_path / "fm.py").write_text(FANS_MODEL)
    monkeypatch.chdir(tmp_path)
    assert main(["fans", "fm.py:build", "--input", "1x3x8x8"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:4]}
    # hand-computed: 3*3*3 = 27 in, 12*9 = 108 out; depthwise 3x3: 9 and 9 (torch: 9/108);
    # ConvTranspose (in, out/g, 4, 4) stride 2: fan_in 12*4*4/4 = 48, fan_out 3*16 = 48 (torch: 48/192 swapped)
    assert rows["0"][1:6] == ["Conv2d", "relu", "27", "108", "27/108"] and rows["0"][6] == "1.4142"
    assert rows["2"][1:6] == ["Conv2d", "tanh", "9", "9", "9/108"]
    assert rows["4"][1:6] == ["ConvTranspose2d", "linear", "48", "48", "48/192"]


def test_fans_of_a_builtin_and_errors(capsys):
    assert main(["fans", "espcn"]) == 0
    assert "Conv2d" in capsys.readouterr().out
    assert main(["fans", "nope"]) == 2
    assert "unknown TARGET 'nope'" in _one_line_error(capsys, "fans")
    assert main(["fans", "--input", "1x3x8x8"]) == 2
    assert "--input needs a TARGET" in _one_line_error(capsys, "fans")


def test_json_output_is_strict_json():
    import json

    from initwise._cli._io import json_text

    text = json_text({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}")) == {
        "a": None, "b": [1.0, None], "c": {"d": None}}


@pytest.mark.parametrize("command", ["diagnose", "advise"])
@pytest.mark.parametrize("seed", ["-1", str(2**70)])
def test_seed_out_of_range(model_file, capsys, command, seed):
    assert main([command, f"{model_file.name}:build", "--input", "1x3x8x8", "--seed", seed]) == 2
    assert f"--seed must be in [0, 2**53), got {seed}" in _one_line_error(capsys, command)


@pytest.mark.parametrize("command", ["diagnose", "advise", "fans"])
def test_any_error_of_a_users_forward_is_one_line(model_file, capsys, command):
    assert main([command, f"{model_file.name}:picky", "--input", "1x3x8x8"]) == 2
    assert "AssertionError: Picky wants 32 pixels" in _one_line_error(capsys, command)
    assert main([command, f"{model_file.name}:wordy", "--input", "1x3x8x8"]) == 2
    assert "first line; second line" in _one_line_error(capsys, command)


def test_python_dash_m_initwise_is_the_same_command_line(tmp_path):
    """``python -m initwise`` runs the CLI (a usage error: exit 2, one line on stderr naming the bad choice)."""
    env = {**os.environ, "PYTHONPATH": SRC, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "initwise", "fans", "no_such_model_xyz"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no_such_model_xyz" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    ok = subprocess.run([sys.executable, "-m", "initwise", "fans", "srcnn"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "fan_in" in ok.stdout.splitlines()[0] and "Conv2d" in ok.stdout


def test_a_built_in_target_is_the_same_model_on_every_run():
    """The built-in models are built with PyTorch's default init from seed 0 (so the main job's report is the
    same on every run), without touching the caller's global RNG."""
    import torch

    from initwise._cli._target import load_target

    state = torch.get_rng_state()
    a, b = load_target("edsr").model, load_target("edsr").model
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    torch.manual_seed(123)
    c = load_target("edsr").model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
