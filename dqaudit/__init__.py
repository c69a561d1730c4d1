"""dqaudit: dataset-quality audit for labeled image datasets.

Public API::

    import dqaudit
    data = dqaudit.load_dataset("images/")          # -> LabeledImages
    result = dqaudit.audit("images/", out_dir="audit")  # -> AuditResult
    dqaudit.draw_verification_sample("audit", size=300)  # -> audit/verify_sample.csv
    dqaudit.apply_verified("audit", "audit/verify_sample.csv")  # -> the verified estimate

Heavy modules load on first use, so importing dqaudit (and ``dqaudit --help``) stays instant.
"""

from .version import __version__

__all__ = ["__version__", "audit", "load_dataset", "AuditResult", "LabeledImages",
           "DqauditError", "InputError", "draw_verification_sample", "apply_verified"]


def __getattr__(name):
    if name in ("audit", "AuditResult"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("load_dataset", "LabeledImages"):
        from . import ingest

        return getattr(ingest, name)
    if name in ("draw_verification_sample", "apply_verified"):
        from . import verify

        return getattr(verify, {"draw_verification_sample": "draw_sample"}.get(name, name))
    if name in ("DqauditError", "InputError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'dqaudit' has no attribute {name!r}")
