"""Each deployment's share of this process's recent affinity decisions for one pool, and
each prefix's: a sliding window of the last `size` decisions (winner and the prompt's
anchor) with counts by deployment and by anchor, O(1) a decision.

Bounding calls in flight does not bound the share of requests: a replica that holds a hot
prefix answers faster, so at equal calls in flight it serves more of them. The window lets
the choice bound the request rate too (policies/affinity/choice.py). A prefix is hot when
it took more than half a deployment's mean share of the window (`hot`): only a hot
prefix is copied to a deployment that does not hold it for the share's sake, since it is
used often enough to stay cached there; an ordinary prefix passed over for its share goes
only where it is already held, else stays (a copy would put a whole prompt into a second
cache for a few requests and evict others there). The window is per process and shares
nothing: with several Turnout processes each bounds its own share, so the sum is bounded
alike."""

from __future__ import annotations

from collections import deque

# Decisions remembered per deployment of the pool (the window is at least MIN_WINDOW).
PER_DEPLOYMENT = 32
MIN_WINDOW = 128


class RecentShare:
    def __init__(self, deployments: int) -> None:
        self.deployments = deployments
        self.size = max(MIN_WINDOW, PER_DEPLOYMENT * deployments)
        self._window: deque[tuple[str, bytes]] = deque()
        self.counts: dict[str, int] = {}  # decisions in the window, by deployment
        self.anchors: dict[bytes, int] = {}  # decisions in the window, by prompt anchor

    def __len__(self) -> int:
        return len(self._window)

    def count(self, label: str) -> int:
        return self.counts.get(label, 0)

    def prefix_count(self, anchor: bytes) -> int:
        return self.anchors.get(anchor, 0)

    def hot(self, anchor: bytes) -> bool:
        return self.is_hot(self.anchors.get(anchor, 0))

    def is_hot(self, prefix_count: int) -> bool:
        """More than half a deployment's mean share of the whole window."""
        return prefix_count * 2 * self.deployments > self.size

    def add(self, label: str, anchor: bytes) -> None:
        window, counts, anchors = self._window, self.counts, self.anchors
        window.append((label, anchor))
        counts[label] = counts.get(label, 0) + 1
        anchors[anchor] = anchors.get(anchor, 0) + 1
        if len(window) > self.size:
            gone, old = window.popleft()
            counts[gone] -= 1
            left = anchors[old] - 1
            if left:
                anchors[old] = left
            else:
                del anchors[old]
