"""setup.cfg installs every package of the tree (a plain `pip install .` lists them one by one)."""

import configparser
import pathlib

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
