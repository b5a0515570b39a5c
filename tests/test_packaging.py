"""setup.cfg installs every package of the tree (a plain `pip install .` lists them one by one),
and the release metadata holds together: LICENSE, CHANGELOG.md and one version."""

import configparser
import importlib.metadata
import pathlib

import keras_norms

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    mapped = {
        line.split("=")[0].strip(): line.split("=")[1].strip()
        for line in config["options"]["package_dir"].strip().splitlines()
    }
    folders = {"keras_norms": ROOT / "keras_norms", **{k: ROOT / v for k, v in mapped.items()}}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))
    assert found == listed


def test_release_metadata_license_changelog_and_version():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    metadata = config["metadata"]
    assert metadata["license"] == "Apache-2.0"
    # Wheels and sdists carry the license named here.
    assert "LICENSE" in metadata["license_files"].split()
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    for phrase in (
        "Apache License",
        "Version 2.0, January 2004",
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ):
        assert phrase in license_text, phrase
    # One version, keras_norms.__version__: setup.cfg reads it, the installed metadata has
    # it, and CHANGELOG.md has a section for it.
    assert metadata["version"] == "attr: keras_norms.__version__"
    assert importlib.metadata.version("keras-norms") == keras_norms.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
    assert f"## [{keras_norms.__version__}]" in {line.split(" - ")[0] for line in changelog}
