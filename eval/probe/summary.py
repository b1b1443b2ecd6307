"""The probing report: per-model, per-layer UAR tables (CSV and markdown), the best layer of each model,
a layer-wise curve plot comparing models (one panel per dataset) and the best layer's confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biolingual.vocabulary import slug

from ..report import fmt, markdown_table, plot_confusion, pyplot, write_csv

COLUMNS = ["dataset", "model", "layer", "layer_name", "test_uar", "test_accuracy", "valid_uar", "best_epoch"]


def best_name(r: dict) -> str:
    return str(r["layer"]) if r["layer_name"] == f"layer {r['layer']}" else f"{r['layer']} ({r['layer_name']})"


def is_layer(r: dict) -> bool:
    return isinstance(r["layer"], int)


def best_layer(results: list[dict]) -> dict:
    """The layer with the highest validation UAR (test scores are never used to choose); ties go to the
    lower layer."""
    return max((r for r in results if is_layer(r)), key=lambda r: (r["valid_uar"], -r["layer"]))


def write_summary(
    out: Path,
    runs: dict[str, dict[str, list[dict]]],
    labels: dict[str, list[str]],
    extraction: dict[str, dict[str, dict]],
    notes: dict[str, list[str]],
    plots: bool = True,
) -> str:
    """``runs[dataset][model]`` holds the results of ``probe_model``. Writes results.csv, results.md,
    best_layers.csv, layers.png and per-model confusion matrices; returns the markdown."""
    rows, best_rows, md = [], [], ["# Layer-wise probing\n"]
    for dataset, by_model in runs.items():
        n_classes = len(labels[dataset])
        first = next(iter(by_model.values()))[0]
        md.append(
            f"## {dataset}\n\n{n_classes} classes; train/valid/test {first['n']['train']}/{first['n']['valid']}/"
            f"{first['n']['test']} clips; chance UAR {1 / n_classes:.3f}. Test UAR per layer; the best layer "
            "is chosen by validation UAR.\n"
        )
        for note in notes.get(dataset, []):
            md.append(f"- note: {note}")
        depth = max(sum(is_layer(r) for r in results) for results in by_model.values())
        fusions = sorted({r["fusion"] for results in by_model.values() for r in results if not is_layer(r)})
        header = [
            "model",
            *[str(i) for i in range(depth)],
            "best layer",
            "test UAR",
            "test acc",
            *[f"fusion {f}" for f in fusions],
        ]
        table = []
        for model, results in by_model.items():
            per_layer = {r["layer"]: r for r in results if is_layer(r)}
            best = best_layer(results)
            fused = {r["fusion"]: r for r in results if not is_layer(r)}
            table.append(
                [
                    model,
                    *[fmt(per_layer[i]["test_uar"]) if i in per_layer else "—" for i in range(depth)],
                    best_name(best),
                    f"**{best['test_uar']:.3f}**",
                    fmt(best["test_accuracy"]),
                    *[fmt(fused[f]["test_uar"]) if f in fused else "—" for f in fusions],
                ]
            )
            rows += [
                [
                    dataset,
                    model,
                    r["layer"],
                    r.get("layer_name", ""),
                    f"{r['test_uar']:.4f}",
                    f"{r['test_accuracy']:.4f}",
                    f"{r['valid_uar']:.4f}",
                    r["epoch"],
                ]
                for r in results
            ]
            best_rows.append(
                [
                    dataset,
                    model,
                    best["layer"],
                    best["layer_name"],
                    f"{best['test_uar']:.4f}",
                    f"{best['test_accuracy']:.4f}",
                    f"{best['valid_uar']:.4f}",
                    best["epoch"],
                ]
            )
            if plots:
                folder = out / slug(dataset) / slug(model)
                plot_confusion(
                    np.array(best["confusion"]),
                    labels[dataset],
                    folder / "confusion_best.png",
                    f"{model}, {best['layer_name']}, on {dataset}: test UAR {best['test_uar']:.3f}",
                )
            for f, r in fused.items():
                if f == "weighted" and "layer_weights" in r:
                    weights = ", ".join(f"{layer}: {w:.3f}" for layer, w in zip(r["layers"], r["layer_weights"]))
                    md.append(f"- {model}, learned layer weights: {weights}")
        md.append("\n" + markdown_table(header, table))
        ext_rows = [
            [m, e["sampling_rate"], e["clips"], e["padded"], e["silent"], e["unreadable"]]
            for m, e in extraction.get(dataset, {}).items()
        ]
        if ext_rows:
            md.append(
                "Clips per model: padded = shorter than the model's minimum input and tiled up to it; "
                "silent = all zeros; unreadable = skipped (listed in each model's extraction.json).\n"
            )
            md.append(markdown_table(["model", "rate (Hz)", "clips", "padded", "silent", "unreadable"], ext_rows))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", COLUMNS, rows)
    write_csv(out / "best_layers.csv", COLUMNS, best_rows)
    text = "\n".join(md) + "\n"
    (out / "results.md").write_text(text)
    if plots:
        plot_layers(runs, labels, out / "layers.png")
    return text


def plot_layers(runs: dict[str, dict[str, list[dict]]], labels: dict[str, list[str]], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.2), squeeze=False)
    for ax, (dataset, by_model) in zip(axes[0], runs.items()):
        for model, results in by_model.items():
            layer_rows = [r for r in results if is_layer(r)]
            ax.plot([r["layer"] for r in layer_rows], [r["test_uar"] for r in layer_rows], marker="o", label=model)
        ax.axhline(1 / len(labels[dataset]), color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_title(dataset)
        ax.set_xlabel("layer")
        ax.set_ylabel("test UAR")
        ax.set_ylim(0, 1.03)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
