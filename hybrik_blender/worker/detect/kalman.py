"""A constant-velocity Kalman filter on a person box.

State (cx, cy, w, h, vx, vy, vw, vh) in pixels and pixels per frame; the
measurement is the box centre and size. Noise scales with the box height,
so a near (large) person may move more pixels per frame than a far one.
"""
import numpy as np

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)


def xyxy_to_z(box):
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)])


def z_to_xyxy(z):
    cx, cy, w, h = z[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """``predict()`` once per frame, ``update(box)`` when the person is seen."""

    def __init__(self, box, position_noise=0.05, velocity_noise=0.0125):
        z = xyxy_to_z(box)
        self.x = np.concatenate([z, np.zeros(4)])
        self._pos, self._vel = position_noise, velocity_noise
        h = z[3]
        self.P = np.diag(np.square(np.r_[2 * self._pos * h * np.ones(4),
                                         10 * self._vel * h * np.ones(4)]))

    def _q(self):
        h = max(self.x[3], 1.0)
        return np.diag(np.square(np.r_[self._pos * h * np.ones(4), self._vel * h * np.ones(4)]))

    def predict(self):
        self.x = _F @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)
        self.P = _F @ self.P @ _F.T + self._q()
        return self.box

    def update(self, box, noise_scale=1.0):
        z = xyxy_to_z(box)
        r = np.diag(np.square(noise_scale * self._pos * max(self.x[3], 1.0) * np.ones(4)))
        s = _H @ self.P @ _H.T + r
        k = self.P @ _H.T @ np.linalg.inv(s)
        self.x = self.x + k @ (z - _H @ self.x)
        self.P = (np.eye(8) - k @ _H) @ self.P
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)
        return self.box

    @property
    def box(self):
        return z_to_xyxy(self.x)
