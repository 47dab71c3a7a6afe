"""Write every artifact of the paper and ``index.md`` into one folder, from whatever has landed.

``python -m sparsebench.report --paper`` writes ``results/paper/``::

    table1 … table4 .md .tex .csv     in the paper's layout, each spanning the sweeps it needs
    fig2 … fig9 .png .pdf             in the paper's form (fig4 also .csv: the FLOP model)
    index.md                          per artifact: its sweeps, the runs behind it (completed /
                                      failed / running / missing), the paper's number beside
                                      ours, what is missing, a caption per figure

An artifact whose runs have not landed is written as far as it can be (a table of dashes) or
not drawn (a figure with no completed run), and the index says which and why: the report never
fails because one artifact is missing.
"""
from __future__ import annotations

import datetime as _dt
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from ..storage import atomic, paths
from ..reporting.plotting import SkipFigure, save_figure
from ..reporting.text import to_markdown
from . import flops_model, kernels, published
from .artifacts import ARTIFACTS, Artifact
from .names import Names
from .runs import Library

FORMATS = ("png", "pdf")


@dataclass
class Context:
    names: Names = field(default_factory=Names)
    published: pd.DataFrame = field(default_factory=published.load)
    comparable: bool = True          # False in a miniature: the paper's numbers are not its own
    kernels_dir: Path | None = None  # where sparsebench.paper.kernel_bench wrote its CSVs (fig8)
    # Our cell's keys -> the keys of the paper's number it stands for (a miniature's ResNet-20
    # at 3 epochs stands for ResNet-56 at 300); the identity at full size.
    paper_keys: Callable[[dict], dict] = lambda keys: keys


@dataclass
class Entry:
    """What the index says about one artifact."""

    artifact: Artifact
    files: list[Path] = field(default_factory=list)
    state: str = "written"
    counts: str = ""
    lines: list[str] = field(default_factory=list)
    beside: list[dict] = field(default_factory=list)
    caption: str = ""
    needed: pd.DataFrame | None = None  # sweep, run_id, status of each run it needs


def _save_figure(fig, out: Path, name: str) -> list[Path]:
    return save_figure(fig, out, name, FORMATS)


def _state(counts: dict) -> str:
    total = sum(counts.values())
    if total == 0:
        return "no runs defined"
    if counts.get("completed", 0) == total:
        return "complete"
    return "partial" if counts.get("completed", 0) else "no completed runs"


def build_one(artifact: Artifact, lib: Library, ctx: Context, out: Path) -> Entry:
    entry = Entry(artifact)
    if artifact.kind == "flops":
        fl = flops_model.count("resnet50", 1000, (3, 224, 224))
        data = flops_model.curve(fl)
        atomic.write_text(out / "fig4.csv", data.to_csv(index=False))
        entry.files = [out / "fig4.csv"] + _save_figure(flops_model.figure(data), out, "fig4")
        entry.state = "complete"
        entry.caption = ("Training FLOPs per example of GSE (γ = 1, uniform sampler) and RigL "
                         "against sparsity, ResNet-50 on ImageNet (224²), ΔT = 1000, uniform "
                         "layer-wise sparsity, from the FLOP model (Evci et al. 2020, App. H); "
                         "no runs behind it.")
        rel = [f"{name} {fn(fl, 1 - s) / (3 * fl.dense):.3g}× at "
               f"{flops_model.sparsity_tick(1 - s)}"
               for s in (0.9, 0.99, 1 - 1e-8)
               for name, fn in (("RigL", flops_model.rigl), ("GSE", flops_model.gse))]
        entry.lines.append(f"dense forward f_D = {fl.dense / 1e9:.2f} GFLOPs per example; "
                           "training FLOPs relative to dense training (3·f_D): " + ", ".join(rel))
        return entry
    if artifact.kind == "kernels":
        folder = ctx.kernels_dir or out / "kernels"
        try:
            data = kernels.load(folder)
        except kernels.NoKernelData as why:
            entry.state = "not drawn"
            entry.lines.append(f"missing: {why}")
            return entry
        entry.files = _save_figure(kernels.figure(data), out, "fig8")
        devices = ", ".join(sorted(data["device"].astype(str).unique()))
        entry.state = "complete"
        entry.caption = (f"Median time of one forward sparse × dense product per weight format "
                         f"and sparsity, one panel per width n (devices: {devices}); "
                         f"{_reps(data)} per point (sparsebench.paper.kernel_bench).")
        return entry

    ev = lib.evidence(artifact.sources)
    entry.needed = ev.expected[["sweep", "run_id", "status"]] if len(ev.expected) else None
    counts = ev.counts()
    entry.counts = ev.counts_text()
    entry.state = _state(counts)
    entry.lines += [f"problem: {p}" for p in ev.problems]
    entry.lines += [f"not completed: {line}" for line in ev.not_completed()]
    if artifact.kind == "table":
        table = artifact.build(ev, ctx)
        for ext, text in (("md", table.markdown), ("tex", table.latex),
                          ("csv", table.csv.to_csv(index=False))):
            path = out / f"{artifact.id}.{ext}"
            atomic.write_text(path, text)
            entry.files.append(path)
        entry.beside = table.beside
        entry.lines += table.notes
        return entry
    done = ev.completed()
    if done.empty:
        entry.state = "not drawn"
        entry.lines.append("not drawn: none of its runs has completed yet")
        return entry
    try:
        drawn = artifact.build(done, ctx.names)
    except SkipFigure as why:
        entry.state = "not drawn"
        entry.lines.append(f"not drawn: {why}")
        return entry
    entry.files = _save_figure(drawn.figure, out, artifact.id)
    entry.caption = drawn.caption
    return entry


def _reps(data: pd.DataFrame) -> str:
    reps = pd.to_numeric(data.get("reps", pd.Series(dtype=float)), errors="coerce")
    reps = reps[reps > 0]
    if reps.empty:
        return "timed calls: not recorded"
    lo, hi = int(reps.min()), int(reps.max())
    return f"median of {lo} timed calls" if lo == hi else f"median of {lo}–{hi} timed calls"


def write(out: Path, lib: Library, ctx: Context, *, title: str = "The GSE paper's artifacts",
          preamble: str = "", only: list[str] | None = None, say=print) -> list[Entry]:
    """Every artifact (or those in ``only``) into ``out``, then ``out/index.md``; ``say``
    gets one line counting the runs the artifacts need (and what to do about missing ones)."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for artifact in ARTIFACTS:
        if only and artifact.id not in only:
            continue
        try:
            entries.append(build_one(artifact, lib, ctx, out))
        except Exception as err:  # one broken artifact must not take the others with it
            entry = Entry(artifact, state="error")
            entry.lines.append(f"error while building: {type(err).__name__}: {err}")
            entry.lines.append("```\n" + traceback.format_exc(limit=4).strip() + "\n```")
            entries.append(entry)
    rerun = "python -m sparsebench.report --paper" + ("" if ctx.comparable else " --mini")
    atomic.write_text(out / "index.md", index_text(entries, out, title, preamble, lib, rerun))
    if say is not None:
        say(runs_line(entries, "make paper" if ctx.comparable else "make paper-mini"))
    return entries


def runs_line(entries: list[Entry], train: str) -> str:
    """``paper: 896 runs needed: 0 completed, 896 missing; ...`` over every artifact, each run
    counted once (artifacts share runs)."""
    needed = [e.needed for e in entries if e.needed is not None]
    if not needed:
        return "paper: no artifact needs trained runs"
    runs = pd.concat(needed).drop_duplicates(["sweep", "run_id"])
    counts = runs["status"].value_counts()
    total, done = len(runs), int(counts.get("completed", 0))
    text = f"paper: {total} runs needed: " + ", ".join(
        f"{int(n)} {status}" for status, n in counts.items())
    drawn = sum(e.state == "complete" for e in entries)
    text += f"; {drawn} of {len(entries)} artifacts complete"
    if done < total:
        text += f"; index.md says what each artifact lacks; `{train}` trains what is missing"
    return text


def index_text(entries: list[Entry], out: Path, title: str, preamble: str, lib: Library,
               rerun: str = "python -m sparsebench.report --paper") -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    root = lib.root if lib.root is not None else paths.results_root()
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble.strip(), ""]
    lines += [f"Written {now} from the runs under `{root}`; rerun `{rerun}` at any time to "
              "update it.", "",
              "| artifact | what | state | runs |", "|---|---|---|---|"]
    for e in entries:
        lines.append(f"| [{e.artifact.id}](#{e.artifact.id}) | {e.artifact.title} | {e.state} | "
                     f"{e.counts or '—'} |")
    for e in entries:
        a = e.artifact
        lines += ["", f"## {a.id}", "", f"**{a.title}**", ""]
        if e.files:
            lines.append("- files: " + ", ".join(f"[{p.name}]({p.name})" for p in e.files))
        else:
            lines.append("- files: none written")
        if a.sources:
            lines.append("- sweeps: " + "; ".join(s.describe() for s in a.sources))
        lines.append(f"- state: {e.state}" + (f"; runs: {e.counts}" if e.counts else ""))
        if e.caption:
            lines.append(f"- caption: {e.caption}")
        lines += [f"- {line}" for line in e.lines]
        if e.beside:
            lines += ["", "The paper's numbers beside ours:", "",
                      to_markdown(pd.DataFrame(e.beside)).rstrip()]
    return "\n".join(lines) + "\n"


def write_default(root: Path | None = None) -> Path:
    """results/paper/ from the repository's paper sweeps; returns the index's path."""
    out = paths.paper_dir(root)
    write(out, Library(root), Context(kernels_dir=out / "kernels"))
    return out / "index.md"
