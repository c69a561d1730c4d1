"""dqaudit: dataset-quality audit for labeled image datasets.

Public API::

    import dqaudit
    data = dqaudit.load_dataset("images/")          # -> LabeledImages
    result = dqaudit.audit("images/", out_dir="audit")  # -> AuditResult

Heavy modules load on first use, so importing dqaudit (and ``dqaudit --help``) stays instant.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "audit", "load_dataset", "AuditResult", "LabeledImages",
           "DqauditError", "InputError"]


def __getattr__(name):
    if name in ("audit", "AuditResult"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("load_dataset", "LabeledImages"):
        from . import ingest

        return getattr(ingest, name)
    if name in ("DqauditError", "InputError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'dqaudit' has no attribute {name!r}")
