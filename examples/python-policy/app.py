"""A scheduling policy in Python: the tier rule of plugins/tier-fixture.

Workers carry `tier=<fast|slow|standard>`. A job in queue `batch` goes to
a `slow` worker, a job with priority >= 10 to a `fast` one, any other to a
`standard` one. Workers that lack a label the job asks for, a free slot,
or the cpu and memory it reserves are rejected with the host's reasons.

Build: scripts/python-policy.sh (componentize-py against
wit/scheduler.wit, world `scheduling-policy`).
"""

from wit_world import exports
from wit_world.imports.types import Demand, Ranking, Workers

URGENT = 10


def wanted_tier(job: Demand) -> str:
    if job.queue == "batch":
        return "slow"
    if job.priority >= URGENT:
        return "fast"
    return "standard"


class Policy(exports.Policy):
    def name(self) -> str:
        return "python-tier"

    def configure(self, config: str) -> None:
        if config.strip():
            raise ValueError(f'python-tier: unknown configuration {config!r}; expected ""')

    def label_keys(self) -> list[str]:
        return ["tier"]

    def decide(self, job: Demand, candidates: Workers) -> Ranking:
        reasons: list[str] = []

        def reason(text: str) -> int:
            if text not in reasons:
                reasons.append(text)
            return reasons.index(text) + 1

        tiers = candidates.labels_by_key[0]
        wanted = wanted_tier(job)
        all_labels = (1 << min(len(job.labels), 64)) - 1
        verdicts: list[int] = []
        scores: list[int] = []
        for i, mask in enumerate(candidates.label_mask):
            if mask & all_labels != all_labels:
                missing = next(b for b in range(len(job.labels)) if not mask >> b & 1)
                verdicts.append(reason(f"missing label {job.labels[missing]}"))
            elif candidates.slots_free[i] == 0:
                verdicts.append(reason("no free slot"))
            elif candidates.cpu_free[i] < job.cpu_millis:
                verdicts.append(reason("not enough cpu"))
            elif candidates.memory_free[i] < job.memory_mb:
                verdicts.append(reason("not enough memory"))
            else:
                verdicts.append(0)
                value = tiers.value_ids[i]
                scores.append(1 if value and tiers.values[value - 1] == wanted else 0)
        return Ranking(verdicts=verdicts, reasons=reasons, scores=scores)
