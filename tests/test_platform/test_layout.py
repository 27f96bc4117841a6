"""The workspace keeps the stdlib `platform` module and the `cartwise` namespace intact."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = ["platform", "commerce", "serving", "pipelines"]


def test_no_package_shadows_stdlib_platform() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert not (ROOT / "tests" / "platform").exists()
    import platform

    assert hasattr(platform, "python_version"), "stdlib platform is shadowed"


def test_cartwise_is_a_namespace_package() -> None:
    for member in MEMBERS:
        assert (ROOT / member / "src" / "cartwise").is_dir(), member
        assert not (ROOT / member / "src" / "cartwise" / "__init__.py").exists(), member
    cartwise = importlib.import_module("cartwise")
    assert getattr(cartwise, "__file__", None) is None
    assert len(list(cartwise.__path__)) >= len(MEMBERS)


def test_commerce_does_not_import_ray_or_torch() -> None:
    code = (
        "import sys; from cartwise.commerce import create_app; create_app; "
        "import cartwise.commerce.app, cartwise.commerce.tables; "
        "bad = [m for m in ('ray', 'torch', 'feast') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""


def test_platform_imports_no_other_member() -> None:
    for path in (ROOT / "platform" / "src").rglob("*.py"):
        text = path.read_text()
        for other in (
            "cartwise.commerce",
            "cartwise.serving",
            "cartwise.pipelines",
            "cartwise.models",
        ):
            assert other not in text, f"{path} imports {other}"
    for path in (ROOT / "commerce" / "src").rglob("*.py"):
        text = path.read_text()
        for other in ("cartwise.serving", "cartwise.pipelines", "import ray", "import torch"):
            assert other not in text, f"{path} imports {other}"
