from __future__ import annotations

import numpy as np
import pytest
import torch

from lightsr.errors import ConfigError, ImageError
from lightsr.imresize import imresize, mod_crop
from lightsr.io import read_rgb_uint8, write_image
from lightsr.train import data as data_module
from lightsr.train.data import ImagePair, PatchSampler, load_training_pairs, make_lr_pair

CPU = torch.device("cpu")


def block_pairs(rng, sizes, scale):
    """Pairs whose HR is the LR with every pixel repeated scale x scale times.

    For those, an aligned HR patch is exactly the LR patch repeated, whatever the
    flips/transposition, which makes alignment checkable bit for bit.
    """
    pairs = []
    for h, w in sizes:
        lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        hr = lr.repeat(scale, axis=0).repeat(scale, axis=1)
        pairs.append(ImagePair(f"{h}x{w}", hr, lr))
    return pairs


def make_sampler(pairs, scale=3, patch=5, seed=0, flip=True, rot90=True):
    return PatchSampler(pairs, scale, patch, flip, rot90, "area", CPU, seed)


def test_patches_are_aligned_and_shaped():
    rng = np.random.default_rng(0)
    sampler = make_sampler(block_pairs(rng, [(9, 12), (7, 7), (20, 6)], scale=3))
    lr, hr = sampler.sample(16)
    assert lr.shape == (16, 3, 5, 5) and hr.shape == (16, 3, 15, 15)
    assert lr.dtype == hr.dtype == torch.uint8
    torch.testing.assert_close(hr, lr.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3))


def test_augmentations_cover_the_eight_symmetries():
    rng = np.random.default_rng(1)
    pairs = block_pairs(rng, [(4, 4)], scale=2)  # patch == image: only augmentation varies
    sampler = make_sampler(pairs, scale=2, patch=4)
    lr, _ = sampler.sample(256)
    image = torch.from_numpy(pairs[0].lr).permute(2, 0, 1)
    symmetries = [
        torch.rot90(view, k, dims=(1, 2)) for view in (image, image.flip(2)) for k in range(4)
    ]
    seen = set()
    for patch in lr:
        matches = [i for i, s in enumerate(symmetries) if torch.equal(patch, s)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_no_augmentation_when_disabled():
    rng = np.random.default_rng(2)
    pairs = block_pairs(rng, [(4, 4)], scale=2)
    lr, _ = make_sampler(pairs, scale=2, patch=4, flip=False, rot90=False).sample(8)
    image = torch.from_numpy(pairs[0].lr).permute(2, 0, 1)
    assert all(torch.equal(patch, image) for patch in lr)


def test_data_order_depends_on_seed_not_on_process_count():
    rng = np.random.default_rng(3)
    pairs = block_pairs(rng, [(9, 12), (11, 8)], scale=2)
    whole = make_sampler(pairs, scale=2, seed=5).sample(6)
    halves = [
        make_sampler(pairs, scale=2, seed=5).sample(6, rank=r, world_size=2) for r in range(2)
    ]
    for k in range(2):
        assert torch.equal(whole[k], torch.cat([halves[0][k], halves[1][k]]))
    other = make_sampler(pairs, scale=2, seed=6).sample(6)
    assert not torch.equal(whole[0], other[0])


def test_generator_state_restores_the_data_order():
    rng = np.random.default_rng(4)
    sampler = make_sampler(block_pairs(rng, [(9, 12)], scale=2), scale=2)
    sampler.sample(4)
    state = sampler.generator.get_state()
    expected = sampler.sample(4)[0]
    sampler.generator.set_state(state)
    assert torch.equal(sampler.sample(4)[0], expected)


def test_images_smaller_than_the_patch_are_skipped():
    rng = np.random.default_rng(5)
    sampler = make_sampler(block_pairs(rng, [(4, 9), (6, 6)], scale=2), scale=2)
    assert sampler.num_images == 1 and sampler.skipped == 1
    with pytest.raises(ConfigError, match="large enough"):
        make_sampler(block_pairs(rng, [(4, 4)], scale=2), scale=2)


def test_pairs_must_match_the_scale():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="HR"):
        make_sampler(block_pairs(rng, [(9, 9)], scale=2), scale=3)


def test_lr_is_matlab_bicubic_and_cached(tmp_path, monkeypatch, tiny_data):
    hr_path = tiny_data / "train" / "img0.png"
    pair = make_lr_pair(hr_path, 2, tmp_path)
    hr = mod_crop(read_rgb_uint8(hr_path), 2)
    np.testing.assert_array_equal(pair.hr, hr)
    np.testing.assert_array_equal(pair.lr, imresize(hr, 0.5))
    assert len(list(tmp_path.glob("*_x2.npy"))) == 1

    def no_resize(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data_module, "imresize", no_resize)
    np.testing.assert_array_equal(make_lr_pair(hr_path, 2, tmp_path).lr, pair.lr)


def test_paired_folders_and_worker_processes(tmp_path, tiny_data):
    lr_dir = tmp_path / "lr"
    for path in sorted((tiny_data / "train").iterdir()):
        hr = mod_crop(read_rgb_uint8(path), 2)
        write_image(lr_dir / f"{path.stem}x2.png", imresize(hr, 0.5))
    hr_dirs = [str(tiny_data / "train")]
    paired = load_training_pairs(hr_dirs, [str(lr_dir)], 2, None, workers=1)
    made = load_training_pairs(hr_dirs, [], 2, tmp_path / "cache", workers=2)
    assert [p.name for p in paired] == [p.name for p in made] == ["img0", "img1", "img2", "img3"]
    for a, b in zip(paired, made, strict=True):
        np.testing.assert_array_equal(a.lr, b.lr)


def test_paired_folder_size_mismatch(tmp_path, tiny_data):
    lr_dir = tmp_path / "lr"
    for path in (tiny_data / "train").iterdir():
        write_image(lr_dir / path.name, np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ImageError, match="should be"):
        load_training_pairs([str(tiny_data / "train")], [str(lr_dir)], 2, None, workers=1)


def test_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="image folder not found"):
        load_training_pairs([str(tmp_path / "nope")], [], 2, None, workers=1)
