"""The model serving API: FastAPI + uvicorn in front of the MLflow registry's champion/challenger.

Modules: :mod:`.schema` (request validation built from the spec), :mod:`.routing` (sticky canary
split), :mod:`.models` (loading, polling and atomic hot swap), :mod:`.batching` (micro-batching of
concurrent requests into one ``predict_proba`` call), :mod:`.logwriter` (the inference log, off the
request path), :mod:`.metrics` (Prometheus) and :mod:`.app` (the HTTP endpoints; the uvicorn factory
is ``include.mlops.serving.app:create_app``).
"""
