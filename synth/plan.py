"""Planning: each selected source record becomes its jobs, one row per (prompt, seed).

A source gets ``prompts_per_source`` prompts that fit its gender (all fitting
prompts when null), each with ``seeds_per_prompt`` seeds derived from the run seed,
the source id and the prompt id, so a plan never changes between runs and a
resumed run skips exactly the pairs already written. A source no prompt fits ends
as one rejected row (``no_fitting_prompts``), so it is still accounted for.
"""
from __future__ import annotations

from dataclasses import dataclass

from curation.engine import ALIVE, between, quarantine, reject
from infu_model import images
from synth.gender import GenderOptions, make_gender_classifier, resolve_gender
from synth.prompts import Prompt, choose
from synth.records import SYNTH_ROW_SCHEMA, derived_seed, pair_id


@dataclass(frozen=True)
class PromptsOptions:
    """A synth job's ``prompts`` block."""
    file: str                                       # the bank (YAML / JSONL / text with gender tags)
    per_source: int | None = between(1)             # prompts per identity image (null: every fitting one)
    seeds_per_prompt: int = between(1)


class Planner:
    """Every selected source's jobs; ``prompts`` is the loaded bank, ``seed`` the run's."""

    def __init__(self, prompts: list[Prompt], opts: PromptsOptions, gender: GenderOptions, seed: int):
        self.prompts, self.opts, self.gender, self.seed = prompts, opts, gender, seed
        self.classifier = None

    @property
    def needs_model(self) -> bool:
        """Whether planning runs a gender classifier (then the plan is only known by running it)."""
        return self.gender.backend != "none"

    def setup(self) -> None:
        self.classifier = make_gender_classifier(self.gender)

    def expand(self, sources: list[dict], done: frozenset = frozenset()) -> list[dict]:
        out = []
        for src in sources:
            jobs = self._jobs(src)
            out += [j for j in jobs if j["pair_id"] not in done]
        return out

    def _jobs(self, src: dict) -> list[dict]:
        base = {f.name: None for f in SYNTH_ROW_SCHEMA}
        base.update(source_id=src["id"], source=src.get("source"), identity=src.get("identity"), status=ALIVE,
                    _source_image=src.get("image"), _source_kps=src.get("kps"), _source_bbox=src.get("bbox"),
                    _source_embedding=src.get("id_embedding"), _source_backend=src.get("id_backend"))
        try:
            gender, origin = resolve_gender(src.get("gender"), self.classifier, lambda: images.decode(src["image"]).rgb,
                                            src.get("bbox"))
        except Exception as e:  # noqa: BLE001 - one unreadable source is one quarantined row
            row = {**base, "pair_id": pair_id(src["id"], "-", -1)}
            quarantine(row, "gender_error", e)
            return [row]
        base.update(gender=gender, gender_from=origin)
        prompts = choose(self.prompts, gender, self.opts.per_source, src["id"], self.seed)
        if not prompts:
            row = {**base, "pair_id": pair_id(src["id"], "-", -1)}
            reject(row, "no_fitting_prompts")
            return [row]
        jobs = []
        for p in prompts:
            for j in range(self.opts.seeds_per_prompt):
                seed = derived_seed(self.seed, src["id"], p.id, j)
                jobs.append({**base, "pair_id": pair_id(src["id"], p.id, seed), "prompt_id": p.id, "prompt": p.text,
                             "seed": seed})
        return jobs
