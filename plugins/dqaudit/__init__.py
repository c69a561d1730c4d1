"""dqaudit FiftyOne plugin: run the label audit on the dataset (or a view of it) from the App.

Each operator's ``execute`` is one call into the dqaudit library (no algorithm code here);
every expected failure (``dqaudit.errors.expected_failure``: the project's errors, a missing,
unwritable or full file) becomes one App notification through ``reported``; a bug keeps its
traceback.
"""

import functools
import os

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")  # before FiftyOne is imported

import fiftyone.operators as foo  # noqa: E402
import fiftyone.operators.types as types  # noqa: E402

from dqaudit.config import InputConfig, default  # noqa: E402 (imports no FiftyOne)

DEFAULT_LABEL_FIELD = default(InputConfig, "label_field")


def _label_fields(ctx):
    import fiftyone as fo

    # a Classification field: an image audit; Detections: every box audited as a sample
    schema = ctx.dataset.get_field_schema(embedded_doc_type=[fo.Classification, fo.Detections])
    return sorted(name for name in schema if not name.startswith("dq_"))


def _audited_field(ctx):
    from dqaudit.cli.app import audited_label_field

    return audited_label_field(ctx.dataset)


def _objects(ctx, label_field):
    """The boxes selected in the App (labels, or patches of dq_suspect_objects): an object
    audit's review acts on them; none selected, the samples are reviewed."""
    from dqaudit.cli.app import selected_objects

    return selected_objects(ctx.view, list(ctx.selected), list(ctx.selected_labels or []),
                            label_field=label_field)


def _fail(ctx, message):
    ctx.ops.notify(f"dqaudit: {message}", variant="error")
    return {"error": str(message)}


def reported(execute):
    """The App's error boundary, the CLI's twin: an expected failure is one notification
    naming the file and the fix; anything else is a bug and FiftyOne shows its traceback."""
    @functools.wraps(execute)
    def run(self, ctx):
        from dqaudit.errors import expected_failure

        try:
            return execute(self, ctx)
        except Exception as exc:
            message = expected_failure(exc)
            if message is None:
                raise
            return _fail(ctx, message)

    return run


class RunAudit(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="run_audit",
            label="dqaudit: audit labels",
            description="Score every sample of the dataset (or of a view) for label errors, "
                        "ambiguity, duplicates and outliers, and write dq_* fields and saved "
                        "views",
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=False,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = _label_fields(ctx)
        if not fields:
            inputs.view("none", types.Warning(
                label="This dataset has no Classification or Detections field"))
            return types.Property(inputs)
        inputs.enum("label_field", fields, required=True,
                    default=DEFAULT_LABEL_FIELD if DEFAULT_LABEL_FIELD in fields else fields[0],
                    label="Label field", view=types.DropdownView())
        from dqaudit.config import AuditConfig, ClrConfig, EmbedConfig, ReportConfig, default
        from dqaudit.cli.app import SMALL_AUDIT_SAMPLES

        target = types.RadioGroup()
        target.add_choice("dataset", label=f"Whole dataset ({len(ctx.dataset)} samples)")
        target.add_choice("view", label=f"Current view ({len(ctx.view)} samples)")
        saved = [v for v in ctx.dataset.list_saved_views() if not v.startswith("dq_")]
        if saved:
            target.add_choice("saved_view", label="A saved view")
        inputs.enum("target", target.values(), default="dataset", view=target,
                    label="Audit", description="A view is audited as a sub-audit: its results "
                    "go to fields dq_<run>_* and views dq_<run>_suspects, never over the "
                    "whole dataset's")
        chosen = ctx.params.get("target", "dataset")
        n_target = len(ctx.dataset) if chosen == "dataset" else len(ctx.view)
        if chosen == "saved_view" and saved:
            inputs.enum("saved_view", saved, required=True, default=saved[0],
                        label="Saved view", view=types.DropdownView())
            name = ctx.params.get("saved_view") or saved[0]
            if ctx.dataset.has_saved_view(name):
                n_target = len(ctx.dataset.load_saved_view(name))
        if chosen != "dataset":
            inputs.str("run", required=False, label="Run name",
                       description="Names the sub-audit's fields and views (default: the "
                                   "saved view's name, or view)")
        if n_target < SMALL_AUDIT_SAMPLES:
            inputs.view("small", types.Warning(
                label=f"Only {n_target} samples",
                description=f"Below {SMALL_AUDIT_SAMPLES} samples one label moves the share of "
                            f"wrong labels by {100 / max(n_target, 1):.1g} points: the "
                            "estimate will be rough"))

        inputs.str("model", default=default(EmbedConfig, "model"), label="Encoder",
                   description="Bundled, offline: lite0, lite1, lite2 or several joined by + "
                               "(lite0 alone is fastest on CPU); or openclip:ARCH/PRETRAINED, "
                               "timm:NAME or timm:NAME//weights-file")
        inputs.enum("device", ["auto", "cpu", "cuda", "mps"],
                    default=default(AuditConfig, "device"), label="Device")
        inputs.bool("clr", default=True, label="Estimate the corrupted-label ratio",
                    description="Controlled CLR injection (adds probe training time)")
        inputs.int("clr_repeats", default=default(ClrConfig, "repeats"),
                   label="CLR repeats per injected ratio")
        inputs.str("out_dir", required=False, label="Output folder",
                   description="Where the report and tables go (default: "
                               "~/.dqaudit/audits/<dataset>)")
        inputs.bool("pdf", default=default(ReportConfig, "pdf"), label="Render the PDF report")
        return types.Property(inputs, view=types.View(label="dqaudit: audit labels"))

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import (audit_fiftyone, audit_target, default_out_dir,
                                          form_config)
        from dqaudit.cli.app import OBJECTS_VIEW, RunNames

        p = ctx.params
        view, run = audit_target(ctx.dataset, ctx.view, target=p.get("target", "dataset"),
                                 saved_view=p.get("saved_view"), run=p.get("run") or None)
        result = audit_fiftyone(
            view, label_field=p.get("label_field") or DEFAULT_LABEL_FIELD, run=run,
            out_dir=p.get("out_dir") or default_out_dir(ctx.dataset.name, run),
            config=form_config(p), quiet=True, command="FiftyOne App: run_audit")
        from dqaudit.cli.app import headline

        s = result.summary
        names = RunNames(run)
        # an object audit opens on its patches view of suspect boxes
        suspects = names.field(OBJECTS_VIEW) if result.dataset.unit == "object" else \
            names.suspects
        if not ctx.delegated:
            ctx.ops.reload_dataset()
            ctx.ops.set_view(name=suspects)
            if s["verdict"].get("small_sample"):
                ctx.ops.notify(f"dqaudit: {s['verdict']['text']}", variant="warning")
        # the one headline share of wrong labels (as the report's cover), not the raw count
        return {"n_samples": s["n_samples"], "label_error_count": s["label_error_count"],
                "flagged_count": s["flagged_count"],
                "estimated_noise_rate": headline(s)["rate"],
                "verdict": f"{s['verdict']['level']}: {s['verdict']['text']}",
                "run": run or "", "suspects_view": suspects,
                "out_dir": str(result.out_dir)}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("n_samples", label="Samples audited")
        outputs.int("label_error_count", label="Suspected label errors")
        outputs.int("flagged_count", label="Flagged samples")
        outputs.float("estimated_noise_rate", label="Estimated share of wrong labels")
        outputs.str("verdict", label="Verdict")
        outputs.str("suspects_view", label="Suspects view")
        outputs.str("out_dir", label="Report folder")
        return types.Property(outputs)


class OpenSuspects(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="open_suspects", label="dqaudit: open suspects view")

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import SUSPECTS_VIEW

        if not ctx.dataset.has_saved_view(SUSPECTS_VIEW):
            return _fail(ctx, "no audit yet: run 'dqaudit: audit labels' first")
        ctx.ops.set_view(name=SUSPECTS_VIEW)
        return {"view": SUSPECTS_VIEW}


class EstimateClr(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="estimate_clr",
            label="dqaudit: estimate corrupted-label ratio",
            description="Controlled CLR injection on the last audit's embeddings",
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        from dqaudit.config import ClrConfig, default
        from dqaudit.cli.app import MODES

        inputs = types.Object()
        inputs.int("repeats", default=default(ClrConfig, "repeats"),
                   label="Repeats per injected ratio")
        inputs.enum("mode", list(MODES), default=default(ClrConfig, "mode"),
                    label="Corruption")
        return types.Property(inputs)

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import estimate_clr_for

        res = estimate_clr_for(ctx.dataset, ctx.params)
        return {k: res[k] for k in ("estimate", "ci_low", "ci_high", "method")}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.float("estimate", label="Estimated corrupted-label ratio")
        outputs.float("ci_low", label="95% CI, low")
        outputs.float("ci_high", label="95% CI, high")
        outputs.str("method", label="Estimator")
        return types.Property(outputs)


class ExportReport(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="export_report", label="dqaudit: export report")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("path", required=True, label="Folder to write report.html and report.pdf to")
        inputs.bool("pdf", default=True, label="Include the PDF")
        return types.Property(inputs)

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import export_report

        paths = export_report(ctx.dataset, ctx.params["path"],
                              pdf=bool(ctx.params.get("pdf", True)))
        ctx.ops.notify("dqaudit: wrote " + ", ".join(paths.values()), variant="success")
        return paths


class MarkReviewed(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="mark_reviewed", label="dqaudit: mark selected reviewed")

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import mark_reviewed

        n = mark_reviewed(ctx.dataset, list(ctx.selected),
                          object_ids=_objects(ctx, _audited_field(ctx)))
        ctx.ops.reload_dataset()
        return {"reviewed": n}


class ApplyLabel(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="apply_label",
                                  label="dqaudit: apply corrected label to selected")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("label", required=True, label="Corrected label")
        inputs.str("label_field", default=_audited_field(ctx), label="Label field")
        return types.Property(inputs)

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import apply_label

        field = ctx.params.get("label_field") or _audited_field(ctx)
        n = apply_label(ctx.dataset, list(ctx.selected), ctx.params["label"],
                        label_field=field, object_ids=_objects(ctx, field))
        ctx.ops.reload_dataset()
        return {"relabelled": n}


class DrawVerification(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="draw_verification",
            label="dqaudit: draw verification sample",
            description="A random sample of labels to check, for a noise rate with a valid "
                        "interval (saved view dq_verify); a larger size grows the same sample")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.int("size", default=200, required=True, label="Samples to verify")
        return types.Property(inputs)

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import draw_verification_for

        res = draw_verification_for(ctx.dataset, size=int(ctx.params.get("size") or 200))
        ctx.ops.reload_dataset()
        ctx.ops.set_view(name="dq_verify")
        return {"n_drawn": res["n_drawn"], "predicted_half_width": res["predicted_half_width"]}


class VerifySelected(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="verify_selected",
            label="dqaudit: verify selected labels",
            description="Record the checked label of the selected samples of dq_verify; the "
                        "noise rate is estimated once every stratum has one")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("label", required=False, label="Correct label",
                   description="Leave empty when the given label is right; DROP for junk")
        inputs.str("annotator", required=False, label="Your name")
        return types.Property(inputs)

    @reported
    def execute(self, ctx):
        from dqaudit.cli.app import verify_selected

        res = verify_selected(ctx.dataset, list(ctx.selected),
                              (ctx.params.get("label") or "").strip() or None,
                              annotator=ctx.params.get("annotator") or None,
                              object_ids=_objects(ctx, _audited_field(ctx)))
        if res["estimated"]:
            ctx.ops.notify(f"dqaudit: {100 * res['estimate']:.1f}% of labels wrong (95% CI "
                           f"{100 * res['ci_low']:.1f}-{100 * res['ci_high']:.1f}%, "
                           f"{res['n_verified']} verified)")
        return {k: v for k, v in res.items() if not isinstance(v, dict)}


def register(p):
    p.register(RunAudit)
    p.register(OpenSuspects)
    p.register(EstimateClr)
    p.register(ExportReport)
    p.register(MarkReviewed)
    p.register(ApplyLabel)
    p.register(DrawVerification)
    p.register(VerifySelected)
