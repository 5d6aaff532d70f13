"""Per-prediction feature contributions from each tree's decision path, precomputed per leaf.

LightGBM's `pred_contrib` (TreeSHAP) costs about a millisecond per ticket for the escalation
model, more than everything else on the request path together. Path attribution (Saabas:
each split on the way to the leaf credits its feature with the change in the node's mean
score) depends only on which leaf a ticket reaches, so it is precomputed once per leaf at
load time; a ticket then costs one `pred_leaf` call and a gathered sum. The contributions
plus the bias add up to the raw score exactly as LightGBM's do, and the raw score itself is
the sum of the leaf values, so no separate `predict` call is needed. TreeSHAP stays
available (`ESCALATION_RISK_REASONS=shap`); bench/serve_bench.py reports how
often the two name the same top features.
"""

from __future__ import annotations

import re
from functools import cached_property

import lightgbm as lgb
import numpy as np
from scipy import sparse

from bundle.fast_predict import PREDICT_LEAF_INDEX, SingleRowPredictor


class TreePaths:
    """Leaf values and per-leaf path contributions of a binary LightGBM model, for batch lookup."""

    def __init__(self, booster: lgb.Booster):
        model = booster.dump_model()
        if model.get("num_class", 1) != 1:
            raise ValueError("path contributions are compiled for single-output (binary) models only")
        objective = str(model.get("objective", ""))
        if not objective.startswith("binary"):
            raise ValueError(f"path contributions need a binary model, not {objective!r}")
        found = re.search(r"sigmoid:([0-9.eE+-]+)", objective)
        self.sigmoid = float(found.group(1)) if found else 1.0
        self.n_features = booster.num_feature()
        self.booster = booster
        offsets, leaf_values, rows, cols, values = [], [], [], [], []
        start = 0
        for tree in model["tree_info"]:
            offsets.append(start)
            n_leaves = tree["num_leaves"]
            tree_values = np.zeros(n_leaves)
            self._walk(tree["tree_structure"], start, tree_values, rows, cols, values)
            leaf_values.append(tree_values)
            start += n_leaves
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.leaf_values = np.concatenate(leaf_values)
        # Per leaf, the features credited on its path (padded to the longest path with a spare
        # column, n_features + 1, dropped at the end); column n_features is the bias (root value).
        per_leaf = np.bincount(np.asarray(rows, dtype=np.int64), minlength=start)
        width = int(per_leaf.max())
        order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(per_leaf) - per_leaf, per_leaf)
        self.leaf_columns = np.full((start, width), self.n_features + 1, dtype=np.int64)
        self.leaf_amounts = np.zeros((start, width))
        self.leaf_columns[np.asarray(rows)[order], slot] = np.asarray(cols)[order]
        self.leaf_amounts[np.asarray(rows)[order], slot] = np.asarray(values)[order]

    def _walk(self, root: dict, start: int, tree_values: np.ndarray, rows: list, cols: list, values: list) -> None:
        """Credit each leaf's path (iteratively: deep trees must not hit the recursion limit)."""
        stack: list[tuple[dict, list[tuple[int, float]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if "split_feature" in node:
                step = [*path, (node["split_feature"], node["internal_value"])]
                stack.append((node["right_child"], step))
                stack.append((node["left_child"], step))
                continue
            leaf = node.get("leaf_index", 0)
            tree_values[leaf] = node["leaf_value"]
            credited: dict[int, float] = {self.n_features: path[0][1] if path else node["leaf_value"]}
            values_on_path = [v for _, v in path] + [node["leaf_value"]]
            for (feature, parent_value), child_value in zip(path, values_on_path[1:], strict=True):
                credited[feature] = credited.get(feature, 0.0) + (child_value - parent_value)
            for feature, amount in credited.items():
                rows.append(start + leaf)
                cols.append(feature)
                values.append(amount)

    @cached_property
    def leaf_matrix(self) -> sparse.csr_matrix:
        """(leaves, n_features + 2) contributions per leaf for batches, sparse: a leaf's path credits
        a handful of features (about 5 of 87 on the demo model), and the sparse product of the
        leaves' one-hot rows with it costs less than with the dense matrix (bench/serve_bench.py),
        summing each output in the same (tree) order."""
        n_leaves, width = self.leaf_columns.shape
        rows = np.repeat(np.arange(n_leaves), width)
        return sparse.csr_matrix((self.leaf_amounts.ravel(), (rows, self.leaf_columns.ravel())),
                                 shape=(n_leaves, self.n_features + 2))

    @cached_property
    def single_row(self) -> SingleRowPredictor:
        return SingleRowPredictor(self.booster, PREDICT_LEAF_INDEX)

    def global_leaves(self, features: np.ndarray) -> np.ndarray:
        """(n, trees) indices into the concatenated leaves, from one `pred_leaf` call."""
        if isinstance(features, np.ndarray) and len(features) == 1:
            leaves = self.single_row.predict(features[0]).astype(np.int64)[None, :]
        else:
            leaves = self.booster.predict(features, pred_leaf=True)
        if leaves.shape[1] != len(self.offsets):
            raise ValueError(f"pred_leaf gave {leaves.shape[1]} trees; the dump has {len(self.offsets)}")
        return leaves + self.offsets

    def explain(self, features: np.ndarray, contributions: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Raw score (the booster's predict output: sigmoid of the summed leaf values) and
        contributions (n, n_features + 1; the last column is the bias); `contributions=False`:
        the raw score only (the contributions have no columns), the same raw score."""
        ids = self.global_leaves(features)
        n, n_trees = ids.shape
        # Summed left to right in tree order, as LightGBM does, so the score matches predict().
        margin = np.cumsum(self.leaf_values[ids], axis=1)[:, -1]
        raw = 1.0 / (1.0 + np.exp(-self.sigmoid * margin))
        width = self.n_features + 2
        if not contributions:
            return raw, np.zeros((n, 0))
        if n == 1:
            columns = self.leaf_columns[ids[0]]
            contributions = np.bincount(columns.ravel(), weights=self.leaf_amounts[ids[0]].ravel(), minlength=width)
            contributions = contributions[None, :-1]
        else:
            # The same sums in the same (tree) order, as one sparse product: the leaves one-hot.
            onehot = sparse.csr_matrix((np.ones(ids.size), ids.ravel(), np.arange(0, ids.size + 1, n_trees)),
                                       shape=(n, len(self.leaf_values)))
            contributions = onehot @ self.leaf_matrix
            contributions = (contributions.toarray() if sparse.issparse(contributions) else contributions)[:, :-1]
        return raw, contributions


class StackedPaths:
    """Every label's TreePaths as one table, for one ticket at a time.

    A bundle with several labels (features.labels) scores a live ticket with each label's model;
    done label by label, the per-call overhead of a dozen small NumPy operations per label costs
    more than the tree walks. Here the leaf tables of all labels are concatenated: one ticket costs
    one `pred_leaf` call per label (the C API's single-row path), then one gather and one bincount
    for every label together. Each leaf's row also carries its leaf value in its label's spare
    column, so the same bincount sums the margin. Within each bin the sums run in tree order, as
    in `TreePaths.explain` (other labels' leaves land in other bins; padding adds exact zeros), so
    the results are those of `TreePaths.explain`, bit for bit (tests/serving/test_reasons.py).
    """

    def __init__(self, paths: list[TreePaths], columns: list[np.ndarray | None]):
        self.paths = paths
        self.columns = [None if c is None else np.asarray(c, dtype=np.intp) for c in columns]
        self.n_features = [p.n_features for p in paths]
        self.width = max(self.n_features) + 2  # each label's bins: its features, the bias, its margin
        leaf_starts = np.cumsum([0] + [len(p.leaf_values) for p in paths])
        self.offsets = np.concatenate([p.offsets + start for p, start in zip(paths, leaf_starts, strict=False)])
        path_width = max(p.leaf_columns.shape[1] for p in paths) + 1
        columns_out, amounts_out = [], []
        for k, p in enumerate(paths):
            margin = p.n_features + 1  # the spare column: TreePaths pads with it and drops it
            table = np.full((len(p.leaf_values), path_width), margin, dtype=np.intp)
            table[:, :p.leaf_columns.shape[1]] = p.leaf_columns
            amounts = np.zeros((len(p.leaf_values), path_width))
            amounts[:, :p.leaf_amounts.shape[1]] = np.where(p.leaf_columns == margin, 0.0, p.leaf_amounts)
            amounts[:, -1] = p.leaf_values
            columns_out.append(table + k * self.width)
            amounts_out.append(amounts)
        self.leaf_columns = np.concatenate(columns_out)
        self.leaf_amounts = np.concatenate(amounts_out)
        self.margin_bins = np.array([k * self.width + n + 1 for k, n in enumerate(self.n_features)])
        self.sigmoid = np.array([p.sigmoid for p in paths])

    def explain_one(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For one feature row of the bundle's matrix (float64, 1-D): each label's raw score, shape
        (labels,), and contributions (labels, width): row k holds label k's n_features
        contributions, then its bias, then its margin and zeros, as `TreePaths.explain` of its columns gives them."""
        leaves = np.concatenate([p.single_row.predict(row, c)
                                 for p, c in zip(self.paths, self.columns, strict=True)]).astype(np.intp)
        ids = leaves + self.offsets
        sums = np.bincount(np.take(self.leaf_columns, ids, axis=0).ravel(),
                           weights=np.take(self.leaf_amounts, ids, axis=0).ravel(),
                           minlength=len(self.paths) * self.width)
        margin = sums[self.margin_bins]
        return 1.0 / (1.0 + np.exp(-self.sigmoid * margin)), sums.reshape(len(self.paths), self.width)
