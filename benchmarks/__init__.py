"""Benchmarks: scripts that print speed figures against a baseline measured in the same run; ``--json PATH``
also writes the printed figures to a file that ``python -m benchmarks.report`` turns into a docs table."""


def accuracy_line(label: str, result) -> str:
    """One row of a precision benchmark's accuracy table: a :class:`fkd.nn.train_result.TrainResult` after ``label``."""
    return (f"{label}  val RMSE {result.best_val_rmse:.4f} px (epoch {result.best_epoch})  "
            f"{result.images_per_second:6.1f} img/s  {result.train_seconds:6.0f} s")


def accuracy_row(label: str, result) -> dict:
    """:func:`accuracy_line`'s figures for a benchmark's ``--json`` file."""
    return {"variant": label, "best_val_rmse": round(result.best_val_rmse, 4), "best_epoch": result.best_epoch,
            "img_s": round(result.images_per_second, 1), "train_seconds": round(result.train_seconds)}


def cpu_bf16_label() -> str:
    """This CPU's bfloat16 instruction sets for a precision benchmark's output ("avx512_bf16", "none"): bf16 pays or
    costs by which of them a CPU has, so each figure is shown with them."""
    from fkd.nn.train_result import cpu_bf16_instructions

    return ", ".join(cpu_bf16_instructions()) or "none"
