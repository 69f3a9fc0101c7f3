"""Image decoding, the decode-once cache, the albumentations pipelines and the Dataset."""
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

import multitask.data.cache as cache_module
import multitask.data.faces as faces_module
from multitask.config import DataConfig
from multitask.data.cache import ImageCache
from multitask.data.dataset import MultiTaskDataset
from multitask.data.images import BadImageError, jpeg_size, read_image, resize
from multitask.data.transforms import build_transforms


def _gradient(h=12, w=10):
    """Distinct values per row, column and channel, so flips and channel swaps are visible."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y * 20, x * 25, np.full_like(y, 200)], axis=-1).astype(np.uint8)


def _write(path, image):
    assert cv2.imwrite(str(path), image)
    return str(path)


# ------------------------------------------------------------------------------------------------ read_image
def test_colour_png_comes_back_as_rgb(tmp_path):
    rgb = _gradient()
    path = _write(tmp_path / "c.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_image(path), rgb)


@pytest.mark.parametrize("name, pixels, expected", [
    ("gray.png", np.full((6, 5), 77, np.uint8), (77, 77, 77)),
    ("rgba.png", np.dstack([np.full((6, 5, 3), (10, 20, 30), np.uint8), np.full((6, 5), 128, np.uint8)]),
     (30, 20, 10)),  # written as BGRA: comes back RGB, alpha dropped
    ("deep.png", np.full((6, 5, 3), 0x8123, np.uint16), (0x81, 0x81, 0x81)),
])
def test_gray_alpha_and_16_bit_become_rgb_uint8(tmp_path, name, pixels, expected):
    image = read_image(_write(tmp_path / name, pixels))
    assert image.shape == (6, 5, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == expected


def test_bad_files_raise_with_the_file_name(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg.tobytes()[: len(jpeg) * 2 // 3])
    ok, png = cv2.imencode(".png", _gradient(32, 32))
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.tobytes()[:-12])
    cases = {empty: "empty", text: "not a decodable image", cut: "truncated JPEG", cut_png: "truncated PNG",
             tmp_path / "missing.jpg": "not found"}
    for path, cause in cases.items():
        with pytest.raises(BadImageError) as err:
            read_image(path)
        assert path.name in str(err.value) and cause in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(jpeg.tobytes() + b"\x00" * 16)  # trailing padding after EOI is fine
    assert read_image(whole).shape == (64, 48, 3)


def test_resize_picks_size_and_skips_same_size():
    image = _gradient(40, 30)
    assert resize(image, 20, 15).shape == (20, 15, 3)
    assert resize(image, 80, 60).shape == (80, 60, 3)
    assert resize(image, 40, 30) is image


def _photo(h=512, w=384):
    """A smooth photo-like RGB picture with some texture, so a scaled decode has something to get wrong."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(x / 23), 128 + 100 * np.cos(y / 31), (x + y) % 256 * 0.5 + 60], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _exif_rotated(jpeg: bytes) -> bytes:
    """The JPEG with an EXIF APP1 segment saying 'rotate 90 degrees' (orientation 6) right after SOI."""
    orientation = b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"   # tag 0x0112, SHORT, count 1, value 6
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + orientation + b"\x00" * 4
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


@pytest.mark.parametrize("at_least, decoded", [((96, 72), (128, 96)), ((130, 72), (256, 192)),
                                               ((256, 192), (256, 192)), ((224, 224), (512, 384)),
                                               ((64, 48), (64, 48)), ((40, 30), (64, 48))])
def test_jpeg_decodes_at_the_coarsest_scale_that_covers_the_size(tmp_path, at_least, decoded):
    path = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(_photo(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert jpeg_size(path.read_bytes()) == (512, 384)
    full = read_image(path)
    scaled = read_image(path, at_least=at_least)
    assert scaled.shape == (*decoded, 3) and scaled.dtype == np.uint8
    # after the shrink both paths agree to within JPEG noise: same picture, same channel order
    a = resize(full, *at_least).astype(int)
    b = resize(scaled, *at_least).astype(int)
    assert np.abs(a - b).mean() < 2.0, np.abs(a - b).mean()


def test_scaled_decode_ignores_exif_orientation_like_the_full_decode(tmp_path):
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(_photo(), cv2.COLOR_RGB2BGR))
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_exif_rotated(jpeg.tobytes()))
    assert jpeg_size(path.read_bytes()) == (512, 384)                    # found past the APP1 segment
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_REDUCED_COLOR_4).shape[:2] == (96, 128)  # rotated
    assert read_image(path).shape[:2] == (512, 384)
    assert read_image(path, at_least=(96, 72)).shape[:2] == (128, 96)   # upright, as the full decode


def test_at_least_leaves_pngs_and_odd_jpegs_to_the_full_decode(tmp_path):
    png = _write(tmp_path / "a.png", _gradient(40, 30))
    assert read_image(png, at_least=(10, 8)).shape == (40, 30, 3)
    assert jpeg_size(b"\xff\xd8\xff\xda" + b"\x00" * 20) is None        # a scan before any frame header
    assert jpeg_size(b"\xff\xd8\x00\x00" + b"\x00" * 20) is None        # not a marker where one must be


# ------------------------------------------------------------------------------------------------ cache
@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    return [_write(folder / f"{i}.png", np.full((24, 18, 3), 10 * i, np.uint8)) for i in range(5)]


def test_cache_decodes_once_then_reuses(tmp_path, images, monkeypatch):
    seen = []
    cache = ImageCache.build(images, height=16, width=12, cache_dir=tmp_path / "c", workers=2,
                             progress=lambda done, total: seen.append((done, total)))
    assert len(cache) == 5 and not cache.reused and cache.valid.all()
    assert cache[3].shape == (16, 12, 3) and cache[3].dtype == np.uint8 and (cache[3] == 30).all()
    assert seen[-1] == (5, 5)
    assert sorted(p.suffix for p in (tmp_path / "c").iterdir()) == [".json", ".u8"]  # no temp files left

    def no_decoding(path, **_):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(faces_module, "read_image", no_decoding)   # where the cache build decodes (read_pixels)
    again = ImageCache.build(images, height=16, width=12, cache_dir=tmp_path / "c")
    assert again.reused and again.file == cache.file
    assert np.array_equal(again[4], cache[4])
    # a different size is a different cache: it must decode (and here, fail loudly)
    with pytest.raises(AssertionError, match="decoded"):
        ImageCache.build(images, height=8, width=6, cache_dir=tmp_path / "c")


def test_touching_a_file_changes_the_key(images):
    before = cache_module.cache_key(images, height=16, width=12)
    st = os.stat(images[2])
    os.utime(images[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache_module.cache_key(images, height=16, width=12) != before
    assert cache_module.cache_key(images, height=16, width=12) != cache_module.cache_key(images, height=12, width=16)


def test_incomplete_cache_is_rebuilt(tmp_path, images):
    cache = ImageCache.build(images, height=16, width=12, cache_dir=tmp_path / "c")
    with open(cache.file, "r+b") as f:  # simulate a half-written file under the final name
        f.truncate(100)
    again = ImageCache.build(images, height=16, width=12, cache_dir=tmp_path / "c")
    assert not again.reused and (again[4] == 40).all()


def test_bad_image_error_or_skip(tmp_path, images):
    bad = tmp_path / "img" / "bad.jpg"
    bad.write_text("nope")
    paths = images[:2] + [str(bad)] + images[2:]
    with pytest.raises(BadImageError, match="bad.jpg"):
        ImageCache.build(paths, height=16, width=12, cache_dir=tmp_path / "c")
    assert not any(p.suffix == ".u8" for p in (tmp_path / "c").iterdir())  # nothing half-built left to reuse
    cache = ImageCache.build(paths, height=16, width=12, cache_dir=tmp_path / "c", on_bad_image="skip")
    assert list(cache.valid) == [True, True, False, True, True, True]
    assert len(cache.bad) == 1 and cache.bad[0][0] == str(bad) and "not a decodable" in cache.bad[0][1]
    good = cache.subset(np.flatnonzero(cache.valid))
    assert len(good) == 5 and good.valid.all() and (good[2] == 20).all() and good.paths[2] == images[2]
    # the same files under 'error' must not silently reuse the skipped cache
    with pytest.raises(BadImageError, match="bad.jpg"):
        ImageCache.build(paths, height=16, width=12, cache_dir=tmp_path / "c", on_bad_image="error")


def test_pickle_round_trip_is_small_and_reopens(tmp_path, images):
    cache = ImageCache.build(images, height=16, width=12, cache_dir=tmp_path / "c").subset([4, 1])
    _ = cache[0]  # map opened in this process
    blob = pickle.dumps(cache)
    assert len(blob) < 2000 and b"img/0.png" not in blob
    copy = pickle.loads(blob)
    assert copy._array is None and len(copy) == 2
    assert (copy[0] == 40).all() and (copy[1] == 10).all()
    assert not copy[0].flags.writeable


# ------------------------------------------------------------------------------------------------ transforms
def test_train_pipeline_shape_and_dtype():
    cfg = DataConfig(image_size=[32, 24])
    aug = cfg.augment
    aug.random_resized_crop, aug.shift_scale_rotate, aug.color_jitter, aug.coarse_dropout = True, 1.0, 1.0, 1.0
    train = build_transforms(cfg, train=True)
    image = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    for _ in range(3):
        out = train(image=image)["image"]
        assert out.shape == (32, 24, 3) and out.dtype == np.uint8
    val = build_transforms(cfg, train=False)
    assert val(image=image)["image"].shape == (32, 24, 3)
    assert [type(t).__name__ for t in val.transforms] == ["Resize"]


def test_hflip_flips_and_same_size_resize_is_identity():
    cfg = DataConfig(image_size=[12, 10])
    cfg.augment.hflip = 1.0
    image = _gradient(12, 10)
    assert np.array_equal(build_transforms(cfg, train=True)(image=image)["image"], image[:, ::-1])
    assert np.array_equal(build_transforms(cfg, train=False)(image=image)["image"], image)


# ------------------------------------------------------------------------------------------------ dataset
def test_dataset_items_with_and_without_cache(tmp_path, images):
    labels = {"mask": np.array([0, 1, 2, -1, 0]), "age": np.array([2, -1, 0, 1, 1])}
    cache = ImageCache.build(images, height=16, width=12, cache_dir=tmp_path / "c")
    plain = MultiTaskDataset(paths=images, labels=labels, height=16, width=12)
    cached = MultiTaskDataset(paths=images, labels=labels, height=16, width=12, cache=cache,
                              transform=build_transforms(DataConfig(image_size=[16, 12]), train=False))
    assert len(plain) == len(cached) == 5 and plain.labels["age"][1] == -1
    for ds in (plain, cached):
        image, target = ds[3]
        assert image.shape == (3, 16, 12) and image.dtype == torch.uint8 and (image == 30).all()
        assert set(target) == {"mask", "age"} and target["mask"].dtype == torch.long
        assert target["mask"].item() == -1 and target["age"].item() == 1
    # a real worker process: the cache travels pickled and reopens its map there
    loader = torch.utils.data.DataLoader(cached, batch_size=2, num_workers=1)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert batches[0][0].shape == (2, 3, 16, 12) and batches[0][1]["mask"].tolist() == [0, 1]
    assert batches[2][0].float().mean().item() == 40


def test_dataset_refuses_skipped_rows_and_wrong_lengths(tmp_path, images):
    bad = tmp_path / "img" / "bad.jpg"
    bad.write_bytes(b"")
    cache = ImageCache.build(images + [str(bad)], height=16, width=12, cache_dir=tmp_path / "c",
                             on_bad_image="skip")
    ds = MultiTaskDataset(paths=images + [str(bad)], labels={"mask": np.arange(6) % 3}, height=16, width=12,
                          cache=cache)
    assert ds[4][1]["mask"].item() == 1  # valid rows serve as usual
    with pytest.raises(ValueError, match="row 5 .*bad.jpg.* cache.valid"):
        ds[5]
    with pytest.raises(AssertionError, match="labels"):
        MultiTaskDataset(paths=images, labels={"mask": np.zeros(3)}, height=16, width=12)


def test_every_augment_accepts_read_only_cache_rows(tmp_path, images):
    cache = ImageCache.build(images, height=16, width=12, cache_dir=tmp_path / "c")
    cfg = DataConfig(image_size=[16, 12])
    aug = cfg.augment
    aug.hflip = aug.shift_scale_rotate = aug.color_jitter = aug.coarse_dropout = 1.0
    aug.random_resized_crop = True
    ds = MultiTaskDataset(paths=images, labels={}, height=16, width=12, cache=cache,
                          transform=build_transforms(cfg, train=True))
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 16, 12) and image.dtype == torch.uint8 and target == {}
    assert (cache[4] == 40).all()  # the cache itself is never written through
