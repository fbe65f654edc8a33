"""The Hugging Face Hub side of a run: check access, push the model or adapter with its card, pull by id,
publish the Space.

Rules this module keeps:

- The token comes from the usual places (``token=``, ``HF_TOKEN``, the ``hf auth login`` token file) and
  is checked with ``whoami`` before any work (``check_write_access``): a missing, invalid or read-only
  token, or a namespace the token's user cannot write to, fails at once with the fix in the message.
  The token is never written into a card, a config, a log line or an error message, and a push refuses
  to upload a file that contains it.
- A push is one commit (``create_commit``): it lands whole or not at all. On failure the local folder is
  untouched and the error carries the exact command that retries it; files the Hub already has with the
  same content are not sent again, and a push that changes nothing makes no commit.
- Only what a user of the model needs is pushed: safetensors weights (never ``checkpoints/``, pickles or
  optimizer state), the image processor, labels, metrics, plots, the card, a few example images.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_transfer import run_folder
from hf_transfer.errors import HubError
from hf_transfer.publish.model_card import build_model_card, dumps_card, hub_id_or_none

TOKEN_HELP = ("Create a token with write access at https://huggingface.co/settings/tokens, then run "
              "`hf auth login` (or set HF_TOKEN=<token>).")
# Files of a run that a pushed repo may hold. Everything else in the output folder stays local.
MODEL_FILES = (run_folder.MODEL_CONFIG_FILE, run_folder.MODEL_WEIGHTS_FILE, "model-*-of-*.safetensors",
               "model.safetensors.index.json", run_folder.PROCESSOR_FILE, run_folder.LABELS_FILE)
ADAPTER_FILES = (run_folder.ADAPTER_CONFIG_FILE, run_folder.ADAPTER_WEIGHTS_FILE, run_folder.PROCESSOR_FILE,
                 run_folder.LABELS_FILE)
REPORT_FILES = (run_folder.METRICS_FILE, run_folder.SUMMARY_FILE, run_folder.CONFIG_FILE, run_folder.CONFUSION_FILE,
                run_folder.CALIBRATION_FILE, run_folder.RELIABILITY_FILE, run_folder.TOP_LOSSES_FILE)
# Repo paths a push manages: stale ones (from an earlier push of another kind) are deleted in the same commit.
MANAGED = (*MODEL_FILES, *ADAPTER_FILES, *REPORT_FILES, f"{run_folder.EXAMPLES_DIR}/*")


class HubAuthError(HubError, PermissionError):
    """No token, an invalid or read-only token, or no write access to the namespace."""


class HubPushError(HubError):
    """A push failed midway; nothing local was changed. ``retry_command`` redoes it."""

    def __init__(self, message: str, *, retry_command: str) -> None:
        super().__init__(message)
        self.retry_command = retry_command


@dataclass(frozen=True)
class HubAccess:
    api: Any  # huggingface_hub.HfApi bound to the endpoint and token
    user: str
    namespaces: tuple[str, ...]
    token_source: str


@dataclass
class PushResult:
    repo_id: str
    repo_type: str
    revision: str
    commit_oid: str
    url: str
    changed: bool
    files: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = "Space" if self.repo_type == "space" else "repo"
        if not self.changed:
            return f"{self.url}: nothing changed, no new commit ({self.commit_oid[:10]} on {self.revision})."
        return f"pushed {len(self.files)} file(s) to {what} {self.url} (commit {self.commit_oid[:10]} on {self.revision})."


# ------------------------------------------------------------------------------------------------ tokens


def transport_errors() -> tuple[type[BaseException], ...]:
    """What a Hub call raises when it fails: HTTP errors (HfHubHTTPError is an OSError), dropped connections and
    timeouts of the client's HTTP library (httpx2 in huggingface_hub 2.x, httpx in 1.x), bad input (ValueError)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def redact(text: str, token: str | None) -> str:
    """``text`` with every occurrence of ``token`` replaced (error messages can quote server text)."""
    return text.replace(token, "hf_***") if token else text


def find_token(token: str | None = None) -> tuple[str, str]:
    """(token, where it came from): ``token=``, then ``HF_TOKEN``, then the ``hf auth login`` token file."""
    from huggingface_hub import get_token

    if token:
        return token, "the token passed in"
    found = get_token()
    if not found:
        raise HubAuthError(f"No Hugging Face token found (HF_TOKEN is unset and `hf auth login` was not run). {TOKEN_HELP}")
    source = "the HF_TOKEN environment variable" if os.environ.get("HF_TOKEN") == found else "the `hf auth login` token file"
    return found, source


def check_write_access(repo_id: str, *, token: str | None = None, endpoint: str | None = None) -> HubAccess:
    """Who the token belongs to, checked before any work; raises :class:`HubAuthError` with the fix when the
    token is missing, invalid or read-only, or cannot write to ``repo_id``'s namespace."""
    from huggingface_hub import HfApi

    token, source = find_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.whoami()
    except transport_errors() as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise HubAuthError(
                f"The Hub at {api.endpoint} rejected the token from {source} (401): it is invalid, expired or "
                f"revoked. {TOKEN_HELP} (`hf auth login --force` replaces a stored token.)"
            ) from None
        detail = " ".join(redact(str(error), token).split())[:300]
        if status is not None:
            raise HubError(f"The Hub at {api.endpoint} answered HTTP {status} when checking the token ({detail}). "
                           "Wait a moment and retry (429: too many requests; 5xx: the Hub is having trouble).") from None
        raise HubError(
            f"Cannot reach the Hub at {api.endpoint} to check the token ({type(error).__name__}: {detail}). "
            "Check the network (and HF_ENDPOINT), then retry."
        ) from None
    user = info.get("name", "")
    orgs = tuple(o.get("name", "") for o in info.get("orgs") or [])
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubAuthError(f"The token from {source} (user {user}) is read-only: pushing needs write access. {TOKEN_HELP}")
    namespace = repo_id.split("/")[0] if "/" in repo_id else user
    if namespace not in (user, *orgs):
        raise HubAuthError(
            f"The token from {source} belongs to {user!r} (orgs: {', '.join(orgs) or 'none'}), who cannot write to "
            f"the namespace {namespace!r} of {repo_id!r}. Push to {user}/{repo_id.split('/')[-1]} instead, or use a "
            f"token of a member of {namespace!r}."
        )
    return HubAccess(api=api, user=user, namespaces=(user, *orgs), token_source=source)


def full_repo_id(repo_id: str, access: HubAccess) -> str:
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise HubError(f"--repo-id {repo_id!r} is not a repo id: use NAMESPACE/NAME, e.g. {access.user}/my-classifier.")
    return repo_id if "/" in repo_id else f"{access.user}/{repo_id}"


# ------------------------------------------------------------------------------------------------ push plan


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def plan_model_files(run_dir: str | Path, *, adapter_only: bool = False, include_examples: bool = True) -> dict[str, Path]:
    """``{path in repo: local file}`` for a push of ``run_dir``; raises HubError naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a folder" if run_dir.exists() else "does not exist"
        raise HubError(f"--model-dir {run_dir} {what}. Pass the --output-dir of a finished `hf-transfer train` run.")
    weights_dir = run_dir / run_folder.ADAPTER_DIR if adapter_only else run_dir
    patterns = ADAPTER_FILES if adapter_only else MODEL_FILES
    found = sorted(weights_dir.iterdir()) if weights_dir.is_dir() else []
    files = {p.name: p for p in found if p.is_file() and _matches(p.name, patterns)}
    weights = run_folder.ADAPTER_WEIGHTS_FILE if adapter_only else run_folder.MODEL_WEIGHTS_FILE
    if not any(name.endswith(".safetensors") for name in files):
        hint = ("it holds no adapter/ folder: only peft runs (--strategy lora, dora, ...) have one; drop --adapter-only"
                if adapter_only else "the run may not have finished")
        pickles = sorted(p.name for p in weights_dir.glob("*.bin")) if weights_dir.is_dir() else []
        if pickles:
            hint = f"it has only pickle weights ({', '.join(pickles)}), which hf_transfer does not push"
        raise HubError(f"{weights_dir} has no {weights}: {hint}. Pass the --output-dir of a finished run.")
    if adapter_only and run_folder.ADAPTER_CONFIG_FILE not in files:
        raise HubError(f"{weights_dir} has no {run_folder.ADAPTER_CONFIG_FILE}: the adapter folder is incomplete. "
                       "Re-run training.")
    if not adapter_only and run_folder.MODEL_CONFIG_FILE not in files:
        raise HubError(f"{run_dir} has no {run_folder.MODEL_CONFIG_FILE} next to the weights. Re-run training or pass "
                       "the right folder.")
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and _matches(path.name, REPORT_FILES):
            files.setdefault(path.name, path)
    examples = run_dir / run_folder.EXAMPLES_DIR
    if include_examples and examples.is_dir():
        for path in sorted(examples.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[path.relative_to(run_dir).as_posix()] = path
    return files


def adapter_base_model(run_dir: Path) -> str | None:
    config = run_folder.read_json(run_dir / run_folder.ADAPTER_DIR / run_folder.ADAPTER_CONFIG_FILE, {}) or {}
    return config.get("base_model_name_or_path")


def run_base_model(run_dir: str | Path) -> str | None:
    summary = run_folder.TrainingSummary.read(run_dir)
    return summary.base_model if summary is not None else None


def check_no_token_inside(files: dict[str, Path | bytes], token: str) -> None:
    """Refuse to push a file that holds the token (a config or log that captured it)."""
    needle = token.encode()
    for path_in_repo, source in files.items():
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        if needle in data:
            raise HubError(f"{path_in_repo} contains your Hub token: refusing to push it. Remove the token from that "
                           "file (and consider revoking the token), then retry.")


def base_model_license(base_model: str | None, *, revision: str | None, api) -> str | None:
    """The license stated by the base model's card: local folder / embedded README, or the Hub's card data."""
    from huggingface_hub import ModelCard

    if not base_model:
        return None
    from hf_transfer import cache
    from hf_transfer.modeling import bundled

    if cache.is_embedded(base_model):
        return bundled.CHECKPOINT_LICENSES.get(base_model.split(":", 1)[1])
    local = Path(base_model).expanduser()
    if local.is_dir():
        readme = local / run_folder.CARD_FILE
        return ModelCard.load(readme).data.get("license") if readme.is_file() else None
    if hub_id_or_none(base_model) is None or api is None:
        return None
    try:
        card = api.model_info(base_model, revision=revision).card_data
    except transport_errors():
        return None  # unknown: the card says so instead of guessing
    return card.get("license") if card is not None else None


def push_command(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                 adapter_only: bool = False, include_examples: bool = True) -> str:
    """The ``hf-transfer push`` command line that (re)does this push."""
    parts = ["hf-transfer", "push", "--model-dir", str(run_dir), "--repo-id", repo_id]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    if adapter_only:
        parts.append("--adapter-only")
    if not include_examples:
        parts.append("--no-examples")
    return shlex.join(parts)


# ------------------------------------------------------------------------------------------------ commit


def commit_files(access: HubAccess, repo_id: str, *, repo_type: str, files: dict[str, Path | bytes], revision: str | None,
            managed: tuple[str, ...], message: str, retry: str) -> PushResult:
    """One commit that adds ``files`` and deletes stale ``managed`` paths; HubPushError (with ``retry``) on failure."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api = access.api
    token = api.token
    branch = revision or "main"
    try:
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        before = api.repo_info(repo_id, repo_type=repo_type, revision=branch)
        stale = sorted(s.rfilename for s in before.siblings or []
                       if s.rfilename not in files and _matches(s.rfilename, managed))
        operations: list[Any] = [CommitOperationDelete(path) for path in stale]
        operations += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=src if isinstance(src, bytes) else str(src))
                       for path, src in files.items()]
        info = api.create_commit(repo_id, operations=operations, commit_message=message, repo_type=repo_type,
                                 revision=revision)
    except transport_errors() as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        detail = redact(str(error), token).strip().splitlines()
        reason = f"HTTP {status}" if status else type(error).__name__
        raise HubPushError(
            f"Push to {repo_id} failed ({reason}: {' '.join(detail)[:400]}). Nothing local was changed. The push is "
            f"one commit, so the Hub repo holds all of it or none of it, and retrying is safe (files already there "
            f"are not sent again). Retry with:\n  {retry}",
            retry_command=retry,
        ) from None
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return PushResult(repo_id=repo_id, repo_type=repo_type, revision=branch, commit_oid=info.oid,
                      url=f"{api.endpoint}/{prefix}{repo_id}", changed=info.oid != before.sha,
                      files=sorted(files), deleted=stale)


def create_repo_checked(access: HubAccess, repo_id: str, *, repo_type: str, private: bool, retry: str, **kwargs) -> None:
    api = access.api
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **kwargs)
        info = api.repo_info(repo_id, repo_type=repo_type)
    except transport_errors() as error:
        raise HubPushError(f"Could not create or read {repo_type} repo {repo_id}: "
                           f"{redact(str(error), api.token)[:400]}. Retry with:\n  {retry}", retry_command=retry) from None
    if private and not info.private:
        raise HubError(f"{repo_id} already exists and is public, but --private was asked: nothing was pushed. Make it "
                       "private in its settings on the Hub, or drop --private to publish.")


def push_model(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
               adapter_only: bool = False, include_examples: bool = True, token: str | None = None,
               endpoint: str | None = None, commit_message: str | None = None) -> PushResult:
    """Push a run's merged model (or, with ``adapter_only``, its peft adapter) with a model card."""
    run_dir = Path(run_dir)
    files: dict[str, Path | bytes] = dict(plan_model_files(run_dir, adapter_only=adapter_only,
                                                           include_examples=include_examples))
    if adapter_only:
        base = adapter_base_model(run_dir)
        if base and not hub_id_or_none(base) and not base.startswith("embedded:"):
            raise HubError(f"The adapter's base model is the local folder {base!r}: nobody pulling {repo_id} could load "
                           "it. Push the merged model instead (drop --adapter-only), or train from a Hub model id.")
    access = check_write_access(repo_id, token=token, endpoint=endpoint)
    repo_id = full_repo_id(repo_id, access)
    retry = push_command(run_dir, repo_id, private=private, revision=revision, adapter_only=adapter_only,
                         include_examples=include_examples)
    summary = run_folder.TrainingSummary.read(run_dir) or run_folder.TrainingSummary()
    license_ = base_model_license(summary.base_model, revision=summary.base_revision, api=access.api)
    card = build_model_card(run_dir, repo_id=repo_id, adapter=adapter_only, license=license_, pushed_files=set(files))
    files[run_folder.CARD_FILE] = dumps_card(card)
    check_no_token_inside(files, access.api.token)
    create_repo_checked(access, repo_id, repo_type="model", private=private, retry=retry)
    kind = "peft adapter" if adapter_only else "model"
    return commit_files(access, repo_id, repo_type="model", files=files, revision=revision, managed=MANAGED,
                   message=commit_message or f"Upload {kind} trained with hf_transfer", retry=retry)
