"""--model as a Hub repo id, through the real client and the local Hub server: found, missing, wrong revision."""

from __future__ import annotations

from hubserver import ALICE_TOKEN, run_python
from huggingface_hub import HfApi

pytest_plugins = ["hub_fixtures"]

LOAD = """
from hf_transfer.modeling.loading import load_model_for_labels
model = load_model_for_labels({repo!r}, ["x", "y"], revision={revision!r})
print("LABELS", model.config.id2label)
"""


def test_hub_model_id_loads_missing_id_and_revision_name_the_fix(hub, hub_env, tiny_checkpoints):
    api = HfApi(endpoint=hub.url, token=ALICE_TOKEN)
    api.create_repo("alice/tiny-vit")
    api.upload_folder(folder_path=tiny_checkpoints("vit"), repo_id="alice/tiny-vit")

    ok = run_python(LOAD.format(repo="alice/tiny-vit", revision=None), hub_env)
    assert "LABELS {0: 'x', 1: 'y'}" in ok.stdout

    missing = run_python(LOAD.format(repo="alice/no-such-model", revision=None), hub_env, check=False)
    assert missing.returncode != 0
    assert "CheckpointNotFoundError: --model alice/no-such-model was not found on the Hub (or is private)" in missing.stderr

    bad_revision = run_python(LOAD.format(repo="alice/tiny-vit", revision="v9"), hub_env, check=False)
    assert "CheckpointNotFoundError: --model alice/tiny-vit: revision 'v9' does not exist" in bad_revision.stderr
