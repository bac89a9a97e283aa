"""``initwise diagnose`` end to end: table, JSON, PNG; TARGET forms; clear errors."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from initwise._cli.main import main

MODEL_FILE = textwrap.dedent("""
    import torch
    from torch import nn

    def build():
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                             nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))

    def with_example():
        return build(), torch.randn(2, 3, 12, 12)

    def broken():
        raise ValueError("no weights today")

    def not_a_model():
        return 42
""")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(MODEL_FILE)
    return path


def test_end_to_end_writes_png_and_json(model_file, tmp_path, capsys):
    png, js = tmp_path / "spp.png", tmp_path / "profile.json"
    rc = main(["diagnose", f"{model_file}:build", "--input", "4x3x16x16", "--schemes",
               "default,kaiming_fan_in,kaiming_fan_out", "--plot", str(png), "--json", str(js), "--seed", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    table = [line for line in out.splitlines()[1:] if not line.startswith("wrote ")]  # not the paths
    assert max(len(line) for line in table) <= 80
    assert "scheme: kaiming_fan_out" in out and "fwd" in out
    # JSON: every scheme, every layer, finite numbers
    data = json.loads(js.read_text())
    assert data["schemes"] == ["default", "kaiming_fan_in", "kaiming_fan_out"]
    assert data["input_shapes"] == [[4, 3, 16, 16]] and data["seed"] == 3
    for run in data["runs"]:
        assert [lp["name"] for lp in run["layers"]] == ["0", "2", "4"]
        for lp in run["layers"]:
            for key in ("forward", "backward", "predicted_forward", "predicted_backward", "std"):
                assert math.isfinite(lp[key]) and lp[key] > 0, (run["scheme"], lp["name"], key)
            assert lp["output"]["count"] == 4 * 16 * 16 * (3 if lp["name"] == "4" else 16)
    relu = data["runs"][1]["layers"][0]
    assert relu["activation"] == "relu" and relu["activation_output"]["second_moment"] > 0
    # PNG: the signature, a sane size, not blank
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(raw) < 2_000_000
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))
    h, w = img.shape[:2]
    assert 300 < h < 1000 and 700 < w < 1600
    assert float(img[..., :3].std()) > 0.05  # lines, text and bands, not a blank canvas
    colored = (abs(img[..., 0] - img[..., 2]) > 0.3).mean()  # the scheme lines are coloured
    assert colored > 1e-3


def test_builtin_name_and_factory_example(model_file, capsys):
    assert main(["diagnose", "fsrcnn", "--input", "2x1x12x12"]) == 0
    assert "scheme: current" in capsys.readouterr().out
    assert main(["diagnose", f"{model_file}:with_example"]) == 0
    assert "input 2x3x12x12" in capsys.readouterr().out


def test_package_module_factory(model_file, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(model_file.parent))
    assert main(["diagnose", "mynet:build", "--input", "2x3x8x8", "--schemes", "orthogonal"]) == 0
    assert "scheme: orthogonal" in capsys.readouterr().out


@pytest.mark.parametrize("argv_tail,message", [
    (["missing_dir/none.py:build"], "file not found: missing_dir/none.py"),
    (["{file}:nothing"], "no factory 'nothing' in file"),
    (["{file}:broken"], "factory {file}:broken failed: ValueError: no weights today"),
    (["{file}:not_a_model"], "returned a int"),
    (["no_such_package_xyz.models:build"], "cannot import module 'no_such_package_xyz.models'"),
    (["not_a_model_name"], "unknown TARGET 'not_a_model_name'"),
    (["{file}:build", "--input", "1x3xfoo"], "malformed --input '1x3xfoo'"),
    (["{file}:build", "--input", "0x3"], "malformed --input '0x3'"),
    (["{file}:build", "--schemes", "kaiming_fan_sideways"], "unknown candidate 'kaiming_fan_sideways'"),
    (["{file}:build", "--input", "1x5x8x8"], "diagnosing"),
])
def test_errors_are_one_clear_line(model_file, capsys, argv_tail, message):
    argv = ["diagnose", *(a.format(file=model_file) for a in argv_tail)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("initwise diagnose: error: ") and len(err.splitlines()) == 1
    assert message.format(file=model_file) in err
