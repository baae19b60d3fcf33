"""The task embeddings θT of a model, site by site: matrices, norms, cosine similarities, PCA.

A *site* is one task-embedding table, e.g. ``layers.0.si1`` (the first self-interaction layer,
the one the method paper's Fig. 1b shows): a ``[tasks, scalars]`` matrix whose row t is added to
the scalar outputs of that layer for task t. ``all`` concatenates every site's rows.

The PCA of a site is fitted on its task rows *together with the origin* θT = 0, the common PES,
so that the picture also shows how far each task sits from the common potential (and so that
two tasks still span a plane).
"""

from __future__ import annotations

import numpy as np

from sevenomni.nn import SevenOmniModel

ALL_SITES = "all"


def task_embeddings(model: SevenOmniModel) -> dict[str, np.ndarray]:
    """Site name → θT matrix [tasks, scalars] (float64), in the model's layer order."""
    return {
        name.removesuffix(".embedding.weight"): parameter.detach().cpu().double().numpy()
        for name, parameter in model.task_embedding_parameters()
    }


def cosine_similarities(matrix: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows; NaN where a row is zero."""
    norms = np.linalg.norm(matrix, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (matrix @ matrix.T) / np.outer(norms, norms)


def pca_with_origin(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """2-D PCA of the rows and the origin: ``tasks`` [T, 2], ``origin`` [2], ``explained`` [2]
    (fraction of the variance of those T + 1 points). Axes are signed so that the first task
    has non-negative coordinates."""
    points = np.vstack([matrix, np.zeros((1, matrix.shape[1]))])
    centred = points - points.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    coordinates = np.zeros((len(points), 2))
    used = min(2, len(singular))
    coordinates[:, :used] = centred @ components[:used].T
    signs = np.where(coordinates[0] < 0, -1.0, 1.0)
    coordinates *= signs
    variance = singular**2
    explained = np.zeros(2)
    if variance.sum() > 0:
        explained[:used] = variance[:used] / variance.sum()
    return {"tasks": coordinates[:-1], "origin": coordinates[-1], "explained": explained}


def analyse_site(matrix: np.ndarray) -> dict:
    pca = pca_with_origin(matrix)
    return {
        "matrix": matrix,
        "norms": np.linalg.norm(matrix, axis=1),
        "cosine": cosine_similarities(matrix),
        "pca": pca,
    }


def analyse_embeddings(model: SevenOmniModel) -> dict:
    """Every site's (and ``all`` sites') matrix, per-task norms, cosine matrix and PCA."""
    sites = task_embeddings(model)
    if not sites:
        raise ValueError("this model has no task embeddings (task_embedding_sites is empty)")
    result = {name: analyse_site(matrix) for name, matrix in sites.items()}
    result[ALL_SITES] = analyse_site(np.hstack(list(sites.values())))
    return {"tasks": model.tasks.as_list(), "sites": result}


def format_embeddings(analysis: dict) -> str:
    """Per site: ‖θT‖ of each task and the cosine similarity of each pair of tasks."""
    tasks = analysis["tasks"]
    pairs = [(i, j) for i in range(len(tasks)) for j in range(i + 1, len(tasks))]
    header = f"{'site':<18}{'dim':>5}" + "".join(f"{'‖θT‖ ' + t:>14}" for t in tasks)
    header += "".join(f"{'cos ' + tasks[i] + '·' + tasks[j]:>18}" for i, j in pairs)
    lines = [header]
    for site, entry in analysis["sites"].items():
        line = f"{site:<18}{entry['matrix'].shape[1]:>5}" + "".join(f"{n:>14.4f}" for n in entry["norms"])
        line += "".join(f"{entry['cosine'][i, j]:>18.3f}" for i, j in pairs)
        lines.append(line)
    return "\n".join(lines)
