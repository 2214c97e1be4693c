"""The one way the loop loads a registered model: as data, never as code.

``mlflow.sklearn.load_model`` takes everything from the model's own ``MLmodel`` file: the
serialization format (pickle and cloudpickle run code), the skops trust list, and a ``code/``
folder it puts on ``sys.path``. Anyone who can write to the registry (the local MLflow has no
auth) could make the serving API or a DAG task run their code. Here:

* the version's artifact is downloaded and its ``MLmodel`` is read with ``yaml.safe_load`` (data);
* anything but the sklearn flavor saved as **skops** is refused, and so is a model that ships code
  (a ``code/`` folder, or ``code``/``code_paths`` in a flavor);
* the model file's sha256 must equal the one the loop recorded when it registered the version
  (:func:`record_model_digest`, in the ops store: MLflow only shows a copy as a version tag);
* skops loads it with the trust list of the loop (the spec's ``training.skops_trusted_types``, the
  pipeline factory's own, and those recorded with the digest at registration), never the artifact's.

A refusal is an :class:`UntrustedModelError` with a reason code (:data:`REASONS`); nothing in the
artifact is deserialized before every check has passed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from include.mlops.adapters.store import Store
    from include.mlops.domain.spec import Spec

log = logging.getLogger(__name__)

#: Version tag showing the digest in MLflow's UI (display only: the ops store's copy is checked).
TAG_SHA256 = "mlops.model_sha256"

#: Reason codes of a refusal, and what they mean.
REASONS = {
    "not_sklearn": "the artifact has no sklearn flavor",
    "not_skops": "the model is not serialized with skops (pickle and cloudpickle can run code)",
    "code_attached": "the model ships code (a code/ folder or code_paths)",
    "model_file_missing": "the model file named in MLmodel is missing or outside the artifact",
    "digest_missing": "no sha256 was recorded for this version when the loop registered it",
    "digest_mismatch": "the model file differs from the one recorded at registration",
    "untrusted_types": "the model holds types outside the loop's skops trust list",
    "unreadable_mlmodel": "the MLmodel file is missing or not a YAML mapping",
}


class UntrustedModelError(Exception):
    """A model version the loop refuses to load; ``reason_code`` is one of :data:`REASONS`."""

    def __init__(self, reason_code: str, model: str, version: str, detail: str = ""):
        self.reason_code = reason_code
        self.model = model
        self.version = str(version)
        text = REASONS.get(reason_code, reason_code)
        super().__init__(f"{model} v{version} refused ({reason_code}): {text}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class Artifact:
    """A downloaded model version whose ``MLmodel`` passed :func:`inspect_artifact`."""

    model: str
    version: str
    folder: Path
    model_file: Path
    mlmodel: dict[str, Any]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_mlmodel(folder: Path) -> dict[str, Any] | None:
    """The ``MLmodel`` file as plain data (``yaml.safe_load``: no tags, no objects)."""
    import yaml

    path = folder / "MLmodel"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def inspect_artifact(folder: Path, model: str, version: str) -> Artifact:
    """Check a downloaded artifact's ``MLmodel`` and layout without deserializing anything."""
    meta = read_mlmodel(folder)
    if meta is None:
        raise UntrustedModelError("unreadable_mlmodel", model, version)
    found = meta.get("flavors")
    flavors: dict[str, Any] = found if isinstance(found, dict) else {}
    sk = flavors.get("sklearn")
    if not isinstance(sk, dict):
        raise UntrustedModelError("not_sklearn", model, version, f"flavors: {sorted(flavors)}")
    fmt = sk.get("serialization_format", "pickle")
    if fmt != "skops":
        raise UntrustedModelError("not_skops", model, version, f"serialization_format is {fmt!r}")
    shipped = [name for name, conf in flavors.items() if isinstance(conf, dict) and (conf.get("code") or conf.get("code_paths"))]
    if shipped or (folder / "code").exists():
        raise UntrustedModelError("code_attached", model, version, f"code in {shipped or ['code/']}")
    name = sk.get("pickled_model")
    path = folder / str(name) if isinstance(name, str) else None
    if path is None or Path(str(name)).name != name or not path.is_file() or path.is_symlink():
        raise UntrustedModelError("model_file_missing", model, version, f"pickled_model is {name!r}")
    return Artifact(model, str(version), folder, path, meta)


def download_version(model: str, version: str, dst: Path, tracking_uri: str | None = None) -> Path:
    """Download ``model`` version ``version``'s artifact into ``dst`` (files only, nothing loaded)."""
    import mlflow.artifacts

    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{version}", dst_path=str(dst), tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
    )


def loop_trusted_types(spec: Spec, recorded: list[str] | None = None) -> list[str]:
    """The types skops may load: the spec's list, its pipeline factory's own, and those the loop
    recorded when it registered the version (a one-off pipeline's, e.g. a fire drill's)."""
    from include.mlops.domain.pipelines import trusted_types

    return list(dict.fromkeys([*trusted_types(spec), *(recorded or [])]))


def load_artifact(store: Store, artifact: Artifact, spec: Spec) -> Any:
    """Verify the digest, then load the model file with skops and the loop's trust list."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    from include.mlops.adapters.registry import quiet_model_imports

    record = store.model_digest(artifact.model, artifact.version)
    if record is None:
        raise UntrustedModelError("digest_missing", artifact.model, artifact.version)
    actual = file_sha256(artifact.model_file)
    if actual != record["sha256"]:
        detail = f"recorded {record['sha256'][:12]}, found {actual[:12]}"
        raise UntrustedModelError("digest_mismatch", artifact.model, artifact.version, detail)
    trusted = loop_trusted_types(spec, list(record.get("trusted_types") or []))
    quiet_model_imports()
    try:
        untrusted = [t for t in skops.io.get_untrusted_types(file=artifact.model_file) if t not in trusted]
        if untrusted:
            raise UntrustedModelError("untrusted_types", artifact.model, artifact.version, ", ".join(untrusted)[:500])
        return skops.io.load(artifact.model_file, trusted=trusted)
    except UntrustedTypesFoundException as exc:
        raise UntrustedModelError("untrusted_types", artifact.model, artifact.version, str(exc)[:500]) from None


def load_model_version(store: Store, spec: Spec, model: str, version: str, *, tracking_uri: str | None = None) -> Any:
    """The scikit-learn model of ``model`` version ``version``, or :class:`UntrustedModelError`."""
    tmp = Path(tempfile.mkdtemp(prefix="mlops-model-"))
    try:
        artifact = inspect_artifact(download_version(model, str(version), tmp, tracking_uri), model, str(version))
        return load_artifact(store, artifact, spec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model_version_pyfunc(store: Store, spec: Spec, model: str, version: str, *, tracking_uri: str | None = None) -> Any:
    """The same model as an MLflow ``PyFuncModel`` (for ``mlflow.models.evaluate``), built from the
    verified object: MLflow never loads the artifact itself."""
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel
    from mlflow.sklearn import _SklearnModelWrapper

    tmp = Path(tempfile.mkdtemp(prefix="mlops-model-"))
    try:
        artifact = inspect_artifact(download_version(model, str(version), tmp, tracking_uri), model, str(version))
        raw = load_artifact(store, artifact, spec)
        meta = Model.load(str(artifact.folder / "MLmodel"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PyFuncModel(model_meta=meta, model_impl=_SklearnModelWrapper(raw), model_id=meta.model_id)


def record_model_digest(
    store: Store,
    client: MlflowClient,
    model: str,
    version: str,
    trusted_types: list[str],
    *,
    tracking_uri: str | None = None,
    recorded_by: str | None = None,
) -> str:
    """Record the sha256 of a version the loop has just registered (ops store, and a version tag
    for display); refuses (:class:`UntrustedModelError`) an artifact that is not skops or ships code."""
    tmp = Path(tempfile.mkdtemp(prefix="mlops-digest-"))
    try:
        artifact = inspect_artifact(download_version(model, str(version), tmp, tracking_uri), model, str(version))
        sha = file_sha256(artifact.model_file)
        store.record_model_digest(model, str(version), sha, artifact.model_file.name, list(trusted_types), recorded_by)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    client.set_model_version_tag(model, str(version), TAG_SHA256, sha)
    log.info("recorded sha256 %s of %s v%s", sha[:12], model, version)
    return sha


def register_sklearn_model(
    store: Store,
    pipe: Any,
    model: str,
    trusted_types: list[str],
    *,
    recorded_by: str | None = None,
    **log_model_kwargs: Any,
) -> str:
    """Log ``pipe`` as a new version of ``model`` with skops (inside the active MLflow run) and
    record its digest: the project's registration function. Returns the version."""
    import mlflow
    import mlflow.sklearn

    from include.mlops.adapters.registry import mlflow_client, quiet_model_imports

    quiet_model_imports()
    info = mlflow.sklearn.log_model(
        pipe,
        name=log_model_kwargs.pop("name", "model"),
        registered_model_name=model,
        serialization_format="skops",
        skops_trusted_types=list(trusted_types),
        **log_model_kwargs,
    )
    version = str(info.registered_model_version)
    uri = mlflow.get_tracking_uri()
    record_model_digest(store, mlflow_client(uri), model, version, trusted_types, tracking_uri=uri, recorded_by=recorded_by)
    return version


def main(argv: list[str] | None = None) -> int:
    """``python -m include.mlops.adapters.model_artifacts record-digest <version> [<model>]``: vouch
    for a version registered before digests existed (it must be skops without code; its file's
    sha256 as it is now is recorded, with the spec's trust list)."""
    import sys

    from include.mlops.adapters.registry import mlflow_client
    from include.mlops.adapters.store import Store
    from include.mlops.domain.pipelines import trusted_types
    from include.mlops.domain.spec import load_spec
    from include.mlops.settings import get_settings

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3) or args[0] != "record-digest":
        print("usage: python -m include.mlops.adapters.model_artifacts record-digest <version> [<model>]", file=sys.stderr)
        return 2
    s = get_settings()
    spec = load_spec(s.spec_path)
    model = args[2] if len(args) == 3 else s.model_name_override or spec.name
    client = mlflow_client(s.mlflow_tracking_uri)
    try:
        sha = record_model_digest(
            Store.open(s.ops_db_url),
            client,
            model,
            args[1],
            trusted_types(spec),
            tracking_uri=s.mlflow_tracking_uri,
            recorded_by="operator",
        )
    except (UntrustedModelError, ValueError) as exc:
        print(f"not recorded: {exc}", file=sys.stderr)
        return 1
    print(f"{model} v{args[1]}: sha256 {sha} recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
