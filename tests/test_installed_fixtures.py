"""The fixture library from an installed wheel, as a newcomer meets it after `pip install`:
`cds-service fixtures list` and `check` run from a folder outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """A fresh venv outside the checkout with the wheel installed (not editable); the
    dependencies come from this test's environment through a .pth line, so no index is needed."""
    base = tmp_path_factory.mktemp("installed")
    # nothing from this environment's import path leaks into the build or the new venv
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels, venv = base / "wheels", base / "venv"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True, capture_output=True, env=clean,
    )  # fmt: skip
    (wheel,) = wheels.glob("*.whl")
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, env=clean
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=clean,
    ).stdout.strip()  # fmt: skip
    # Only the directory: the checkout's editable-install hook (a .pth in it) is not run.
    (Path(site) / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, env=clean,
    )  # fmt: skip
    away = base / "elsewhere"
    away.mkdir()
    return venv, away


def _run(installed, *args: str) -> subprocess.CompletedProcess:
    venv, away = installed
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "COLUMNS": "80",
        "DATABASE_URL": f"sqlite:///{away / 'cli.sqlite3'}",
        "HOME": str(away),
    }
    return subprocess.run(
        [str(venv / "bin" / "cds-service"), *args],
        cwd=away, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_the_wheel_imports_from_its_own_install(installed):
    venv, away = installed
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import cds_service; print(cds_service.__file__)"],
        cwd=away, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(str(venv)) and not run.stdout.startswith(str(REPO))


@pytest.mark.slow
def test_fixtures_list_from_the_wheel(installed):
    run = _run(installed, "fixtures", "list", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    listed = {p["name"] for p in __import__("json").loads(run.stdout)}
    shipped = {p.stem for p in (REPO / "fixtures" / "patients").glob("*.json")}
    assert listed == shipped


@pytest.mark.slow
def test_check_from_the_wheel(installed):
    run = _run(
        installed, "check", "--patient", "warfarin-d3k2-draft", "--patient", "adult-deficient"
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "as expected" in run.stdout


@pytest.mark.slow
def test_invoke_patient_from_the_wheel(installed):
    run = _run(installed, "invoke", "vitamin-d-patient-view", "--patient", "adult-deficient")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "vitd-deficiency" in run.stdout


def test_the_library_is_package_data():
    """The link the wheel copies the fixtures through, and the patterns that take them."""
    link = REPO / "cds_service" / "fixture_data"
    assert link.is_symlink() and os.readlink(link) == "../fixtures"
    text = (REPO / "pyproject.toml").read_text()
    assert '"fixture_data/patients/*.json"' in text and '"fixture_data/*.json"' in text
    docker = (REPO / "Dockerfile").read_text()
    assert "COPY fixtures ./fixtures" in docker
    assert "!fixtures/" in (REPO / ".dockerignore").read_text()


@pytest.mark.slow
def test_preview_from_the_wheel(installed):
    """/preview lists the fixture patients and builds their requests from the installed copy."""
    venv, away = installed
    script = (
        "from cds_service import Settings, create_app\n"
        f"app = create_app(Settings(database_url='sqlite:///{away}/p.sqlite3', auth_disabled=True))\n"
        "client = app.test_client()\n"
        "page = client.get('/preview/')\n"
        "assert page.status_code == 200 and b'warfarin-d3k2-draft' in page.data, page.status_code\n"
        "assert b'No fixture patients found' not in page.data\n"
        "built = client.get('/preview/request.json?patient=warfarin-d3k2-draft"
        "&service=vitamin-d-order-sign&draft=')\n"
        "assert built.status_code == 200, built.data[:300]\n"
        "print('ok')\n"
    )
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        cwd=away, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
