"""qconform as an installed package: a non-editable wheel in a fresh environment provides the
pytest plugin (entry point `pytest11`) and the suites, and runs them from a directory that holds
no qconform checkout; a second package adds a pathway through the `qconform.pathways` entry point.

The fresh venv gets the heavy dependencies (torch, onnxruntime, ...) from this interpreter's
site-packages through a .pth path line (a venv made from a venv cannot use
--system-site-packages for them); a path line does not run that site-packages' own .pth files,
so the checkout's editable install stays inactive and `harness` comes from the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

find_packages = pytest.importorskip("setuptools", reason="building the wheel needs setuptools").find_packages

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "tests" / "example_plugin"


def test_wheel_lists_every_harness_package():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert set(find_packages(str(REPO), include=["harness*"])) <= listed


def _run(cmd: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 or cmd[0] != sys.executable, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the qconform wheel and the example plugin's wheel, both non-editable."""
    root = tmp_path_factory.mktemp("install")
    source = root / "src"  # a copy, so building leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("harness", "suites"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(EXAMPLE, root / "example", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "wheels", source, root / "example"], root)
    _run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], root)
    python = root / "venv" / "bin" / "python"
    _run([*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", *sorted((root / "wheels").glob("*.whl"))], root)
    purelib = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (purelib / "_qconform_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


@pytest.mark.slow
def test_installed_qconform_runs_the_suites_outside_a_checkout(installed, tmp_path):
    venv = installed / "venv"
    work = tmp_path / "team-repo"  # holds only a profile with the plugin pathway's thresholds
    work.mkdir()
    where = _run([venv / "bin" / "python", "-c", "import harness, harness.suites, qconform_example_plugin as p; print(harness.__file__); print(p.__file__)"], work)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), f"imported from outside the venv: {where.stdout}"

    cpu = Path(where.stdout.split()[0]).parent / "profiles" / "cpu.toml"
    (work / "team.toml").write_text(cpu.read_text() + "\n[ort-int8-qdq.tiny-llama]\nmin_sqnr_db = 20.0\nmin_cosine = 0.995\nmin_token_agreement = 0.90\nmin_golden_sqnr_db = 40.0\n"
                                      "min_layer_weight_sqnr_db = 37.0\nmin_layer_activation_sqnr_db = 14.0\nmin_code_range_use = 0.98\n"
                                      "max_weight_scale_log2_err = 0.01\nmin_activation_scale_log2 = -0.05\nmax_activation_scale_log2 = 0.05\n"
                                      # ORT's U8S8 kernels on x86 without VNNI, as cpu.toml's [inc-int8-qdq.tiny-llama.cpu-x86]
                                      "\n[ort-int8-qdq.tiny-llama.cpu-x86]\nmin_sqnr_db = 14.3\nmin_cosine = 0.976\nmin_token_agreement = 0.74\n")
    run = _run(
        [venv / "bin" / "qconform", "run", "--models", "tiny-llama", "--pathways", "inc-int8-qdq,ort-int8-qdq", "--profile", work / "team.toml",
         "-k", "accuracy or artifacts", "-p", "no:cacheprovider"],
        work,
    )
    output = run.stdout + run.stderr
    summary = json.loads((work / "reports" / "summary.json").read_text())
    records = summary["records"]
    assert {r["pathway"] for r in records} == {"inc-int8-qdq", "ort-int8-qdq"}, output[-3000:]
    assert f"qconform: pytest {venv}" in output and "site-packages/harness/suites --rootdir=" in output, output[:2000]
    plugin_rows = [r for r in records if r["pathway"] == "ort-int8-qdq"]
    assert any(r.get("metric") == "min_token_agreement" for r in plugin_rows), plugin_rows
    assert run.returncode == 0, output[-3000:]
    assert (work / "reports" / "conformance.html").is_file()

    # Plain pytest finds the same plugin and suites by package name.
    plain = _run([venv / "bin" / "python", "-m", "pytest", "--pyargs", "harness.suites", "--models=tiny-llama", "--pathways=ort-int8-qdq",
                  f"--profile={work / 'team.toml'}", "--report-dir=plain", "-k", "test_output_agreement", "-p", "no:cacheprovider"], work)
    assert plain.returncode == 0, (plain.stdout + plain.stderr)[-3000:]
    assert {r["pathway"] for r in json.loads((work / "plain" / "summary.json").read_text())["records"]} == {"ort-int8-qdq"}
