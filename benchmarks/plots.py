"""PNG plots of accuracy and TAR@FAR=1e-3 against bpp: one curve per codec, uncompressed as a horizontal line,
HEVC CRF 23 (the parity reference) marked. One plot per result file, and one overview per recognizer and
setting whose panels are the datasets × protocols (the figure a reader of the README looks at first)."""
from __future__ import annotations

from pathlib import Path

from facelink.benchmarks.codecs import BackgroundBlurred
from facelink.benchmarks.results_io import TAR, stem

STYLE = {"hevc": ("tab:red", "o"), "avif": ("tab:blue", "s"), "jxl": ("tab:green", "^"),
         "webp": ("tab:purple", "D"), "jpeg": ("tab:gray", "v"), "facelink": ("black", "*"),
         "facelink-ipr": ("black", "*"), "facelink-pix": ("tab:orange", "P"), "facelink-msh": ("tab:brown", "X"),
         "facelink-iprf": ("black", "*"), "facelink-pixf": ("tab:orange", "P"),
         "facelink-iprb": ("tab:cyan", "*"), "facelink-pixb": ("tab:olive", "P"),
         "facelink-iprd": ("tab:pink", "*"), "facelink-iprd0": ("goldenrod", "P"),
         "facelink-iprdh": ("darkred", "*"),
         "facelink-iprc": ("tab:blue", "*"), "facelink-pixc": ("tab:orange", "P"),
         "facelink-iprch": ("navy", "*"), "facelink-iprv": ("tab:green", "*"), "facelink-pixv": ("tab:red", "P"),
         "facelink-ipr96": ("darkgreen", "h"), "facelink-ipr112": ("olive", "H")}


def _ax_curves(ax, doc: dict, metric: str):
    for c in doc["codecs"]:
        r = c["results"]
        pts = [(b, m) for b, m in zip(r["bpp"], r[metric]) if b is not None and m is not None]
        if not pts:
            continue
        base = c["codec"].removesuffix(BackgroundBlurred.SUFFIX)  # behind the face ROI: base's colour, dotted
        colour, marker = STYLE.get(base, (None, "o"))
        xs, ys = zip(*pts)
        ax.plot(xs, [100 * y for y in ys], marker=marker, color=colour, label=c["name"], lw=1.5, ms=5,
                ls=":" if base != c["codec"] else "-")
    u = doc["uncompressed"].get(metric)
    if u is not None:
        ax.axhline(100 * u, color="k", ls="--", lw=1, label=f"uncompressed ({100 * u:.2f} %)")
    ref = doc.get("reference") or {}
    if ref.get("bpp") is not None and ref.get(metric) is not None:
        ax.plot([ref["bpp"]], [100 * ref[metric]], marker="o", ms=12, mfc="none", mec="tab:red", mew=1.5,
                ls="none", label=f"HEVC CRF {ref.get('quality')}")
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter(""))
    ax.set_xlabel("bits per pixel (log scale)")
    ax.grid(True, which="both", alpha=0.3)


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on servers or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_doc(doc: dict, out_dir: Path) -> list[Path]:
    """``<stem>_accuracy.png`` and ``<stem>_tar.png``; returns the paths written."""
    plt = _pyplot()

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    limited = f", limited to {doc['limit_pairs_per_fold']} pairs/fold" if doc.get("limited") else ""
    for metric, ylabel, suffix in (("accuracy", "verification accuracy (%), 10-fold", "accuracy"),
                                   (TAR, "TAR @ FAR = 1e-3 (%)", "tar")):
        fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
        _ax_curves(ax, doc, metric)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{doc['dataset']} · {doc['recognizer']} · {doc['protocol']} · {doc['setting']}\n"
                     f"{doc.get('pairs')} pairs{limited}", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out_dir / f"{stem(doc)}_{suffix}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


PANEL_ORDER = {"dataset": ("lfw", "celeba"), "protocol": ("full-frame", "face-crop")}


def _order(known: tuple):
    return lambda name: (known.index(name), "") if name in known else (len(known), name)


def plot_overviews(docs: list[dict], out_dir: Path) -> list[Path]:
    """``overview_<recognizer>_<setting>.png``: accuracy vs bpp, one panel per dataset (row) × protocol (column),
    for every recognizer × setting with more than one panel; returns the paths written."""
    plt = _pyplot()

    written = []
    groups: dict = {}
    for d in docs:
        groups.setdefault((d["recognizer"], d["setting"]), []).append(d)
    for (recognizer, setting), group in groups.items():
        if len(group) < 2:
            continue
        datasets = sorted(dict.fromkeys(d["dataset"] for d in group), key=_order(PANEL_ORDER["dataset"]))
        protocols = sorted(dict.fromkeys(d["protocol"] for d in group), key=_order(PANEL_ORDER["protocol"]))
        fig, axes = plt.subplots(len(datasets), len(protocols), figsize=(5.2 * len(protocols), 3.9 * len(datasets)),
                                 dpi=100, squeeze=False)
        by_key = {(d["dataset"], d["protocol"]): d for d in group}
        handles = {}
        for i, ds in enumerate(datasets):
            for j, proto in enumerate(protocols):
                ax = axes[i][j]
                doc = by_key.get((ds, proto))
                if doc is None:
                    ax.set_axis_off()
                    continue
                _ax_curves(ax, doc, "accuracy")
                limited = f", {doc['limit_pairs_per_fold']}/fold" if doc.get("limited") else ""
                ax.set_title(f"{ds} · {proto} ({doc.get('pairs')} pairs{limited})", fontsize=10)
                ax.set_ylabel("accuracy (%)")
                # the label of the uncompressed line carries each panel's own figure: keep one generic entry
                for h, label in zip(*ax.get_legend_handles_labels()):
                    handles.setdefault("uncompressed" if label.startswith("uncompressed") else label, h)
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(len(handles), 8),
                   fontsize=8, frameon=False)
        fig.suptitle(f"{recognizer} · {setting}: verification accuracy vs bits per pixel", fontsize=11)
        fig.tight_layout(rect=(0, 0.05, 1, 0.97))
        path = out_dir / f"overview_{recognizer}_{setting}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
