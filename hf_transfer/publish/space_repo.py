"""Publish a Gradio Space that serves a pushed model: ``hf-transfer space push``.

The Space repo gets the app from ``space_app/``, the modules of ``hf_transfer`` the app imports (found by
reading the import statements of the app and of every module it reaches, lazy imports included), a
``requirements.txt`` pinned to the versions installed here, and the Spaces README front matter
(``SpaceCardData``). Which model to serve is set as the Space variables ``MODEL_ID`` / ``MODEL_REVISION``
that the app reads. With ``onnx_dir`` (``--onnx``: an export folder written with ``--quantize int8``) the
Space also holds that int8 graph and its description under ``onnx/``, the variable ``ONNX_MODEL`` points the
app at it, onnxruntime joins the requirements, and the Space card says which model answers. Access checks, the one-commit push and the retry command are those of
:mod:`hf_transfer.publish.hub`.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import sys
from pathlib import Path

from hf_transfer.errors import HubError
from hf_transfer.publish.hub import (
    HubAccess,
    HubPushError,
    PushResult,
    check_no_token_inside,
    check_write_access,
    commit_files,
    create_repo_checked,
    full_repo_id,
    redact,
    transport_errors,
)

SPACE_APP_FILE = "app.py"
PACKAGE = "hf_transfer"
# The Space variables the app reads to know what to serve (hf_transfer.app.page: MODEL_ENV, REVISION_ENV).
MODEL_VARIABLE, REVISION_VARIABLE, ONNX_VARIABLE = "MODEL_ID", "MODEL_REVISION", "ONNX_MODEL"
SPACE_ONNX_DIR = "onnx"  # the export's int8 graph and description, in the Space repo
ONNX_REQUIREMENTS = ("onnxruntime",)
# Always installed: what loading any hf_transfer model needs even where no module imports it by name
# (transformers loads safetensors, timm and torchvision for TimmWrapper checkpoints, peft for adapters).
# gradio is never listed: the Spaces runtime installs the README's sdk_version.
BASE_REQUIREMENTS = ("torch", "torchvision", "transformers", "huggingface_hub", "peft", "timm", "safetensors",
                     "pillow", "numpy")
SPACE_SKIP = ("__pycache__", ".pytest_cache", "tests", ".git")
MANAGED_SPACE = ("requirements.txt", f"{PACKAGE}/*", f"{SPACE_ONNX_DIR}/*")  # stale vendored modules are deleted on the next push


def default_app_dir() -> Path:
    """``space_app/`` of the source checkout this package runs from, else the copy a wheel install put under
    ``<prefix>/share/hf-transfer-learning/space_app``."""
    checkout = Path(__file__).resolve().parents[2] / "space_app"  # hf_transfer/publish/ -> the checkout
    installed = Path(sys.prefix) / "share" / "hf-transfer-learning" / "space_app"
    return checkout if (checkout / SPACE_APP_FILE).is_file() or not (installed / SPACE_APP_FILE).is_file() else installed


# ------------------------------------------------------------------------------------------------ imports


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``path`` (module ``module``; '' for app files) imports, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if module else []
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
    return {name for name in names if name}


def _module_file(name: str, package_dir: Path) -> Path | None:
    rel = name.split(".")[1:]
    for candidate in (package_dir.joinpath(*rel).with_suffix(".py"), package_dir.joinpath(*rel, "__init__.py")):
        if rel and candidate.is_file():
            return candidate
    return package_dir / "__init__.py" if not rel else None


def vendored_modules(app_files: list[Path], package_dir: Path | None = None) -> tuple[dict[str, Path], set[str]]:
    """The ``hf_transfer`` modules the app reaches (``{path in repo: file}``) and the top-level names of the
    third-party packages those modules and the app import."""
    package_dir = package_dir or Path(__file__).resolve().parents[1]  # hf_transfer/, above publish/
    todo = [(path, "") for path in app_files if path.suffix == ".py"]
    seen: dict[str, Path] = {}
    external: set[str] = set()
    while todo:
        path, module = todo.pop()
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top != PACKAGE:
                external.add(top)
                continue
            found = _module_file(name, package_dir)
            if found is None:
                continue
            for parent in [found.parent, *found.parent.parents]:  # a submodule needs its packages' __init__
                init = parent / "__init__.py"
                if parent == package_dir.parent:
                    break
                rel = f"{PACKAGE}/{init.relative_to(package_dir).as_posix()}"
                if init.is_file() and rel not in seen:
                    seen[rel] = init
                    todo.append((init, ".".join([PACKAGE, *init.parent.relative_to(package_dir).parts])))
            rel = f"{PACKAGE}/{found.relative_to(package_dir).as_posix()}"
            if rel not in seen:
                seen[rel] = found
                dotted = found.relative_to(package_dir).with_suffix("").parts
                dotted = dotted[:-1] if dotted[-1] == "__init__" else dotted
                todo.append((found, ".".join([PACKAGE, *dotted])))
    local = {p.stem for p in app_files} | {p.parent.name for p in app_files}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    return seen, {name for name in external if name not in stdlib and name not in local}


# ------------------------------------------------------------------------------------------------ files


def _pinned(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name


def _distributions(modules: set[str]) -> set[str]:
    """Installed distributions that provide the top-level ``modules`` (PIL → pillow, yaml → PyYAML)."""
    from importlib.metadata import packages_distributions

    provided = packages_distributions()
    names = set()
    for module in modules:
        dists = provided.get(module)
        if not dists:
            raise HubError(f"The Space imports {module!r}, which is not installed here, so its version cannot be "
                           f"pinned: pip install it (or remove the import), then retry.")
        names.add(dists[0])
    return names


def space_requirements(app_dir: Path, *, imported: set[str] = frozenset(), extra: tuple[str, ...] = ()) -> str:
    """requirements.txt for the Space: the app's own lines, the packages the app and its hf_transfer modules
    import, the base set and ``extra``, unpinned ones pinned to the versions installed here."""
    lines: dict[str, str] = {}
    own = app_dir / "requirements.txt"

    def add(line: str) -> None:
        name = re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0]
        key = name.replace("_", "-").lower()
        if name and not name.startswith("-") and key not in ("gradio", "hf-transfer-learning") and key not in lines:
            lines[key] = line if re.search(r"[<>=~]", line) else _pinned(name)

    for raw in own.read_text().splitlines() if own.is_file() else []:
        if line := raw.split("#", 1)[0].strip():
            add(line)
    for name in sorted(_distributions(set(imported) - {"gradio", "gradio_client"})) + [*BASE_REQUIREMENTS, *extra]:
        add(name)
    return "".join(f"{line}\n" for _, line in sorted(lines.items()))


def onnx_space_files(export_dir: str | Path) -> dict[str, Path]:
    """``{onnx/<name>: file}``: an export folder's int8 graph and what describes it (labels, preprocessing, report)."""
    from hf_transfer.evaluation.onnx_model import EXPORT_REPORT_FILE, INT8_FILE

    folder = Path(export_dir)
    if not (folder / INT8_FILE).is_file():
        raise HubError(f"--onnx {folder} holds no {INT8_FILE}: the Space serves the int8 model. Export it with "
                       f"`hf-transfer export --model RUN --format onnx --quantize int8 --output-dir {folder}-int8`.")
    names = [INT8_FILE, EXPORT_REPORT_FILE, "config.json", "preprocessor_config.json", "labels.json"]
    return {f"{SPACE_ONNX_DIR}/{name}": folder / name for name in names if (folder / name).is_file()}


def plan_space_files(app_dir: str | Path | None, *, model_id: str, space_id: str,
                     extra_requirements: tuple[str, ...] = (), onnx_dir: str | Path | None = None,
                     ) -> dict[str, Path | bytes]:
    """``{path in Space repo: file or bytes}``: the app, the hf_transfer modules it imports, requirements.txt
    and the Spaces README front matter (which names the model it serves, and which graph answers)."""
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
                and rel.as_posix() not in ("README.md", "requirements.txt") and rel.parts[0] != PACKAGE:
            files[rel.as_posix()] = path
    modules, imported = vendored_modules([p for p in files.values() if isinstance(p, Path)])
    files.update(modules)
    if onnx_dir is not None:
        files.update(onnx_space_files(onnx_dir))
        extra_requirements = (*extra_requirements, *ONNX_REQUIREMENTS)
    files["requirements.txt"] = space_requirements(app_dir, imported=imported, extra=extra_requirements).encode()
    try:
        sdk_version = version("gradio")
    except PackageNotFoundError:
        raise HubError("gradio is not installed here, so the Space's sdk_version is unknown: pip install gradio.") from None
    data = SpaceCardData(title=space_id.split("/")[-1][:30], sdk="gradio", sdk_version=sdk_version,
                         app_file=SPACE_APP_FILE, models=[model_id], tags=["hf-transfer", "image-classification"],
                         short_description=f"Image classifier demo of {model_id}"[:60])
    body = (f"# {space_id.split('/')[-1]}\n\nA Gradio demo of the image classifier "
            f"[{model_id}](https://huggingface.co/{model_id}), published with hf_transfer. The app serves the model "
            f"named by the Space variable `{MODEL_VARIABLE}` (and `{REVISION_VARIABLE}`, when set).\n\n"
            f"{_answered_by(onnx_dir)}\n")
    files["README.md"] = str(SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")).encode()
    return files


def _answered_by(onnx_dir: str | Path | None) -> str:
    """The card's line saying which model answers the page's visitors."""
    if onnx_dir is None:
        return "**Model that answers:** the fp32 torch model of the repo (transformers)."
    report = Path(onnx_dir) / "export_report.json"
    agreement = ((json.loads(report.read_text()) if report.is_file() else {}).get("int8") or {}).get("agreement") or {}
    share = (f" It kept the fp32 model's top label on {100 * agreement['top1_agreement']:.1f} % of "
             f"{agreement['images']} calibration images.") if agreement else ""
    return (f"**Model that answers:** the int8 ONNX export in `{SPACE_ONNX_DIR}/` (static quantization, onnxruntime on "
            f"the CPU), not the fp32 torch weights.{share}")


# ------------------------------------------------------------------------------------------------ push


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
                  app_dir: str | Path | None = None, onnx_dir: str | Path | None = None) -> str:
    """The ``hf-transfer space push`` command line that (re)does this publication."""
    parts = ["hf-transfer", "space", "push", "--model", model_id, "--space-id", space_id]
    if private:
        parts.append("--private")
    if model_revision:
        parts += ["--model-revision", model_revision]
    if app_dir is not None:
        parts += ["--app-dir", str(app_dir)]
    if onnx_dir is not None:
        parts += ["--onnx", str(onnx_dir)]
    return shlex.join(parts)


def push_space(model_id: str, space_id: str, *, private: bool = False, model_revision: str | None = None,
               app_dir: str | Path | None = None, token: str | None = None, endpoint: str | None = None,
               onnx_dir: str | Path | None = None) -> PushResult:
    """Create or update the Gradio Space ``space_id`` serving ``model_id`` (which must exist on the Hub); with
    ``onnx_dir`` the Space answers with that export's int8 ONNX graph instead of the torch model."""
    if onnx_dir is not None:
        onnx_space_files(onnx_dir)  # refused before anything is created on the Hub
    access = check_write_access(space_id, token=token, endpoint=endpoint)
    space_id = full_repo_id(space_id, access)
    retry = space_command(model_id, space_id, private=private, model_revision=model_revision, app_dir=app_dir,
                          onnx_dir=onnx_dir)
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
    files = plan_space_files(app_dir, model_id=model_id, space_id=space_id, onnx_dir=onnx_dir)
    check_no_token_inside(files, access.api.token)
    create_repo_checked(access, space_id, repo_type="space", private=private, retry=retry, space_sdk="gradio")
    result = commit_files(access, space_id, repo_type="space", files=files, revision=None, managed=MANAGED_SPACE,
                     message=f"Serve {model_id} (published with hf_transfer)", retry=retry)
    result.changed |= _set_space_variables(access, space_id, {
        MODEL_VARIABLE: model_id, REVISION_VARIABLE: model_revision,
        ONNX_VARIABLE: SPACE_ONNX_DIR if onnx_dir is not None else None}, retry=retry)
    if model.private:
        print(f"note: {model_id} is private, so the Space needs a read token to load it: add it as the Space secret "
              f"HF_TOKEN in {result.url}/settings (hf_transfer never uploads your token).")
    return result
