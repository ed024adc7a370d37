"""Miniature replicas of each dataset's on-disk layout, built from real photos."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import samples


def _photo(i: int, size=(320, 384)):
    """A distinct real-photo crop per index (so dedup keeps them apart)."""
    base = [samples.astronaut(), samples.grace_hopper(), samples.group()][i % 3]
    w, h = base.size
    x, y = (i * 37) % max(1, w - 200), (i * 23) % max(1, h - 200)
    return base.crop((x, y, min(w, x + 300), min(h, y + 300))).resize(size)


def _write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_clip(path: Path, frames: int = 30, size=(320, 256)):
    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    base = np.asarray(samples.astronaut().resize((size[0] + frames, size[1])))[:, :, ::-1]
    for t in range(frames):
        vw.write(np.ascontiguousarray(base[:, t:t + size[0]]))
    vw.release()


def vggface2(root: Path):
    for split, ids in (("train", ["n000002", "n000003"]), ("test", ["n009000"])):
        for k, ident in enumerate(ids):
            for j in range(2):
                _write(root / split / ident / f"000{j}_01.jpg", samples.jpeg_bytes(_photo(k * 2 + j)))
    (root / "identity_meta.csv").write_text(
        'Class_ID, Name, Sample_Num, Flag, Gender\nn000002, "A_Person", 2, 1, f\n'
        'n000003, "B_Person", 2, 1, m\nn009000, "C_Person", 2, 0, m\n')


def millioncelebs(root: Path):
    for k, ident in enumerate(["m.0abc1", "m.0xyz9"]):
        for j in range(2):
            _write(root / "part1" / ident / f"{j}.jpg", samples.jpeg_bytes(_photo(k + j)))


def celeba(root: Path):
    names = ["000001.jpg", "000002.jpg", "000003.jpg"]
    for i, n in enumerate(names):
        _write(root / "img_celeba" / n, samples.jpeg_bytes(_photo(i)))
    (root / "Anno").mkdir(parents=True)
    (root / "Anno" / "identity_CelebA.txt").write_text("000001.jpg 2880\n000002.jpg 2937\n000003.jpg 2880\n")
    attrs = ["Male", "Smiling", "Young", "Eyeglasses", "Wavy_Hair", "Black_Hair", "No_Beard"]
    rows = ["000001.jpg -1 1 1 -1 1 1 1", "000002.jpg 1 -1 -1 1 -1 -1 -1", "000003.jpg -1 -1 1 -1 -1 -1 1"]
    (root / "Anno" / "list_attr_celeba.txt").write_text(f"3\n{' '.join(attrs)}\n" + "\n".join(rows) + "\n")


def celebv_hq(root: Path):
    write_clip(root / "processed" / "0-5BrmyFsYM_0.mp4", frames=30)
    write_clip(root / "processed" / "00-30GQl0TM_7.mp4", frames=10)
    (root / "celebvhq_info.json").write_text('{"clips": {}}')


def ffhq(root: Path):
    for i in range(3):
        _write(root / "images1024x1024" / "00000" / f"{i:05d}.png", samples.png_bytes(_photo(i)))
    _write(root / "thumbnails128x128" / "00000" / "00000.png", samples.png_bytes(_photo(0, (128, 128))))


def vfhq(root: Path):
    clip = root / "Clip+G0DGRma_p48+P0+C0+F11208-11383"
    for t in range(12):
        _write(clip / f"{t:08d}.png", samples.png_bytes(_photo(t % 3)))


def easyportrait(root: Path):
    ids = ["de81cc1c-1", "3c0cec5a-2", "d17ca986-3"]
    for split, a in zip(("train", "val", "test"), ids):
        _write(root / "images" / split / f"{a}.jpg", samples.jpeg_bytes(_photo(len(a))))
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "meta.csv").write_text(
        "attachment_id,user_id,data_hash,width,height,brightness,train,test,valid\n"
        f"{ids[0]},1b11,e8f,1440,1920,136,True,False,False\n{ids[1]},6422,df5,1440,1920,148,False,False,True\n"
        f"{ids[2]},1b11,a69,1920,1080,140,False,True,False\n")


def celebv_text(root: Path):
    write_clip(root / "videos" / "celebvtext_6" / "-0ybdAQvYvM_1.mp4", frames=20)
    for cat, text in (("face40_details_new", "A young woman with dark hair.\nShe wears a white suit."),
                      ("emotion", "She looks calm.")):
        _write(root / "texts" / cat / "-0ybdAQvYvM_1.txt", text.encode())


def cosmicmanhq(root: Path):
    for i in range(2):
        _write(root / "images" / f"{i:08d}.jpg", samples.jpeg_bytes(_photo(i + 1)))
    (root / "label").mkdir(parents=True)
    pq.write_table(pa.table({"img_path": ["images/00000000.jpg", "images/00000001.jpg", "images/missing.jpg"],
                             "caption": ["a woman in a white space suit", "a man in a suit", "lost"]}),
                   root / "label" / "part-0.parquet")


def folder(root: Path):
    _write(root / "a" / "one.jpg", samples.jpeg_bytes(_photo(0)))
    (root / "a" / "one.txt").write_text("a portrait of a woman\n")
    _write(root / "b" / "two.png", samples.png_bytes(_photo(1)))
    (root / "b" / "notes.md").write_text("not an image")


BUILDERS = {"vggface2": vggface2, "millioncelebs": millioncelebs, "celeba": celeba, "celebv_hq": celebv_hq,
            "ffhq": ffhq, "vfhq": vfhq, "easyportrait": easyportrait, "celebv_text": celebv_text,
            "cosmicmanhq": cosmicmanhq, "folder": folder}
