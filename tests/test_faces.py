"""Face analysis, face/NSFW/watermark stages on real photos; ArcFace and classifier loaders."""
import numpy as np
import pytest
import torch

from curation import samples
from curation.engine import ALIVE, run_stage
from curation.registry import empty_row
from infu_model.faces import FaceModelMissing, head_pose, make_face_analyzer
from infu_model.faces.arcface import IRSE50, load_arcface
from infu_model.faces.insightface_backend import InsightFaceAnalyzer, arcface_input
from stages import curate_stage

FACE_CFG = {"backend": "dlib", "dlib": {"adjust_threshold": 0.1}}


@pytest.fixture(scope="module")
def dlib_faces():
    return make_face_analyzer(FACE_CFG)


def row_of(im, name="x"):
    rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
    r = empty_row()
    r.update(id=name, source="t", path=name, frame=-1, status=ALIVE, width=rgb.shape[1], height=rgb.shape[0],
             _analysis=rgb.tobytes(), _analysis_h=rgb.shape[0], _analysis_w=rgb.shape[1])
    return r


def test_single_portrait_has_sensible_keypoints(dlib_faces):
    for im in (samples.astronaut(), samples.grace_hopper()):
        faces = dlib_faces.detect(np.asarray(im))
        assert faces and all(f.det_score < 0.5 for f in faces[1:]), "one clear face"
        le, re_, nose, lm, rm = faces[0].kps
        assert le[0] < re_[0] and lm[0] < rm[0]
        assert max(le[1], re_[1]) < nose[1] < min(lm[1], rm[1]), "eyes above nose above mouth"
        x1, y1, x2, y2 = faces[0].bbox
        assert all(x1 - 5 <= x <= x2 + 5 and y1 - 5 <= y <= y2 + 5 for x, y in faces[0].kps)


def test_face_stage_decisions_on_real_photos():
    stage = curate_stage("faces", **FACE_CFG)
    a = samples.astronaut()
    rows = [row_of(a, "portrait"), row_of(samples.group(), "group"), row_of(samples.cat(), "cat"),
            row_of(samples.small_face_canvas(a), "canvas"), row_of(samples.side_by_side(a, samples.grace_hopper()), "two")]
    run_stage(stage, rows)
    got = {r["id"]: (r["status"], r["reason"]) for r in rows}
    assert got == {"portrait": (ALIVE, None), "group": ("rejected", "multiple_faces"), "cat": ("rejected", "no_face"),
                   "canvas": ("rejected", "small_face"), "two": ("rejected", "multiple_faces")}
    kept = rows[0]
    assert len(kept["id_embedding"]) == 128 and kept["id_backend"] == "dlib_resnet_v1"
    assert len(kept["kps"]) == 5 and abs(kept["yaw"]) < 15
    assert rows[1]["face_count"] >= 3 and rows[3]["face_ratio"] < 0.005


def test_photos_of_several_people_become_multi_id_records_when_asked(dlib_faces):
    """groups.keep: two portraits side by side are one record holding both faces (box, keypoints, score,
    embedding, largest first, each the embedding of its own person); a group larger than max_faces, a
    group with a face too small and a single portrait are decided as without it."""
    a, g = samples.astronaut(), samples.grace_hopper()
    two = samples.side_by_side(a, g)
    rows = [row_of(two, "two"), row_of(samples.group(), "group"), row_of(a, "portrait"),
            row_of(samples.side_by_side(a, g.resize((60, 75))), "one small")]
    run_stage(curate_stage("faces", **FACE_CFG, groups={"keep": True, "max_faces": 3}), rows)  # the group: 4
    got = {r["id"]: (r["status"], r["reason"]) for r in rows}
    assert got == {"two": (ALIVE, None), "group": ("rejected", "multiple_faces"), "portrait": (ALIVE, None),
                   "one small": (ALIVE, None)}, got  # the tiny second face is a background face, as without groups
    two_row = rows[0]
    assert two_row["face_count"] == 2 and len(two_row["faces_bbox"]) == len(two_row["faces_kps"]) == 2
    assert len(two_row["faces_det_score"]) == 2 and all(len(e) == 128 for e in two_row["faces_embedding"])
    assert two_row["faces_bbox"][0] == two_row["bbox"] and two_row["faces_embedding"][0] == two_row["id_embedding"]
    # each face's embedding is its own person's: nearer that person alone than the other person
    rgb = {n: np.asarray(im) for n, im in (("a", a), ("g", g))}
    alone = {n: dlib_faces.embed(x, dlib_faces.detect(x)[0]) for n, x in rgb.items()}
    left = min(range(2), key=lambda k: two_row["faces_bbox"][k][0])  # the astronaut is on the left
    for k, person, other in ((left, "a", "g"), (1 - left, "g", "a")):
        e = np.asarray(two_row["faces_embedding"][k])
        assert np.linalg.norm(e - alone[person]) < np.linalg.norm(e - alone[other])
    assert all(rows[i]["faces_bbox"] is None for i in (2, 3))
    wide = [row_of(samples.group(), "group")]
    run_stage(curate_stage("faces", **FACE_CFG, groups={"keep": True, "max_faces": 8}), wide)
    assert wide[0]["status"] == ALIVE and len(wide[0]["faces_bbox"]) == wide[0]["face_count"] >= 3


def test_face_fields_are_in_original_pixels():
    stage = curate_stage("faces", **FACE_CFG)
    a = samples.astronaut()
    full, half = row_of(a, "full"), row_of(a.resize((256, 256)), "half")
    half["width"] = half["height"] = 512  # the analysis image is half the original's size
    run_stage(stage, [full, half])
    assert np.allclose(full["bbox"], half["bbox"], atol=12)
    assert np.allclose(full["kps"], half["kps"], atol=8)


def test_same_person_is_far_closer_than_another(dlib_faces):
    def emb(im):
        rgb = np.asarray(im)
        return dlib_faces.embed(rgb, dlib_faces.detect(rgb)[0])

    a, g = samples.astronaut(), samples.grace_hopper()
    same_a = np.linalg.norm(emb(a) - emb(a.resize((340, 340))))
    same_g = np.linalg.norm(emb(g) - emb(g.resize((300, 352))))
    other = np.linalg.norm(emb(a) - emb(g))
    assert same_a < 0.3 and same_g < 0.3 and other > 0.6
    assert other > 3 * max(same_a, same_g)


def test_head_pose_from_keypoints():
    frontal = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
    yaw, pitch = head_pose(frontal)
    assert abs(yaw) < 2 and abs(pitch) < 2
    c, s = np.cos(0.5), np.sin(0.5)
    rolled = frontal @ np.array([[c, -s], [s, c]]).T + 40
    assert np.allclose(head_pose(rolled), (yaw, pitch), atol=1e-6), "roll does not change yaw or pitch"
    turned = frontal.copy()
    turned[2, 0] += 12
    assert head_pose(turned)[0] > 25
    down = frontal.copy()
    down[2, 1] += 10
    assert head_pose(down)[1] > 20


def test_arcface_loads_a_facexlib_state_dict_key_for_key(tmp_path):
    torch.manual_seed(0)
    ref = IRSE50().eval()
    sd = ref.state_dict()
    assert sd["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert sd["body.23.res_layer.5.fc2.weight"].shape == (512, 32, 1, 1)
    assert sd["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert sum(k.startswith("body.") and k.endswith("shortcut_layer.0.weight") for k in sd) == 3  # the 64->64 stage uses a max-pool shortcut
    path = tmp_path / "recognition_arcface_ir_se50.pth"
    torch.save(sd, path)  # facexlib's file is a plain state dict
    model = load_arcface(path)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, ref(x))
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    del sd["output_layer.4.running_mean"]
    torch.save(sd, path)
    with pytest.raises(RuntimeError, match="running_mean"):
        load_arcface(path)


def test_arcface_input_is_the_aligned_crop_in_minus_one_one(dlib_faces):
    rgb = np.asarray(samples.astronaut())
    face = dlib_faces.detect(rgb)[0]
    x = arcface_input(rgb[:, :, ::-1].copy(), face.kps)
    assert x.shape == (1, 3, 112, 112) and x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.2, "the crop holds the face, not the black border"


def test_insightface_backend_names_the_missing_files(tmp_path):
    with pytest.raises(FaceModelMissing, match=str(tmp_path / "models" / "antelopev2" / "scrfd_10g_bnkps.onnx")):
        InsightFaceAnalyzer(root=str(tmp_path))
    det = tmp_path / "models" / "antelopev2" / "scrfd_10g_bnkps.onnx"
    det.parent.mkdir(parents=True)
    det.write_bytes(b"")
    with pytest.raises(FaceModelMissing, match="nope.pth"):
        InsightFaceAnalyzer(root=str(tmp_path), arcface=str(tmp_path / "nope.pth"))


def test_insightface_backend_detects_and_embeds_with_models_in_the_published_layout(tmp_path):
    """InfU's own backend end to end on the CPU: a tiny random SCRFD with antelopev2's signature in
    models/antelopev2/ and a random IR-SE50 state dict where facexlib puts it. Faces come largest
    first with five keypoints, embeddings are unit 512-vectors of the aligned crop, a photo the
    detector finds nothing in has no face, and the detector's session runs where the placement
    rule says (the CPU provider here)."""
    import tiny_onnx

    det = tmp_path / "models" / "antelopev2" / "scrfd_10g_bnkps.onnx"
    det.parent.mkdir(parents=True)
    tiny_onnx.scrfd(det, score_bias=-3.0)
    torch.manual_seed(0)
    torch.save(IRSE50().state_dict(), tmp_path / "arcface.pth")
    faces = make_face_analyzer({"backend": "insightface", "insightface": {
        "root": str(tmp_path), "arcface": str(tmp_path / "arcface.pth"), "device": "cuda"}})
    assert isinstance(faces, InsightFaceAnalyzer)
    assert faces.detector.session.get_providers() == ["CPUExecutionProvider"], "no CUDA provider: the CPU, as said"
    rgb = np.asarray(samples.grace_hopper())
    found = faces.detect(rgb)
    assert found and [f.area for f in found] == sorted((f.area for f in found), reverse=True)
    h, w = rgb.shape[:2]
    for f in found:
        assert f.kps.shape == (5, 2) and 0 <= f.bbox[0] < f.bbox[2] <= w and 0 <= f.bbox[1] < f.bbox[3] <= h
    e = faces.embed(rgb, found[0])
    assert e.shape == (512,) and abs(np.linalg.norm(e) - 1) < 1e-5
    assert np.array_equal(e, faces.embed(rgb, found[0])) and not np.allclose(e, faces.embed(rgb, found[-1]))
    assert faces.detect(np.asarray(samples.cat())) == []


def test_nsfw_scores_real_portraits_low():
    rows = [row_of(samples.astronaut(), "a"), row_of(samples.grace_hopper(), "g")]
    run_stage(curate_stage("nsfw", backend="nudenet", threshold=0.5), rows)
    assert all(r["status"] == ALIVE and 0.0 <= r["nsfw"] < 0.5 for r in rows)


class DetectorOutput:
    """nudenet's ONNX session with its output replaced by given detections in the detector's own format:
    the real session runs on the real input, and its output (1 x (4 box + 18 class scores) x 2100
    boxes, 320-px model coordinates) is zeroed but for the given boxes, so nudenet's pre- and
    post-processing are the real ones."""

    def __init__(self, session, detections: list[tuple[str, float]]):
        import nudenet.nudenet

        self.labels = getattr(nudenet.nudenet, "__labels")  # the detector's class order (a module-private list)
        self.session, self.detections = session, detections

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        out = np.zeros_like(self.session.run(names, feeds)[0])
        for i, (label, score) in enumerate(self.detections):
            out[0, :4, i] = (60 + 100 * i, 160, 50, 50)   # centre x, y, width, height: apart, so none suppresses another
            out[0, 4 + self.labels.index(label), i] = score
        return [out]


@pytest.mark.parametrize("detections,expected", [
    ([("FEMALE_BREAST_EXPOSED", 0.5)], ("nsfw", 0.5)),                              # at the threshold: rejected
    ([("FEMALE_BREAST_EXPOSED", 0.49)], (None, 0.49)),                              # just below it: kept, scored
    ([("FACE_FEMALE", 0.95), ("BUTTOCKS_EXPOSED", 0.8)], ("nsfw", 0.8)),           # the filtered class decides
    ([("FACE_FEMALE", 0.95), ("FEMALE_BREAST_COVERED", 0.9)], (None, 0.0)),        # classes not filtered: 0
])
def test_nsfw_decides_from_the_detectors_output(detections, expected):
    stage = curate_stage("nsfw", backend="nudenet", threshold=0.5)
    stage.ensure_setup()
    stage.model.onnx_session = DetectorOutput(stage.model.onnx_session, detections)
    rows = [row_of(samples.astronaut(), "a")]
    run_stage(stage, rows)
    assert (rows[0]["reason"], round(rows[0]["nsfw"], 4)) == expected


def _tiny_classifier(path, labels, last: float = 0.75):
    """A tiny ViT classifier whose head ignores the image: zero weights, and biases that give the last
    label probability ``last`` (softmax over two labels) for every photo."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, num_labels=len(labels), id2label=dict(enumerate(labels)),
                    label2id={v: k for k, v in enumerate(labels)})
    torch.manual_seed(0)
    model = ViTForImageClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, float(np.log(last / (1 - last)))]))
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


def test_watermark_stage_none_reports_not_run():
    stage = curate_stage("watermark", combine="none")
    assert not stage.enabled and stage.report()["ran"] is False


@pytest.mark.parametrize("text,term", [("RREVIEW", "preview"), ("tersto", "shutterstock"), ("shutterstoc", "shutterstock"),
                                       ("eamstime.cor", "dreamstime"), ("© John Smith", "©"), ("www.annakim", "web address"),
                                       ("w.ann", "web address"), ("kimphoto.con", "web address"), ("Dr. Kim", None),
                                       ("HOTEL", None), ("BOSTON", None), ("Main St", None), ("Stockholm", None),
                                       ("COMMODORE HOPPER", None), ("SUMMER", None), ("23RF", "123rf"),
                                       ("123RI", "123rf"), ("123 Main St", None), ("TEAM 7", None), ("Pond", None),
                                       ("C John Smith 2023", "name and year"), (" Anna Kim 2019", "name and year"),
                                       ("CLASS OF 2023", None), ("Since 1998", None), ("Route 2023", None)])
def test_watermark_vocabulary_reads_misread_and_partial_marks_only(text, term):
    from curation.watermark_ocr import vocabulary_hit

    assert vocabulary_hit(text, curate_stage("watermark").opts.ocr.vocabulary) == term


def test_watermark_rules_score_placement_and_repeats():
    from curation.watermark_ocr import TextRegion, judge

    flat = np.full((1000, 800, 3), 120, np.uint8)   # no strokes to measure: the translucency rule stays 0
    box = lambda x, y: np.array([[x, y], [x + 120, y], [x + 120, y + 30], [x, y + 30]], np.float32)  # noqa: E731
    face, opts = (300, 100, 500, 350), curate_stage("watermark").opts.ocr
    far = judge([TextRegion(box(20, 900), "HOTEL", 0.95)], flat, face, opts)
    assert far.score == 0 and far.rule is None, "scene text away from the face and centre is not a watermark"
    on_face = judge([TextRegion(box(350, 200), "Kim", 0.9)], flat, face, opts)
    assert on_face.rule == "over_face" and on_face.score >= 0.5 and "Kim" in on_face.describe()
    centre = judge([TextRegion(box(340, 480), "NYC", 0.95)], flat, face, opts)
    assert centre.rule == "over_centre" and centre.score < 0.5, "a print over the centre alone is not enough"
    tiled = judge([TextRegion(box(20 + 200 * i, 800), "annak", 0.9) for i in range(3)], flat, face, opts)
    assert tiled.rule == "repeated" and tiled.score >= 0.5 and "x3" in tiled.text
    both = judge([TextRegion(box(340, 480), "NYC", 0.95), TextRegion(box(20, 800), "NYC", 0.95)], flat, face, opts)
    assert both.score > max(centre.score, 0.5 * 0.9 * 0.95), "evidence from two rules adds up"


def test_ocr_watermark_stage_rejects_overlaid_marks_and_keeps_scene_text():
    a, g = samples.fit(samples.astronaut(), 1024), samples.fit(samples.grace_hopper(), 1024)
    marked = {"tiled": samples.overlay_text(g, "Shutterstock", opacity=0.3, size=0.06),
              "centre": samples.overlay_text(a.crop((128, 0, 896, 1024)), "PREVIEW", placement="centre", opacity=0.5,
                                             size=0.075, font_name=samples.FONTS[1])}
    # Grace Hopper's name tag is real scene text; a shop sign and a T-shirt print are painted on
    clean = {"name_tag": g, "sign_and_shirt": samples.scene_text(samples.scene_text(a, "CAFE"), "SUMMER", where="shirt")}
    faces, stage = curate_stage("faces", **FACE_CFG), curate_stage("watermark", combine="ocr")
    rows = {k: row_of(im, k) for k, im in {**marked, **clean}.items()}
    run_stage(faces, list(rows.values()))
    for r in rows.values():
        r.update(status=ALIVE, reason=None)
    run_stage(stage, list(rows.values()))
    for k in marked:
        assert rows[k]["reason"] == "watermark" and rows[k]["watermark"] >= 0.5, (k, rows[k]["watermark_text"])
        assert rows[k]["watermark_text"].split(":")[0] in ("vocabulary", "repeated", "over_face", "over_centre",
                                                           "translucent")
    for k in clean:
        assert rows[k]["status"] == ALIVE and rows[k]["watermark"] < 0.5, (k, rows[k]["watermark_text"])


@pytest.mark.parametrize("shape", [(1, 1), (8, 400), (16, 16), (3000, 40)])
def test_ocr_watermark_stage_survives_tiny_and_odd_images(shape):
    rgb = np.random.default_rng(0).integers(0, 255, shape + (3,), dtype=np.uint8)
    r = row_of(samples.Image.fromarray(rgb))
    run_stage(curate_stage("watermark", combine="ocr"), [r])
    assert r["status"] == ALIVE and r["watermark"] is not None, (r["reason"], r["error"])


@pytest.mark.parametrize("threshold,reason", [(0.7, "watermark"), (0.8, None)])
def test_watermark_classifier_from_a_local_folder(tmp_path, threshold, reason):
    """The classifier's probability of the configured label is the score (0.75 from this head's bias):
    a threshold under it rejects, one over it keeps."""
    _tiny_classifier(tmp_path / "wm", ["clean", "watermark"])
    stage = curate_stage("watermark", combine="classifier", classifier={"model": str(tmp_path / "wm")},
                          threshold=threshold)
    rows = [row_of(samples.watermarked(samples.grace_hopper()), "w"), row_of(samples.astronaut(), "a")]
    run_stage(stage, rows)
    assert [(r["reason"], round(r["watermark"], 4)) for r in rows] == [(reason, 0.75)] * 2
    assert stage.report()["ran"] is True
    clean = curate_stage("watermark", combine="classifier", classifier={"model": str(tmp_path / "wm"), "label": "clean"},
                         threshold=threshold)
    rows = [row_of(samples.astronaut(), "a")]
    run_stage(clean, rows)
    assert round(rows[0]["watermark"], 4) == 0.25, "the score is the configured label's"
    with pytest.raises(ValueError, match="not one of the model's labels"):
        curate_stage("watermark", combine="classifier", classifier={"model": str(tmp_path / "wm"), "label": "logo"}).setup()
    with pytest.raises(FileNotFoundError, match="missing_model"):
        curate_stage("watermark", combine="classifier", classifier={"model": str(tmp_path / "missing_model")}).setup()


@pytest.mark.parametrize("classifier_says", [0.25, 0.75])
def test_watermark_opinions_combine(tmp_path, classifier_says):
    """combine: any rejects what either opinion flags, ocr what the OCR rules flag, classifier what the
    classifier flags; `watermark` is the larger score, and the row keeps each opinion's evidence (the
    rule and text read; the classifier's probability and top label), which the report shows. This
    classifier's head gives every photo the same probability of 'watermark'."""
    from pipelines.sections import evidence

    _tiny_classifier(tmp_path / "wm", ["clean", "watermark"], last=classifier_says)
    g = samples.fit(samples.grace_hopper(), 1024)
    photos = {"marked": samples.overlay_text(g, "Shutterstock", opacity=0.3, size=0.06), "clean": g}
    found = {k: row_of(im, k) for k, im in photos.items()}
    run_stage(curate_stage("faces", **FACE_CFG), list(found.values()))  # the face box each opinion reads
    decided = {}
    for combine in ("ocr", "classifier", "any"):
        stage = curate_stage("watermark", combine=combine, classifier={"model": str(tmp_path / "wm")})
        rows = {k: {**r, "status": ALIVE, "reason": None} for k, r in found.items()}
        run_stage(stage, list(rows.values()))
        decided[combine] = {k: r["reason"] for k, r in rows.items()}
        for r in rows.values():  # the deciding score is the larger opinion
            assert r["watermark"] >= (r.get("watermark_classifier") or 0.0)
            assert (r.get("watermark_text") is not None) == (combine != "classifier")
        if combine == "any":
            marked = rows["marked"]
            assert marked["watermark_text"].startswith("vocabulary") and marked["watermark_label"] == (
                "watermark" if classifier_says > 0.5 else "clean")
            said = evidence(marked)
            assert "OCR: vocabulary" in said and f"classifier {classifier_says:.3f}" in said, said
    flagged = classifier_says >= 0.5
    assert decided["ocr"] == {"marked": "watermark", "clean": None}
    assert decided["classifier"] == ({"marked": "watermark", "clean": "watermark"} if flagged else
                                     {"marked": None, "clean": None})
    assert decided["any"] == {"marked": "watermark", "clean": "watermark" if flagged else None}


def test_dedup_keeps_the_clean_copy_over_one_with_a_faint_overlay_the_watermark_rule_let_through():
    """The same photo twice at the same size, one with a faint corner mark the OCR rules score under the
    threshold: the marked copy is sharper (its edges), which used to make it the survivor. Ranked by
    the watermark score first, the clean copy is kept. A larger clean copy still beats a smaller one."""
    import pyarrow as pa

    from curation.dedup import find_duplicates
    from curation.quality import blur_score, phash_hex

    g = samples.fit(samples.astronaut(), 768)
    photos = {"clean": g, "marked": samples.overlay_text(g, "Anna Kim", opacity=0.15, size=0.05, placement="corner"),
              "small": g.resize((512, 512))}
    rows = {k: row_of(im, k) for k, im in photos.items()}
    run_stage(curate_stage("faces", **FACE_CFG), list(rows.values()))
    for r in rows.values():
        r.update(status=ALIVE, reason=None)
    run_stage(curate_stage("watermark", combine="ocr"), list(rows.values()))
    assert all(r["status"] == ALIVE for r in rows.values()), "the faint mark is under the threshold"
    assert 0 < rows["marked"]["watermark"] < 0.5 and rows["clean"]["watermark"] == 0.0
    table = pa.Table.from_pylist([{"id": k, "phash": phash_hex(np.asarray(im)), "width": im.width, "height": im.height,
                                   "blur": blur_score(np.asarray(im)), "watermark": rows[k]["watermark"], "nsfw": None}
                                  for k, im in photos.items()])
    blur = dict(zip(table["id"].to_pylist(), table["blur"].to_pylist()))
    assert blur["marked"] > blur["clean"], "sharpness alone would keep the marked copy"
    dups = {r["id"]: r["duplicate_of"] for r in find_duplicates(table, k=8).to_pylist()}
    assert dups == {"marked": "clean", "small": "clean"}


def test_a_combined_watermark_decision_needs_its_classifier():
    from curation.engine import ConfigError

    with pytest.raises(ConfigError, match="combine: any needs classifier.model"):
        curate_stage("watermark", combine="any", classifier={"model": None})


@pytest.mark.parametrize("threshold,reason", [(0.74, "nsfw"), (0.76, None)])
def test_transformers_nsfw_backend(tmp_path, threshold, reason):
    _tiny_classifier(tmp_path / "nsfw", ["normal", "nsfw"])
    rows = [row_of(samples.astronaut(), "a")]
    run_stage(curate_stage("nsfw", backend="transformers", model=str(tmp_path / "nsfw"), threshold=threshold), rows)
    assert (rows[0]["reason"], round(rows[0]["nsfw"], 4)) == (reason, 0.75)


def test_a_stage_that_rejects_for_an_undeclared_reason_is_a_bug_not_a_new_reason():
    """A stage's `reasons` are what the stats and the report's funnel count: an undeclared one
    fails the batch loudly; declared reasons and the stage's own `<name>_error` pass."""
    from curation.engine import reject
    from curation.engine import Stage, UndeclaredReason

    class Picky(Stage):
        name, reasons, stateful = "picky", ("too_red",), False

        def process(self, rows):
            for r in rows:
                if r["path"] == "boom":
                    raise ValueError("cannot read")
                reject(r, r["path"])

    rows = [{**empty_row(), "id": p, "path": p, "status": ALIVE} for p in ("too_red", "boom")]
    run_stage(Picky(), rows)
    assert [(r["status"], r["reason"]) for r in rows] == [("rejected", "too_red"), ("quarantined", "picky_error")]
    with pytest.raises(UndeclaredReason, match="too_blue"):
        run_stage(Picky(), [{**empty_row(), "id": "b", "path": "too_blue", "status": ALIVE}])
