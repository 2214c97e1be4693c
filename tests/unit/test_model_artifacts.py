"""The model loader loads only skops files the loop registered, with the loop's trust list, and
refuses everything else without deserializing it (issue 17, item 1)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from include.mlops.adapters import model_artifacts as ma
from include.mlops.adapters.store import Store

pytestmark = pytest.mark.unit


class Boobytrap:
    """Unpickling this writes ``marker``: proof that a load executed the artifact's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('executed')",))


def not_in_any_trust_list(x):  # a function skops would have to import to build the model
    return x


@pytest.fixture
def store(tmp_path):
    return Store.open(f"sqlite:///{tmp_path / 'ops.db'}")


@pytest.fixture(scope="module")
def fitted(spec):
    from tests.integration.serving_fixtures import train_tiny

    model, x = train_tiny(spec, rows=200, max_iter=5)
    return model, x


def save(folder: Path, model, **kwargs) -> Path:
    import mlflow.sklearn

    mlflow.sklearn.save_model(model, str(folder), **kwargs)
    return folder


def booby_trapped(folder: Path, model, marker: Path, fmt: str = "pickle") -> Path:
    """A real MLflow sklearn model saved as ``fmt``, whose model file is then replaced by a pickle
    that writes ``marker`` when it is loaded (what a hostile registry user would upload)."""
    save(folder, model, serialization_format=fmt)
    (folder / "model.pkl").write_bytes(pickle.dumps(Boobytrap(marker)))
    assert not marker.exists()
    return folder


def record(store: Store, folder: Path, version: str = "1", trusted: list[str] | None = None) -> str:
    artifact = ma.inspect_artifact(folder, "m", version)
    sha = ma.file_sha256(artifact.model_file)
    store.record_model_digest("m", version, sha, artifact.model_file.name, trusted or [])
    return sha


def load(store: Store, spec, folder: Path, version: str = "1"):
    return ma.load_artifact(store, ma.inspect_artifact(folder, "m", version), spec)


def test_a_registered_skops_model_loads_and_scores(tmp_path, store, spec, fitted):
    model, x = fitted
    folder = save(tmp_path / "ok", model, serialization_format="skops", skops_trusted_types=list(spec.training.skops_trusted_types))
    record(store, folder)
    loaded = load(store, spec, folder)
    assert (loaded.predict_proba(x[spec.feature_names])[:, 1] == model.predict_proba(x[spec.feature_names])[:, 1]).all()


def test_a_pickle_model_is_refused_and_never_executed(tmp_path, store, spec, fitted):
    marker = tmp_path / "executed.txt"
    folder = booby_trapped(tmp_path / "evil", fitted[0], marker)
    with pytest.raises(ma.UntrustedModelError) as refused:
        load(store, spec, folder)
    assert refused.value.reason_code == "not_skops"
    # recording it is refused too: nobody can make the loop vouch for a pickle
    with pytest.raises(ma.UntrustedModelError):
        record(store, folder)
    assert not marker.exists()
    # the control: the same file, unpickled, does run its code (so the test can see an execution)
    with (folder / "model.pkl").open("rb") as fh:
        pickle.load(fh)
    assert marker.read_text() == "executed"


def test_a_model_with_code_is_refused(tmp_path, store, spec, fitted):
    model, _ = fitted
    helper = tmp_path / "helper_module.py"
    helper.write_text("RAN = True\n")
    folder = save(
        tmp_path / "with-code",
        model,
        serialization_format="skops",
        skops_trusted_types=list(spec.training.skops_trusted_types),
        code_paths=[str(helper)],
    )
    with pytest.raises(ma.UntrustedModelError) as refused:
        load(store, spec, folder)
    assert refused.value.reason_code == "code_attached"


def test_a_code_folder_alone_is_refused(tmp_path, store, spec, fitted):
    model, _ = fitted
    folder = save(tmp_path / "sneaky", model, serialization_format="skops", skops_trusted_types=list(spec.training.skops_trusted_types))
    record(store, folder)
    (folder / "code").mkdir()
    (folder / "code" / "sitecustomize.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(ma.UntrustedModelError) as refused:
        load(store, spec, folder)
    assert refused.value.reason_code == "code_attached"


def test_a_changed_model_file_is_refused_before_it_is_read(tmp_path, store, spec, fitted):
    model, _ = fitted
    trusted = list(spec.training.skops_trusted_types)
    folder = save(tmp_path / "a", model, serialization_format="skops", skops_trusted_types=trusted)
    record(store, folder)
    other, _ = __import__("tests.integration.serving_fixtures", fromlist=["train_tiny"]).train_tiny(spec, seed=3, rows=200, max_iter=3)
    swapped = save(tmp_path / "b", other, serialization_format="skops", skops_trusted_types=trusted)
    shutil.copy(swapped / "model.skops", folder / "model.skops")  # a valid skops file, just not the registered one
    with pytest.raises(ma.UntrustedModelError) as refused:
        load(store, spec, folder)
    assert refused.value.reason_code == "digest_mismatch"


def test_a_version_without_a_recorded_digest_is_refused(tmp_path, store, spec, fitted):
    model, _ = fitted
    folder = save(tmp_path / "a", model, serialization_format="skops", skops_trusted_types=list(spec.training.skops_trusted_types))
    with pytest.raises(ma.UntrustedModelError) as refused:
        load(store, spec, folder)
    assert refused.value.reason_code == "digest_missing"


def test_the_artifacts_own_trust_list_is_ignored(tmp_path, store, spec, fitted):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    model, x = fitted
    wrapped = Pipeline([("f", FunctionTransformer(not_in_any_trust_list)), ("m", model)])
    name = f"{__name__}.not_in_any_trust_list"
    folder = save(tmp_path / "a", wrapped, serialization_format="skops", skops_trusted_types=[*spec.training.skops_trusted_types, name])
    record(store, folder)
    with pytest.raises(ma.UntrustedModelError) as refused:
        load(store, spec, folder)
    assert refused.value.reason_code == "untrusted_types" and name in str(refused.value)
    # trusted by the loop (recorded with the digest at registration, e.g. a drill's pipeline): loads
    record(store, folder, version="2", trusted=[name])
    assert load(store, spec, folder, version="2").predict_proba(x[spec.feature_names]).shape[1] == 2


def test_a_digest_once_recorded_cannot_be_replaced(store):
    store.record_model_digest("m", "1", "a" * 64, "model.skops", [])
    assert store.record_model_digest("m", "1", "a" * 64, "model.skops", [])["sha256"] == "a" * 64
    with pytest.raises(ValueError, match="refusing to replace"):
        store.record_model_digest("m", "1", "b" * 64, "model.skops", [])


def test_load_model_version_downloads_then_checks(tmp_path, store, spec, fitted, monkeypatch):
    marker = tmp_path / "executed.txt"
    model, _ = fitted
    evil = booby_trapped(tmp_path / "evil", model, marker, fmt="cloudpickle")
    good = save(tmp_path / "good", model, serialization_format="skops", skops_trusted_types=list(spec.training.skops_trusted_types))
    record(store, good, version="1")
    sources = {"1": good, "2": evil}

    def fake_download(name: str, version: str, dst: Path, tracking_uri: str | None = None) -> Path:
        return Path(shutil.copytree(sources[version], dst / "model"))

    monkeypatch.setattr(ma, "download_version", fake_download)
    assert ma.load_model_version(store, spec, "m", "1") is not None
    with pytest.raises(ma.UntrustedModelError) as refused:
        ma.load_model_version(store, spec, "m", "2")
    assert refused.value.reason_code == "not_skops" and not marker.exists()
