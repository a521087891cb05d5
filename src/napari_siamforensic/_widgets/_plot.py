"""A tiny live plot of training loss and triplet accuracy (QPainter; no plotting library)."""
from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(80, 160, 255)
ACCURACY_COLOUR = QColor(255, 160, 40)


class LossPlot(QWidget):
    """Loss per step (blue, scaled to its running maximum) and validation triplet accuracy
    (orange, 0 to 1) against the step, redrawn as reports arrive."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.steps = 1
        self.loss: list[tuple[int, float]] = []
        self.accuracy: list[tuple[int, float]] = []

    def reset(self, steps: int) -> None:
        self.steps = max(1, int(steps))
        self.loss.clear()
        self.accuracy.clear()
        self.update()

    def add(self, step: int, loss: float, accuracy: float | None) -> None:
        self.loss.append((step, float(loss)))
        if accuracy is not None:
            self.accuracy.append((step, float(accuracy)))
        self.update()

    def paintEvent(self, event):   # noqa: N802 - Qt naming
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        m = 6
        p.fillRect(self.rect(), QColor(30, 30, 36))
        p.setPen(QPen(QColor(90, 90, 100), 1))
        p.drawRect(m, m, w - 2 * m, h - 2 * m)
        top = max((v for _, v in self.loss), default=1.0) or 1.0

        def poly(points, vmax):
            return QPolygonF([QPointF(m + (w - 2 * m) * s / self.steps,
                                      h - m - (h - 2 * m) * min(max(v / vmax, 0.0), 1.0)) for s, v in points])

        if self.loss:
            p.setPen(QPen(LOSS_COLOUR, 1.5))
            p.drawPolyline(poly(self.loss, top))
        if self.accuracy:
            p.setPen(QPen(ACCURACY_COLOUR, 2))
            p.drawPolyline(poly(self.accuracy, 1.0))
            for pt in poly(self.accuracy, 1.0):
                p.drawEllipse(pt, 2, 2)
        p.setPen(QPen(Qt.lightGray))
        text = f"loss (max {top:.3g})"
        if self.accuracy:
            text += f"   accuracy {self.accuracy[-1][1]:.3f}"
        p.drawText(m + 4, m + 14, text)
        p.end()
