"""Pictures of a model's errors, for evaluate.py --plots=True: confusion matrix, training
curves and misclassified images. Each function writes one PNG and returns its path."""
import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def confusion_matrix_png(matrix, names, path, title):
    """Row-normalised confusion matrix (each true class sums to 100%); cells of 1% or more
    are written in, so look-alike pairs stand out off the diagonal."""
    shown = [i for i in range(len(names)) if matrix[i].sum() or matrix[:, i].sum()]
    matrix = matrix[np.ix_(shown, shown)]
    names = [names[i] for i in shown]
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 3 + 0.32 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (row, col), value in np.ndenumerate(share):
        if value >= 0.01:
            ax.text(col, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves_png(history, best_epoch, path):
    """Loss and accuracy per epoch, training and validation, best epoch marked."""
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [row[metric] for row in history], label=f"training {metric}")
        ax.plot(epochs, [row[f"val_{metric}"] for row in history], label=f"validation {metric}")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def misclassified_png(images, true, predicted, confidence, names, path, limit=48):
    """A grid of wrongly classified images titled `true -> predicted (p)`."""
    count = min(limit, len(images))
    columns = 8
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.5, rows * 1.75),
                             squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < count:
            ax.imshow(images[index].reshape(56, 56), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{names[true[index]]} -> {names[predicted[index]]}\n"
                         f"({confidence[index]:.2f})", fontsize=8)
    if count == 0:
        axes.flat[0].text(0.5, 0.5, "no errors", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reliability_png(rows, path, title):
    """The reliability diagram: per confidence bin, how often the answers were right against
    how sure they were (on the diagonal: honest), and how many images each bin holds."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    low, high, counts, confidence, accuracy = (np.array(column) for column in zip(*rows))
    top.bar(low, accuracy, width=high - low, align="edge", edgecolor="black",
            color="tab:blue", label="accuracy")
    top.plot(confidence, confidence, "o", color="tab:orange", markersize=4,
             label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="grey")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(title)
    top.legend(loc="upper left")
    bottom.bar(low, counts, width=high - low, align="edge", color="grey")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (the best class's probability)")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
