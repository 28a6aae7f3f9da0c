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
alike.

The window also gives each deployment's cache footprint: the blocks of the distinct
prefixes (anchors) it took, each counted once at the longest prompt it took under that
anchor. A cache holds what it was recently sent; two deployments taking alike many
requests may hold very different working sets, and a prompt placed where the working set
is already large evicts another there. And `home(label, anchor)`, the decisions for one
prefix a deployment took: of two deployments holding a prompt alike, the one that keeps
taking it is the one whose cache still holds it (a copy a spill made ages out unused).

Placements (decisions for a request no session pin decided: a conversation's first turn,
a request without a session) are counted apart, over the last `size` of them: a
placement brings the conversation's later turns with it, so bounding placements bounds
the conversations a deployment is given, which a window of all decisions sees only once
their turns have come (a burst of new conversations would all land on the deployment
that was idle in the last window)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

# Decisions remembered per deployment of the pool (the window is at least MIN_WINDOW).
PER_DEPLOYMENT = 32
MIN_WINDOW = 128
_NONE: Mapping[str, list[int]] = MappingProxyType({})  # no deployment took the prefix


class RecentShare:
    def __init__(self, deployments: int) -> None:
        self.deployments = deployments
        self.size = max(MIN_WINDOW, PER_DEPLOYMENT * deployments)
        self._window: deque[tuple[str, bytes]] = deque()
        self.counts: dict[str, int] = {}  # decisions in the window, by deployment
        self.anchors: dict[bytes, int] = {}  # decisions in the window, by prompt anchor
        # By deployment: the blocks of the distinct prefixes it took in the window.
        self.footprint: dict[str, int] = {}
        # By anchor, then deployment: [decisions in the window, the longest prompt's blocks].
        self._held: dict[bytes, dict[str, list[int]]] = {}
        self._placements: deque[str] = deque()
        self.placed: dict[str, int] = {}  # placements among the last `size`, by deployment

    def __len__(self) -> int:
        return len(self._window)

    def count(self, label: str) -> int:
        return self.counts.get(label, 0)

    def home(self, label: str, anchor: bytes) -> int:
        """The window's decisions for prompts under `anchor` that `label` took."""
        held = self._held.get(anchor, _NONE).get(label)
        return held[0] if held is not None else 0

    def homes(self, anchor: bytes) -> Mapping[str, list[int]]:
        """By deployment, [decisions, blocks] for prompts under `anchor` in the window
        (one lookup a decision; read, never change)."""
        return self._held.get(anchor, _NONE)

    def placements(self) -> int:
        return len(self._placements)

    def prefix_count(self, anchor: bytes) -> int:
        return self.anchors.get(anchor, 0)

    def hot(self, anchor: bytes) -> bool:
        return self.is_hot(self.anchors.get(anchor, 0))

    def is_hot(self, prefix_count: int) -> bool:
        """More than half a deployment's mean share of the whole window."""
        return prefix_count * 2 * self.deployments > self.size

    def add(self, label: str, anchor: bytes, blocks: int = 0, placement: bool = False) -> None:
        """`label` took a request whose prompt has `blocks` blocks under `anchor`;
        `placement`: no session pin decided it."""
        window, counts, anchors = self._window, self.counts, self.anchors
        window.append((label, anchor))
        counts[label] = counts.get(label, 0) + 1
        anchors[anchor] = anchors.get(anchor, 0) + 1
        footprint = self.footprint
        by_label = self._held.get(anchor)
        if by_label is None:
            by_label = self._held[anchor] = {}
        held = by_label.get(label)
        if held is None:
            by_label[label] = [1, blocks]
            footprint[label] = footprint.get(label, 0) + blocks
        else:
            held[0] += 1
            if blocks > held[1]:
                footprint[label] += blocks - held[1]
                held[1] = blocks
        if placement:
            placements, placed = self._placements, self.placed
            placements.append(label)
            placed[label] = placed.get(label, 0) + 1
            if len(placements) > self.size:
                placed[placements.popleft()] -= 1
        if len(window) > self.size:
            self._forget(*window.popleft())

    def _forget(self, gone: str, old: bytes) -> None:
        self.counts[gone] -= 1
        left = self.anchors[old] - 1
        if left:
            self.anchors[old] = left
        else:
            del self.anchors[old]
        by_label = self._held[old]
        held = by_label[gone]
        held[0] -= 1
        if not held[0]:
            del by_label[gone]
            if not by_label:
                del self._held[old]
            self.footprint[gone] -= held[1]
