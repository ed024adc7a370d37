"""Stages for tests, built the way jobs build them: from their job's packaged YAML block with a few
options laid over it (nested mappings merge)."""
from pipelines.jobs import load_config


def curate_stage(name: str, **over):
    """A model stage of configs/curate.yaml (faces, nsfw, watermark)."""
    return load_config("curate", overrides={"stages": [{"name": name, **over}]}).stages[0]


def quality_stage(keep_analysis: bool = False, **over):
    return load_config("curate", overrides=over).quality_stage(keep_analysis)


def synth_stage(key: str, **over):
    """A stage block of configs/synth.yaml (face_swap, postprocess, id_filter)."""
    return getattr(load_config("synth", overrides={key: over}), key)


def caption_stage(**block):
    """One captioner of configs/caption.yaml (its block by backend, ``block`` laid over it)."""
    return load_config("caption", overrides={"captioners": [block]}).stages()[0]
