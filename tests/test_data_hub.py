"""--data as a Hub dataset id, through the real datasets + huggingface_hub clients and the local Hub server."""

from __future__ import annotations

import json

from hubserver import ALICE_TOKEN, run_python
from huggingface_hub import HfApi
from tiny import make_image_folder

pytest_plugins = ["hub_fixtures"]

LOAD = """
import json
from hf_transfer.config import DataConfig
from hf_transfer.data.loading import load_splits
splits, report = load_splits(DataConfig(data={repo!r}))
print(json.dumps({{"labels": report.label_names, "sizes": report.split_sizes}}))
"""


def online(env: dict[str, str]) -> dict[str, str]:
    """The fixture's client environment with datasets allowed to reach the (local) Hub."""
    return {k: v for k, v in env.items() if k != "HF_DATASETS_OFFLINE"}


def test_hub_dataset_id_loads_with_its_splits_and_labels(hub, hub_env, tmp_path):
    folder = make_image_folder(tmp_path / "pics", classes=("ant", "bee"), per_class=6, split_folders=True)
    api = HfApi(endpoint=hub.url, token=ALICE_TOKEN)
    api.create_repo("alice/insects", repo_type="dataset")
    api.upload_folder(folder_path=folder, repo_id="alice/insects", repo_type="dataset")

    proc = run_python(LOAD.format(repo="alice/insects"), online(hub_env))
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["labels"] == ["ant", "bee"]
    assert loaded["sizes"]["test"] == 6 and loaded["sizes"]["train"] + loaded["sizes"]["validation"] == 12


def test_unknown_hub_dataset_id_names_the_fix(hub, hub_env):
    proc = run_python(LOAD.format(repo="alice/no-such-data"), online(hub_env), check=False)
    assert proc.returncode != 0
    assert "DataNotFoundError: --data alice/no-such-data: not a local folder or file, and not found on the Hub" in proc.stderr
