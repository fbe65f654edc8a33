"""The local Hub-protocol server (tests/hubserver.py), exercised with the real huggingface_hub client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from hubserver import (
    ALICE_READ_TOKEN,
    ALICE_TOKEN,
    ALL_TOKENS,
    BOB_TOKEN,
    git_blob_oid,
    run_python,
)
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

pytest_plugins = ["hub_fixtures"]


def api_for(hub, token=ALICE_TOKEN) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def make_folder(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"a": 1}\n',
        "weights.bin": os.urandom(70_000),
        "sub/deeper/notes.txt": "unicode \u00e9\u00e8 \u2713\n".encode(),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def uploaded(hub, repo_id: str, tmp_path: Path):
    """``repo_id`` created and filled by ``upload_folder`` from a fresh folder: (api, commit info, src, files)."""
    api = api_for(hub)
    api.create_repo(repo_id)
    src = tmp_path / "src"
    files = make_folder(src)
    return api, api.upload_folder(repo_id=repo_id, folder_path=src), src, files


def test_whoami_knows_tokens_and_refuses_bad_ones(hub):
    me = api_for(hub).whoami()
    assert me["name"] == "alice"
    assert [o["name"] for o in me["orgs"]] == ["acme"]
    assert api_for(hub, ALICE_READ_TOKEN).whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError) as info:
        api_for(hub, "hf_not_a_token").whoami()
    assert info.value.response.status_code == 401


def test_create_repo_conflict_returns_url_on_request_host(hub):
    api = api_for(hub)
    url = api.create_repo("alice/model")
    assert url == f"{hub.url}/alice/model"
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("alice/model")
    assert info.value.response.status_code == 409
    assert info.value.response.json()["url"] == f"{hub.url}/alice/model"
    assert api.create_repo("alice/model", exist_ok=True) == url
    space = api.create_repo("alice/demo", repo_type="space", space_sdk="gradio")
    assert space == f"{hub.url}/spaces/alice/demo"
    assert api.space_info("alice/demo").sdk == "gradio"
    # The real Hub's first commit: .gitattributes (and a README for Spaces).
    assert set(hub.state.files("alice/model")) == {".gitattributes"}
    assert set(hub.state.files("alice/demo", "space")) == {".gitattributes", "README.md"}


def test_upload_folder_then_snapshot_download_is_byte_identical(hub, tmp_path):
    api, info, src, files = uploaded(hub, "alice/folder", tmp_path)
    assert len(info.oid) == 40 and int(info.oid, 16) >= 0
    assert info.commit_url == f"{hub.url}/alice/folder/commit/{info.oid}"
    out = Path(snapshot_download("alice/folder", endpoint=hub.url, token=ALICE_TOKEN, cache_dir=tmp_path / "cache"))
    assert out.name == info.oid
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data, rel
    assert hub.state.files("alice/folder")["weights.bin"] == files["weights.bin"]


def test_unchanged_push_makes_no_commit_and_a_change_makes_exactly_one(hub, tmp_path):
    api, first, src, _ = uploaded(hub, "alice/same", tmp_path)
    n_commits = len(hub.state.commits("alice/same"))
    # Both client paths: upload_folder (the pipelined upload) and create_commit.
    again = api.upload_folder(repo_id="alice/same", folder_path=src)
    ops = [CommitOperationAdd(p.relative_to(src).as_posix(), p) for p in src.rglob("*") if p.is_file()]
    again2 = api.create_commit("alice/same", operations=ops, commit_message="same again")
    assert again.oid == again2.oid == first.oid
    assert len(hub.state.commits("alice/same")) == n_commits
    assert not hub.state.requests_to(r"/commit/", "POST")[1:]  # only the first upload committed

    (src / "config.json").write_bytes(b'{"a": 2}\n')
    changed = api.upload_folder(repo_id="alice/same", folder_path=src)
    history = hub.state.commits("alice/same")
    assert [c.oid for c in history[:2]] == [changed.oid, first.oid]
    assert history[0].parent == first.oid and not history[0].noop
    body = hub.state.requests_to(r"/commit/", "POST")[-1].body.decode()
    assert '"path": "config.json"' in body and "weights.bin" not in body  # only the changed file was sent


def test_dataset_repos_round_trip_under_their_own_url_prefix(hub, tmp_path):
    api = api_for(hub)
    assert api.create_repo("alice/pics", repo_type="dataset") == f"{hub.url}/datasets/alice/pics"
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id="alice/pics",
                    repo_type="dataset")
    path = hf_hub_download("alice/pics", "data/train.csv", repo_type="dataset", endpoint=hub.url,
                           token=ALICE_TOKEN, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    assert hub.state.requests_to(r"^/datasets/alice/pics/resolve/", "GET")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/pics")  # a dataset is not a model


def test_server_flags_a_commit_identical_to_its_parent(hub):
    api_for(hub).create_repo("alice/noop")
    head = hub.state.commits("alice/noop")[0].oid
    lines = [{"key": "header", "value": {"summary": "empty"}}]
    r = httpx.post(f"{hub.url}/api/models/alice/noop/commit/main", headers={"Authorization": f"Bearer {ALICE_TOKEN}"},
                   content="\n".join(json.dumps(line) for line in lines))
    assert r.status_code == 200
    newest = hub.state.commits("alice/noop")[0]
    assert newest.parent == head and newest.noop


def test_create_commit_adds_and_deletes_files_and_folders(hub, tmp_path):
    api, *_ = uploaded(hub, "alice/ops", tmp_path)
    api.create_commit("alice/ops", commit_message="prune", operations=[
        CommitOperationDelete("sub/"), CommitOperationDelete("empty.txt"),
        CommitOperationAdd("new.txt", b"new"),
    ])
    assert set(hub.state.files("alice/ops")) == {".gitattributes", "config.json", "weights.bin", "new.txt"}
    with pytest.raises(EntryNotFoundError):
        api.delete_file("missing.txt", repo_id="alice/ops")


def test_private_repo_is_invisible_without_the_owners_token(hub, tmp_path):
    alice = api_for(hub)
    alice.create_repo("alice/secret", private=True)
    alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/secret")
    assert alice.model_info("alice/secret").private is True
    for token in (BOB_TOKEN, False):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.url, token=token).model_info("alice/secret")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("alice/secret", "x.txt", endpoint=hub.url, token=token, cache_dir=tmp_path / "c")
    # Anonymous: 401, authenticated: 404 (what the Hub answers), both with X-Error-Code: RepoNotFound.
    url = hub.resolve_url("alice/secret", "x.txt")
    assert httpx.head(url).status_code == 401
    r = httpx.head(url, headers={"Authorization": f"Bearer {BOB_TOKEN}"})
    assert (r.status_code, r.headers["X-Error-Code"]) == (404, "RepoNotFound")
    alice.update_repo_settings("alice/secret", private=False)
    assert HfApi(endpoint=hub.url, token=BOB_TOKEN).model_info("alice/secret").private is False


def test_writes_need_a_write_token_for_that_namespace(hub):
    api_for(hub).create_repo("alice/mine")
    bob = api_for(hub, BOB_TOKEN)
    for call in (
        lambda: bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/mine"),
        lambda: api_for(hub, ALICE_READ_TOKEN).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/mine"),
        lambda: bob.create_repo("alice/other"),
        lambda: bob.create_branch("alice/mine", branch="dev"),
    ):
        with pytest.raises(HfHubHTTPError) as info:
            call()
        assert info.value.response.status_code == 403
    assert api_for(hub).create_repo("acme/team-model").endswith("/acme/team-model")  # alice is in org acme
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(endpoint=hub.url, token=False).create_repo("alice/anon")
    assert info.value.response.status_code == 401
    assert len(hub.state.commits("alice/mine")) == 1


def test_resolve_headers_range_and_error_codes(hub, tmp_path):
    api = api_for(hub)
    api.create_repo("alice/dl")
    data = os.urandom(5000)
    api.upload_file(path_or_fileobj=data, path_in_repo="dir/blob.bin", repo_id="alice/dl")
    head_sha = hub.state.commits("alice/dl")[0].oid
    auth = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    url = hub.resolve_url("alice/dl", "dir/blob.bin")
    r = httpx.head(url, headers=auth)
    assert r.status_code == 200
    assert r.headers["X-Repo-Commit"] == head_sha
    assert r.headers["ETag"] == f'"{git_blob_oid(data)}"'
    assert r.headers["Content-Length"] == "5000"
    r = httpx.get(url, headers={**auth, "Range": "bytes=1000-"})
    assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, data[1000:], "bytes 1000-4999/5000")
    r = httpx.get(url, headers={**auth, "Range": "bytes=10-19"})
    assert (r.status_code, r.content) == (206, data[10:20])
    r = httpx.head(hub.resolve_url("alice/dl", "nope.txt"), headers=auth)
    assert (r.status_code, r.headers["X-Error-Code"], r.headers["X-Repo-Commit"]) == (404, "EntryNotFound", head_sha)

    kwargs = {"endpoint": hub.url, "token": ALICE_TOKEN, "cache_dir": tmp_path / "cache"}
    assert Path(hf_hub_download("alice/dl", "dir/blob.bin", **kwargs)).read_bytes() == data
    assert Path(hf_hub_download("alice/dl", "dir/blob.bin", revision=head_sha, **kwargs)).read_bytes() == data
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/dl", "nope.txt", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/dl", "dir/blob.bin", revision="no-such-branch", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/missing", "dir/blob.bin", **kwargs)


def test_branches_refs_and_history(hub):
    api = api_for(hub)
    api.create_repo("alice/br")
    api.upload_file(path_or_fileobj=b"main v1", path_in_repo="f.txt", repo_id="alice/br")
    api.create_branch("alice/br", branch="dev")
    api.create_branch("alice/br", branch="dev", exist_ok=True)
    with pytest.raises(HfHubHTTPError):
        api.create_branch("alice/br", branch="dev")
    api.upload_file(path_or_fileobj=b"dev v2", path_in_repo="f.txt", repo_id="alice/br", revision="dev")
    assert hub.state.files("alice/br")["f.txt"] == b"main v1"
    assert hub.state.files("alice/br", revision="dev")["f.txt"] == b"dev v2"
    refs = {b.name: b.target_commit for b in api.list_repo_refs("alice/br").branches}
    assert refs == {"main": hub.state.commits("alice/br")[0].oid, "dev": hub.state.commits("alice/br", branch="dev")[0].oid}
    commits = api.list_repo_commits("alice/br", revision="dev")
    assert [c.commit_id for c in commits] == [c.oid for c in hub.state.commits("alice/br", branch="dev")]
    assert len(commits) == 3 and commits[-1].title == "initial commit"
    assert api.model_info("alice/br", revision="dev").sha == commits[0].commit_id
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/br", revision="nope")


def test_tree_listing_recursive_and_paginated(hub, tmp_path):
    api, *_ = uploaded(hub, "alice/tree", tmp_path)
    hub.state.tree_page_size = 2  # force the client to follow Link: rel="next"
    flat = {(e.path, type(e).__name__) for e in api.list_repo_tree("alice/tree")}
    assert flat == {(".gitattributes", "RepoFile"), ("config.json", "RepoFile"), ("empty.txt", "RepoFile"),
                    ("weights.bin", "RepoFile"), ("sub", "RepoFolder")}
    deep = {e.path for e in api.list_repo_tree("alice/tree", recursive=True)}
    assert {"sub", "sub/deeper", "sub/deeper/notes.txt"} <= deep
    assert {e.path for e in api.list_repo_tree("alice/tree", path_in_repo="sub/deeper")} == {"sub/deeper/notes.txt"}
    assert len(hub.state.requests_to(r"/tree/")) > 3
    sizes = {e.path: e.size for e in api.get_paths_info("alice/tree", ["weights.bin", "sub", "missing"])
             if hasattr(e, "size")}
    assert sizes == {"weights.bin": 70_000}
    assert api.file_exists("alice/tree", "sub/deeper/notes.txt") and not api.file_exists("alice/tree", "x")


def test_injected_faults_fail_commits_and_a_retry_completes(hub):
    api = api_for(hub)
    api.create_repo("alice/faulty")
    ops = [CommitOperationAdd("a.txt", b"a")]
    before = len(hub.state.commits("alice/faulty"))

    hub.state.inject_fault(r"/commit/", status=500)
    with pytest.raises(HfHubHTTPError) as info:
        api.create_commit("alice/faulty", operations=ops, commit_message="try 1")
    assert info.value.response.status_code == 500
    hub.state.inject_fault(r"/commit/", drop=True)
    with pytest.raises(Exception, match="(?i)disconnect|closed|connection"):
        api.create_commit("alice/faulty", operations=ops, commit_message="try 2")
    assert len(hub.state.commits("alice/faulty")) == before  # nothing landed
    api.create_commit("alice/faulty", operations=ops, commit_message="try 3")
    assert hub.state.files("alice/faulty")["a.txt"] == b"a"

    # A lost response: the server applied the commit, the client only saw the connection drop.
    hub.state.inject_fault(r"/commit/", drop=True, after=True)
    with pytest.raises(Exception, match="(?i)disconnect|closed|connection"):
        api.create_commit("alice/faulty", operations=[CommitOperationAdd("b.txt", b"b")], commit_message="lost")
    assert hub.state.files("alice/faulty")["b.txt"] == b"b"


def test_upload_folder_retries_a_transient_commit_failure(hub, tmp_path, no_backoff):
    api = api_for(hub)
    api.create_repo("alice/retry")
    src = tmp_path / "src"
    files = make_folder(src)
    fault = hub.state.inject_fault(r"/commit/", status=503, times=2)
    api.upload_folder(repo_id="alice/retry", folder_path=src)
    assert fault.hits == 2
    assert [r.status for r in hub.state.requests_to(r"/commit/", "POST")] == [503, 503, 200]
    assert hub.state.files("alice/retry")["weights.bin"] == files["weights.bin"]


def test_validate_yaml_rejects_broken_metadata(hub):
    api = api_for(hub)
    api.create_repo("alice/card")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md", repo_id="alice/card")
    with pytest.raises(ValueError, match="model-index"):
        api.upload_file(path_or_fileobj=b"---\nmodel-index: [{name: x}]\n---\n", path_in_repo="README.md",
                        repo_id="alice/card")
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\ntags: [a]\n---\n# ok\n", path_in_repo="README.md",
                    repo_id="alice/card")
    info = api.model_info("alice/card")
    assert info.card_data["license"] == "mit" and info.tags == ["a"]


def test_request_log_records_authorization_and_no_token_in_urls(hub, tmp_path):
    api = api_for(hub)
    api.create_repo("alice/log")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/log")
    hf_hub_download("alice/log", "x.txt", endpoint=hub.url, token=ALICE_TOKEN, cache_dir=tmp_path / "c")
    log = hub.state.requests
    assert {r.method for r in log} >= {"GET", "POST", "HEAD"}
    assert all(r.token == ALICE_TOKEN for r in log)
    for r in log:
        for token in ALL_TOKENS:
            assert token not in r.path + r.query


@pytest.mark.timeout(600)
def test_transformers_push_to_hub_then_from_pretrained_gives_identical_weights(hub_env, hub):
    code = r"""
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTConfig, ViTForImageClassification, ViTImageProcessor
torch.manual_seed(0)
config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, num_labels=3, id2label={0: "cat", 1: "dog", 2: "owl"},
                   label2id={"cat": 0, "dog": 1, "owl": 2})
model = ViTForImageClassification(config)
processor = ViTImageProcessor(size={"height": 32, "width": 32})
model.push_to_hub("alice/tiny-vit")
processor.push_to_hub("alice/tiny-vit")
model.push_to_hub("alice/tiny-vit", revision="dev", commit_message="to a branch")
for revision in ("main", "dev"):
    loaded = AutoModelForImageClassification.from_pretrained("alice/tiny-vit", revision=revision)
    assert loaded.config.id2label == {0: "cat", 1: "dog", 2: "owl"}, loaded.config.id2label
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "weights differ"
assert AutoImageProcessor.from_pretrained("alice/tiny-vit").size["height"] == 32
print("OK")
"""
    proc = run_python(code, hub_env)
    assert proc.stdout.strip().endswith("OK")
    files = hub.state.files("alice/tiny-vit")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert not any(name.endswith(".bin") for name in files)
    assert "model.safetensors" in hub.state.files("alice/tiny-vit", revision="dev")
    assert hub.state.requests_to(r"/api/models/alice/tiny-vit/branch/dev", "POST")
    assert hub.state.requests_to(r"/api/validate-yaml", "POST")
    assert not hub.state.requests_to(r"agent-harnesses")  # telemetry off
