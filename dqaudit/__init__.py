"""dqaudit: dataset-quality audit for labeled image datasets.

Public API::

    import dqaudit
    audit = dqaudit.audit("images/", out_dir="audit")     # -> Audit (scan, write, report)
    audit = dqaudit.Audit.load("audit")                    # the same, from its folder
    audit.samples, audit.summary, audit.probs, audit.embeddings
    audit.review_queue(budget=100); audit.apply_corrections("fixed.csv")
    audit.draw_verification_sample(size=300); audit.apply_verified("audit/verify_sample.csv")
    dqaudit.Audit.from_arrays(labels, embeddings=features, pred_probs=probs)
    audit.evaluate({"resnet": "preds.csv"})                # a model's accuracy, corrected
    audit.get_issues("label"); audit.get_issue_summary(); audit.report()   # Datalab's shapes

Heavy modules load on first use, so importing dqaudit (and ``dqaudit --help``) stays instant.
"""

from dqaudit.version import __version__

__all__ = ["__version__", "audit", "Audit", "AuditConfig", "EmbedConfig", "ScoreConfig",
           "ClrConfig", "ReportConfig", "load_dataset", "LabeledImages", "DqauditError",
           "InputError", "draw_verification_sample", "apply_verified"]

_HOMES = {
    "audit": "api", "Audit": "api", "draw_verification_sample": "api", "apply_verified": "api",
    "AuditConfig": "config", "EmbedConfig": "config", "ScoreConfig": "config",
    "ReportConfig": "config", "ClrConfig": "estimates.clr",
    "load_dataset": "io.ingest", "LabeledImages": "dataset",
    "DqauditError": "errors", "InputError": "errors",
}


def __dir__():
    """The public names too, for ``dir(dqaudit)`` and tab completion."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'dqaudit' has no attribute {name!r}")
