"""One-row LightGBM prediction through the C API's single-row fast path.

`Booster.predict` builds a predictor and parses its parameters on every call, which costs a
single live ticket several times the tree traversal itself. LightGBM's
`LGBM_BoosterPredictForMatSingleRowFast` does that set-up once (`...FastInit`) and then only
walks the trees; it runs the same predictor code, so the outputs are those of `predict`.
Uses lightgbm's own loaded library (`lightgbm.basic._LIB`, pinned lightgbm version).
Not thread-safe: callers hold the model's predict lock.

The per-row call goes through a `ctypes.PyDLL` view of the same library, which keeps the GIL:
a call takes microseconds and the predict lock serialises them anyway, so releasing the GIL
(what `ctypes.CDLL` does) would only hand it to another request thread and back, a thread
switch per call under concurrent requests.
"""

from __future__ import annotations

import ctypes

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

PREDICT_NORMAL = 0
PREDICT_LEAF_INDEX = 2
_FLOAT64 = 1
_HOLDING_GIL: list[ctypes.PyDLL] = []


def holding_gil_library() -> ctypes.PyDLL:
    """lightgbm's loaded library, called without releasing the GIL (opened once, on first use)."""
    if not _HOLDING_GIL:
        _HOLDING_GIL.append(ctypes.PyDLL(_LIB._name, handle=_LIB._handle))
    return _HOLDING_GIL[0]


class SingleRowPredictor:
    """`booster.predict(row[None, :], pred_leaf=...)` for one float64 row, without per-call set-up."""

    def __init__(self, booster: lgb.Booster, predict_type: int = PREDICT_NORMAL):
        self.n_features = booster.num_feature()
        num_iteration = booster.best_iteration  # as Booster.predict chooses it (start_iteration 0)
        self.predict_type = predict_type
        n_trees = booster.num_trees()
        n_classes = booster.num_model_per_iteration()
        self.n_out = n_trees if predict_type == PREDICT_LEAF_INDEX else n_classes
        if predict_type == PREDICT_LEAF_INDEX and num_iteration > 0:
            self.n_out = num_iteration * n_classes
        self._config = ctypes.c_void_p()
        self._booster = booster  # keeps the booster handle alive as long as the config
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(predict_type), ctypes.c_int(0), ctypes.c_int(num_iteration),
            ctypes.c_int(_FLOAT64), ctypes.c_int32(self.n_features), ctypes.c_char_p(b"num_threads=1"),
            ctypes.byref(self._config)))
        self._in = np.empty(self.n_features, dtype=np.float64)
        self._in_pointer = self._in.ctypes.data_as(ctypes.c_void_p)
        self._out = np.empty(self.n_out, dtype=np.float64)
        self._out_len = ctypes.c_int64(0)
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._predict = holding_gil_library().LGBM_BoosterPredictForMatSingleRowFast

    def predict(self, row: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """A copy of the output for one row (1-D; `columns`: these positions of it, in this order):
        probabilities (n_classes) or leaf indices (n_trees). ValueError when the row does not
        have the model's number of features."""
        row = np.asarray(row, dtype=np.float64)
        width = len(row) if columns is None else len(columns)
        if np.ndim(row) != 1 or width != self.n_features:
            raise ValueError(f"expected one row of {self.n_features} features, got shape {np.shape(row)}")
        if columns is None:
            self._in[:] = row  # into the buffer the C call reads (a fixed pointer, converted to float64)
        else:
            np.take(row, columns, out=self._in)
        _safe_call(self._predict(self._config, self._in_pointer, ctypes.byref(self._out_len), self._out_pointer))
        if self._out_len.value != self.n_out:
            raise ValueError(f"LightGBM returned {self._out_len.value} values, expected {self.n_out}")
        return self._out.copy()

    def __del__(self) -> None:
        if getattr(self, "_config", None) is not None and self._config.value:
            _LIB.LGBM_FastConfigFree(self._config)
            self._config = None
