"""What `pip install` ships: every package folder under its import name, nothing else.

The folders keep the names the repository is read by (server/, client/, protos/) and are
installed as ai_service, ai_service_client and ai_service_protos; setuptools needs the
list of packages spelled out for that, so a folder added without it would be missing
from the wheel and the image. This keeps the list and the folders in step.
"""

from __future__ import annotations

import tomllib

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def package_folders() -> set[str]:
    """Every folder holding an `__init__.py`, as the import name it is installed under."""
    names = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            if "node_modules" in init.parts:
                continue
            relative = init.parent.relative_to(root).parts
            names.add(".".join((package, *relative)))
    return names


def test_every_package_folder_is_shipped_and_nothing_else() -> None:
    assert set(SETUPTOOLS["packages"]) == package_folders()


def test_installed_import_names_cannot_collide_with_a_users_modules() -> None:
    assert all(name.startswith("ai_service") for name in SETUPTOOLS["packages"])


def test_a_client_install_pulls_only_what_the_client_needs() -> None:
    wanted = {
        requirement.split(">")[0].split("=")[0]
        for requirement in PYPROJECT["project"]["dependencies"]
    }
    assert wanted == {"grpcio", "grpcio-health-checking", "grpcio-status", "protobuf"}
