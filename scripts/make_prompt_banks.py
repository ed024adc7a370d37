"""Regenerate configs/prompts/synth.yaml (SPMS prompt bank) and configs/prompts/benchmark.yaml
(the 200-prompt portrait benchmark) from the axes below. Deterministic; the two banks
share no prompt, so evaluation never scores a prompt the model was fine-tuned on.

    .venv/bin/python scripts/make_prompt_banks.py
"""
from __future__ import annotations

import random
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent / "configs" / "prompts"

SUBJECTS = {  # (gender, age) -> noun phrase
    ("female", "young"): "a young woman", ("female", "adult"): "a woman", ("female", "middle-aged"): "a middle-aged woman",
    ("female", "elderly"): "an elderly woman", ("female", "teen"): "a teenage girl",
    ("male", "young"): "a young man", ("male", "adult"): "a man", ("male", "middle-aged"): "a middle-aged man",
    ("male", "elderly"): "an elderly man", ("male", "teen"): "a teenage boy",
    ("any", "young"): "a young adult", ("any", "adult"): "a person", ("any", "middle-aged"): "a middle-aged person",
    ("any", "elderly"): "an elderly person", ("any", "teen"): "a teenager",
}
SHOTS = {  # face size in the frame
    "large": ["an extreme close-up photo of", "a tight headshot of"],
    "medium": ["a close-up portrait of", "a head-and-shoulders photo of", "a portrait photo of"],
    "small": ["a half-body photo of", "a full-body photo of", "a wide shot of"],
}
VIEWS = {"frontal": "looking straight at the camera", "three-quarter": "turned slightly to the side",
         "profile": "seen in profile", "over-shoulder": "glancing back over the shoulder",
         "up": "looking up at the sky", "down": "looking down with a soft smile"}
SCENES = {
    "indoor": ["in a cosy coffee shop", "in a sunlit library", "in a modern office", "in a busy kitchen",
               "in an art gallery", "in a recording studio", "in a rustic cabin", "in a subway car",
               "in a greenhouse full of plants", "in a vintage bookstore"],
    "urban": ["on a rainy city street at night", "on a rooftop above the skyline", "at a crowded night market",
              "in front of a graffiti wall", "on a bridge at sunset", "at a tram stop in the snow"],
    "nature": ["on a windy beach", "in a pine forest", "in a field of sunflowers", "on a snowy mountain trail",
               "beside a quiet lake at dawn", "in a desert canyon", "under cherry blossoms", "in a bamboo grove"],
    "studio": ["against a plain grey studio backdrop", "against a deep blue backdrop", "in a white photo studio"],
    "fantasy": ["in a medieval castle hall", "on the deck of a sailing ship", "on a spaceship bridge",
                "in an enchanted glowing forest", "in a steampunk workshop"],
}
CLOTHING = {
    "female": ["in a red summer dress", "in a tailored black blazer", "in a floral blouse", "in an evening gown",
               "in a knitted cardigan"],
    "male": ["in a navy suit and tie", "in a denim jacket", "in a plaid flannel shirt", "in a tuxedo",
             "in a wool overcoat"],
    "any": ["in a yellow raincoat", "in a white t-shirt", "in a leather jacket", "in a chunky knit sweater",
            "in a hoodie", "in hiking gear", "in a chef's uniform", "in an astronaut suit", "in a lab coat",
            "in a traditional kimono", "in a wide-brimmed straw hat", "in a colourful poncho"],
}
LIGHT = ["soft window light", "golden hour backlight", "dramatic rim lighting", "neon reflections",
         "overcast diffuse light", "warm candlelight", "harsh midday sun", "studio softbox lighting",
         "moody low-key lighting", "dappled light through leaves"]
ACTIONS = {  # complexity: an object or an interaction in the scene
    "simple": ["smiling", "laughing", "with a calm expression", "with a serious expression", "deep in thought"],
    "complex": ["holding a cup of coffee", "reading a newspaper", "playing an acoustic guitar", "riding a bicycle",
                "walking a golden retriever", "painting on an easel", "taking a photo with a film camera",
                "holding an umbrella", "carrying a bouquet of tulips", "typing on a laptop", "eating an ice cream",
                "juggling three oranges"],
}
STYLE_TAILS = ["shot on a 50mm lens with shallow depth of field", "film grain, muted colours",
               "high detail, natural skin texture", "cinematic colour grading", "sharp focus, 8k photo",
               "in the style of a magazine editorial", "candid documentary style"]
MOODS = ["The mood is peaceful and relaxed.", "The atmosphere feels nostalgic.", "Everything feels bright and cheerful.",
         "The scene is quiet and a little melancholic.", "There is a sense of adventure in the air."]


def compose(rng: random.Random, gender: str, length: str) -> tuple[str, dict]:
    age = rng.choice(["young", "adult", "adult", "middle-aged", "elderly", "teen"])
    face = rng.choice(list(SHOTS))
    view = rng.choice(list(VIEWS))
    scene_kind = rng.choice(list(SCENES))
    complexity = rng.choice(["simple", "complex"])
    subj = SUBJECTS[(gender, age)]
    tags = {"length": length, "face_size": face, "view": view, "scene": scene_kind, "age": age,
            "complexity": complexity}
    if length == "short":
        text = f"{subj[0].upper()}{subj[1:]} {rng.choice(ACTIONS[complexity])}, {VIEWS[view]}"
        tags.update(face_size="medium", scene="unspecified")
        return text, tags
    cloth = rng.choice(CLOTHING[gender] + CLOTHING["any"])
    if "kimono" in cloth or "poncho" in cloth:
        tags["culture"] = "traditional attire"
    text = (f"{rng.choice(SHOTS[face])} {subj} {cloth}, {rng.choice(ACTIONS[complexity])} "
            f"{rng.choice(SCENES[scene_kind])}, {VIEWS[view]}, {rng.choice(LIGHT)}")
    text = text[0].upper() + text[1:]
    if length == "long":
        text += f", {rng.choice(STYLE_TAILS)}. {rng.choice(MOODS)}"
    return text, tags


def bank(rng: random.Random, counts: dict, prefix: str, exclude: set[str]) -> list[dict]:
    out, seen = [], set(exclude)
    for (gender, length), n in counts.items():
        made = 0
        while made < n:
            text, tags = compose(rng, gender, length)
            if text in seen:
                continue
            seen.add(text)
            made += 1
            out.append({"id": f"{prefix}{len(out) + 1:03d}", "gender": gender, "text": text, "tags": tags})
    return out


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    per = {("female", "short"): 14, ("female", "medium"): 30, ("female", "long"): 26,
           ("male", "short"): 14, ("male", "medium"): 30, ("male", "long"): 26,
           ("any", "short"): 12, ("any", "medium"): 26, ("any", "long"): 22}
    assert sum(per.values()) == 200
    bench = bank(random.Random(2025), per, "b", set())
    synth = bank(random.Random(7), {k: v for k, v in per.items()}, "s", {p["text"] for p in bench})
    head = ("# Generated by scripts/make_prompt_banks.py (edit the axes there, not this file).\n"
            "# gender: female | male | any - a prompt is paired only with identities of that gender ('any': all).\n")
    (ROOT / "benchmark.yaml").write_text(
        head + "# The portrait benchmark for `infu eval` (paper section 4.1: 200 prompts with gender information).\n"
        + yaml.safe_dump({"prompts": bench}, sort_keys=False, width=200))
    (ROOT / "synth.yaml").write_text(
        head + "# The SPMS prompt bank for `infu synth`; it shares no prompt with the benchmark.\n"
        + yaml.safe_dump({"prompts": synth}, sort_keys=False, width=200))


if __name__ == "__main__":
    main()
