"""Planning: each selected source record becomes its jobs, one row per (prompt, seed).

A source gets ``prompts_per_source`` prompts that fit its gender (all fitting
prompts when null), each with ``seeds_per_prompt`` seeds derived from the run seed,
the source id and the prompt id, so a plan never changes between runs and a
resumed run skips exactly the pairs already written. A source no prompt fits ends
as one rejected row (``no_fitting_prompts``), so it is still accounted for.
"""
from __future__ import annotations

from curation.records import ALIVE, quarantine, reject
from infu_model import images
from synth.gender import make_gender_classifier, resolve_gender
from synth.prompts import Prompt, choose, load_prompts
from synth.records import SYNTH_ROW_SCHEMA, derived_seed, pair_id


def needs_model(cfg: dict) -> bool:
    """Whether planning runs a gender classifier (then the plan is only known by running it)."""
    return (cfg.get("gender") or {}).get("backend", "none") not in (None, "none")


class Planner:
    def __init__(self, cfg: dict, prompts: list[Prompt] | None = None):
        """``prompts``: the bank already loaded (else read from ``cfg["prompts_file"]``)."""
        self.cfg = cfg
        self.prompts = prompts if prompts is not None else load_prompts(cfg["prompts_file"])
        self.k = cfg.get("prompts_per_source")
        self.seeds = int(cfg.get("seeds_per_prompt", 1))
        self.seed = int(cfg.get("seed", 0))
        self.classifier = None

    def setup(self) -> None:
        self.classifier = make_gender_classifier(self.cfg.get("gender"))

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
        prompts = choose(self.prompts, gender, self.k, src["id"], self.seed)
        if not prompts:
            row = {**base, "pair_id": pair_id(src["id"], "-", -1)}
            reject(row, "no_fitting_prompts")
            return [row]
        jobs = []
        for p in prompts:
            for j in range(self.seeds):
                seed = derived_seed(self.seed, src["id"], p.id, j)
                jobs.append({**base, "pair_id": pair_id(src["id"], p.id, seed), "prompt_id": p.id, "prompt": p.text,
                             "seed": seed})
        return jobs
