"""Benchmarks: scripts that print speed figures against a baseline measured in the same run."""


def accuracy_line(label: str, result) -> str:
    """One row of a precision benchmark's accuracy table: a :class:`fkd.train_result.TrainResult` after ``label``."""
    return (f"{label}  val RMSE {result.best_val_rmse:.4f} px (epoch {result.best_epoch})  "
            f"{result.images_per_second:6.1f} img/s  {result.train_seconds:6.0f} s")
