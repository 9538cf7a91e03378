"""People followed across a video's frames: ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by
Associating Every Detection Box", ECCV 2022) as `supervision` implements it, over each frame's person boxes, and
optionally the One Euro filter (Casiez et al., "1€ Filter", CHI 2012) on each track's points, with its authors'
`OneEuroFilter` package. What a person is for a task, and which of its points are smoothed, is the task's
(`tasks.PoseTask.track`); this module follows boxes and smooths points only.

Both are deterministic: the same boxes, scores and points in the same order give the same ids and the same smoothed
points, which is how a resumed video rebuilds its tracker (the task replays the frames it recorded)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Smoothing:
    """The One Euro filter's parameters for points in pixels: `min_cutoff` (Hz) the cutoff at rest (lower: less
    jitter, more lag), `beta` how fast the cutoff rises with the speed in pixels per second (higher: less lag on fast
    moves), `d_cutoff` (Hz) the cutoff of the speed estimate. The paper's tuning procedure starts at `beta = 0`,
    `min_cutoff = 1 Hz` and raises `beta` until fast moves do not lag; 0.01 suits people moving tens to hundreds of
    pixels per second."""

    min_cutoff: float = 1.0
    beta: float = 0.01
    d_cutoff: float = 1.0


def tracker_identity() -> dict:
    """What a resumed run must find again to rebuild the same ids: the tracker and the library version behind it."""
    import importlib.metadata

    return {"tracker": "bytetrack", "supervision": importlib.metadata.version("supervision")}


class PersonTracker:
    """ByteTrack over one video's person boxes, with optional One Euro smoothing of each track's points.

    `update(boxes, scores, time, points)` takes a frame's boxes `(n, 4)` (x, y, width, height), their detection
    scores, the frame's time in seconds and, when smoothing, each person's points `(n, k, 2)`; it returns each box's
    track id (None for a box that starts or continues no track: a low-score box that matched none) and, when
    smoothing, the smoothed points (those of a box without a track unchanged)."""

    def __init__(self, fps: float, smoothing: Smoothing | None = None):
        with warnings.catch_warnings():
            # supervision 0.30 announces ByteTrack's move to its `trackers` package (docs/inference.md: why this one)
            warnings.simplefilter("ignore", FutureWarning)
            import supervision

            self.tracker = supervision.ByteTrack(frame_rate=fps)
        self.detections = supervision.Detections
        self.fps, self.smoothing = fps, smoothing
        self.filters: dict[int, list] = {}  # per track id, one filter per coordinate
        self.seen: dict[int, int] = {}  # per track id, the last update that had it
        self.updates = 0

    def update(self, boxes, scores, time: float, points=None) -> tuple[list[int | None], np.ndarray | None]:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        detections = self.detections(xyxy=xyxy, confidence=np.asarray(scores, dtype=np.float64).reshape(-1),
                                     class_id=np.zeros(len(boxes), dtype=int), data={"index": np.arange(len(boxes))})
        tracked = self.tracker.update_with_detections(detections)
        ids: list[int | None] = [None] * len(boxes)
        for index, track_id in zip(tracked.data.get("index", []), tracked.tracker_id):  # none tracked: no data
            ids[int(index)] = int(track_id)
        self.updates += 1
        self.seen.update({track_id: self.updates for track_id in ids if track_id is not None})
        for track_id in [key for key, last in self.seen.items() if self.updates - last > self.tracker.max_time_lost]:
            del self.seen[track_id]  # lost for longer than ByteTrack keeps a track: its id never comes back
            self.filters.pop(track_id, None)
        if self.smoothing is None or points is None:
            return ids, None
        points = np.array(points, dtype=np.float64)
        if not len(boxes):  # nobody in the frame
            return ids, points
        points = points.reshape(len(boxes), -1, 2)
        for person, track_id in enumerate(ids):
            if track_id is not None:
                points[person] = self._smooth(track_id, points[person], time)
        return ids, points

    def _smooth(self, track_id: int, points: np.ndarray, time: float) -> np.ndarray:
        from OneEuroFilter import OneEuroFilter

        filters = self.filters.get(track_id)
        if filters is None or len(filters) != points.size:
            settings = self.smoothing
            filters = [OneEuroFilter(self.fps, settings.min_cutoff, settings.beta, settings.d_cutoff)
                       for _ in range(points.size)]
            self.filters[track_id] = filters
        # Times shifted by one second: the package reads a time of 0 as "no time given".
        return np.array([f(value, time + 1.0) for f, value in zip(filters, points.reshape(-1))]).reshape(points.shape)


__all__ = ["PersonTracker", "Smoothing", "tracker_identity"]
