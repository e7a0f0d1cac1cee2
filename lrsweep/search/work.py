"""What every pack of one run shares (`Work`), and what a run tells of its progress
(`Progress`: this base shows nothing; the command line renders it, `lrsweep.progress`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from lrsweep.search.interrupt import StopAfterEpoch
from lrsweep.search.spec import StudySpec
from lrsweep.train.checkpoint import Checkpoints
from lrsweep.train.data import Splits
from lrsweep.train.trials import EpochMetrics


class Progress:
    """What `run` tells about its work; this base shows nothing, the command line renders it."""

    def start(self, spec: StudySpec, done: int) -> None: ...
    def resumed(self, number: int, epochs_done: int) -> None: ...
    def stopping(self) -> None: ...
    def note(self, line: str) -> None: ...       # one line about the run (SIGTERM, a takeover)
    def study_done(self, done: int) -> None: ...  # finished by every worker, as last read
    def waiting(self, running: int) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    # The pack's slots after an epoch: {trial number: that trial's epoch}, of `epochs`.
    def pack_epoch(self, metrics: dict[int, EpochMetrics], epochs: int) -> None: ...
    # `done`: the trials every worker has finished, this one included, read after its tell.
    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None, done: int) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Work:
    """What every pack of one run shares."""

    spec: StudySpec
    study: optuna.Study
    splits: Splits
    device: Any                      # the torch.device it trains on
    progress: Progress
    checkpoints: Checkpoints
    artifacts: optuna.artifacts.FileSystemArtifactStore
    size: int                        # slots in a LeNet pack
    looped: int                      # slots in a pack of other models (one at a time)
    stop: StopAfterEpoch             # whether a signal asked the run to stop
    finished: list[int] = field(default_factory=list)  # trials this run told, new or continued
