"""Seek-decoding frames from real mp4s (AV1, H.264, HEVC), and what the model is sent."""

from __future__ import annotations

import dataclasses
import io
import logging
import re

import av
import numpy as np
import pytest
from PIL import Image
from synth import read_frame_code

from episcribe.errors import DatasetError
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.frames import (
    burn_label,
    contact_sheet,
    decode_frames,
    encode_jpeg,
    jpeg_data_url,
)

G1_CAM = "observation.images.cam_high"


def sequential_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("codec", ["h264", "hevc", "av1"])
def test_decoded_frame_is_the_frame_at_each_timestamp(codec, make_synth):
    # Each synthetic frame carries (episode, frame index) in a code strip.
    root = make_synth(codec=codec, episodes=3, episodes_per_file=3, seconds=3.0, cameras=("cam",))
    ds = LeRobotDataset.open(root)
    for i in ds.episode_indices():
        ep = ds.load_episode(i)
        wanted = [0, 29, 7, 8, 21, 15]
        images = decode_frames(ep.info.videos["cam"], [ep.timestamps[k] for k in wanted])
        assert [read_frame_code(im) for im in images] == [(i, k) for k in wanted]


def test_g1_av1_frames_equal_a_full_sequential_decode(g1_source):
    ds = LeRobotDataset.open(g1_source)
    ep = ds.load_episode(1)  # starts 13.1 s into file-000.mp4
    seg = ep.info.videos[G1_CAM]
    reference = sequential_frames(seg.path)
    offset = round(seg.from_timestamp * ds.fps)
    wanted = [0, 1, 45, 170, 171, 342]
    images = decode_frames(seg, [ep.timestamps[k] for k in wanted])
    for k, image in zip(wanted, images, strict=True):
        assert image.mode == "RGB" and image.size == (640, 480)
        assert np.array_equal(np.asarray(image), reference[offset + k]), f"frame {k}"


def test_order_and_duplicates_are_preserved(synth_small):
    ds = LeRobotDataset.open(synth_small)
    ep = ds.load_episode(2)
    wanted = [30, 3, 30, 3, 12]
    images = decode_frames(ep.info.videos["observation.images.wrist"], ep.timestamps[wanted])
    assert [read_frame_code(im)[1] for im in images] == wanted
    assert images[0] is not images[2]  # duplicates are independent images
    images[0].paste((0, 0, 0), (0, 0, 10, 10))
    assert images[2].getpixel((0, 0)) != (0, 0, 0)


def test_empty_request_decodes_nothing(synth_small):
    seg = LeRobotDataset.open(synth_small).episode_info(0).videos["observation.images.top"]
    assert decode_frames(seg, []) == []


def test_episode_deep_in_the_file_is_reached_by_seeking(make_synth, caplog):
    # 8 episodes of 3 s at 10 fps in one file; GOP = 20 frames.
    root = make_synth(episodes=8, episodes_per_file=8, seconds=3.0, cameras=("cam",))
    ds = LeRobotDataset.open(root)
    ep = ds.load_episode(7)
    with caplog.at_level(logging.DEBUG, logger="episcribe.lerobot.frames"):
        images = decode_frames(ep.info.videos["cam"], [ep.timestamps[25]])
    assert read_frame_code(images[0]) == (7, 25)
    counts = [int(m) for m in re.findall(r"decoded (\d+) frames", caplog.text)]
    assert counts and counts[0] <= 21, caplog.text  # at most one GOP, not 235 frames


def test_one_hz_ticks_skip_the_second_half_of_every_gop(make_synth, caplog):
    # 1 Hz ticks in 30 fps video with a keyframe every 2 s (the synthetic GOP): every other
    # tick sits on a keyframe, so the decoder seeks to it instead of decoding the half GOP
    # before it. Episode 1 starts 10 s into the file, on a keyframe.
    root = make_synth(episodes=2, episodes_per_file=2, seconds=10.0, fps=30, cameras=("cam",))
    ep = LeRobotDataset.open(root).load_episode(1)
    wanted = list(range(0, 300, 30)) + [299]
    with caplog.at_level(logging.DEBUG, logger="episcribe.lerobot.frames"):
        images = decode_frames(ep.info.videos["cam"], [ep.timestamps[k] for k in wanted])
    assert [read_frame_code(im) for im in images] == [(1, k) for k in wanted]
    counts = [int(m) for m in re.findall(r"decoded (\d+) frames", caplog.text)]
    assert counts and counts[0] <= 215, caplog.text  # 213, not all 300 (nor 360 from 8 s)


def test_timestamp_beyond_the_end_of_the_file_names_file_camera_and_time(synth_small):
    ds = LeRobotDataset.open(synth_small)
    seg = ds.episode_info(5).videos["observation.images.top"]  # last episode of file-001
    with pytest.raises(DatasetError) as err:
        decode_frames(seg, [1.0, 9.5])
    msg = str(err.value)
    assert "file-001.mp4" in msg and "observation.images.top" in msg and "t=9.500s" in msg


def test_missing_video_file_is_a_dataset_error(synth_small, tmp_path):
    seg = LeRobotDataset.open(synth_small).episode_info(0).videos["observation.images.top"]
    gone = dataclasses.replace(seg, path=tmp_path / "gone.mp4")
    with pytest.raises(DatasetError, match=r"gone\.mp4.*observation\.images\.top.*t=0\.000s"):
        decode_frames(gone, [0.0])


def test_truncated_mp4_is_a_dataset_error(g1_copy):
    ds = LeRobotDataset.open(g1_copy)
    seg = ds.episode_info(1).videos[G1_CAM]
    data = seg.path.read_bytes()
    seg.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=rf"file-000\.mp4.*{G1_CAM}.*t=1\.000s"):
        decode_frames(seg, [1.0])


def test_truncated_faststart_mp4_is_a_dataset_error(synth_small, tmp_path):
    # With the index at the front the file still opens: the missing tail must be caught.
    seg = LeRobotDataset.open(synth_small).episode_info(2).videos["observation.images.top"]
    fast = tmp_path / "fast.mp4"
    with (
        av.open(str(seg.path)) as src,
        av.open(str(fast), "w", options={"movflags": "faststart"}) as dst,
    ):
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = fast.read_bytes()
    fast.write_bytes(data[: int(len(data) * 0.6)])
    truncated = dataclasses.replace(seg, path=fast)  # episode 2 spans 8-12 s of 16 s
    assert read_frame_code(decode_frames(truncated, [0.5])[0]) == (2, 5)
    with pytest.raises(DatasetError, match=r"fast\.mp4.*observation\.images\.top.*t=3\.500s"):
        decode_frames(truncated, [0.5, 3.5])


# -- what the model is sent ------------------------------------------------------------
def test_jpeg_is_bounded_deterministic_and_keeps_aspect():
    image = Image.new("RGB", (640, 480), (30, 120, 200))
    data = encode_jpeg(image, max_side=256, quality=80)
    assert data == encode_jpeg(image, max_side=256, quality=80)
    assert Image.open(io.BytesIO(data)).size == (256, 192)
    small = Image.new("RGB", (100, 50))
    assert Image.open(io.BytesIO(encode_jpeg(small, max_side=256))).size == (100, 50)
    url = jpeg_data_url(image, max_side=256)
    assert url.startswith("data:image/jpeg;base64,/9j/")


def test_burn_label_draws_a_dark_box_in_a_corner_of_a_copy():
    image = Image.new("RGB", (160, 120), (255, 255, 255))
    labelled = burn_label(image, "t=3.50s")
    assert image.getpixel((1, 1)) == (255, 255, 255)  # the input is untouched
    assert labelled.size == image.size
    corner = np.asarray(labelled)[:12, :40]
    assert (corner < 60).mean() > 0.5  # mostly dark box
    assert (corner > 200).any()  # with light text on it
    assert np.asarray(labelled)[60:, 80:].min() == 255  # elsewhere untouched


def test_contact_sheet_is_a_grid_of_labelled_tiles():
    images = [Image.new("RGB", (160, 120), (200, 200, 200)) for _ in range(5)]
    labels = [f"t={k:.2f}s" for k in range(5)]
    assert contact_sheet(images, labels, columns=3).size == (480, 240)
    assert contact_sheet(images, labels).size == (480, 240)  # ceil(sqrt(5)) columns
    assert contact_sheet(images[:1], labels[:1]).size == (160, 120)
    sheet = np.asarray(contact_sheet(images, labels, columns=5))
    assert sheet.shape == (120, 800, 3)
    for k in range(5):
        assert sheet[2, k * 160 + 2].max() < 60  # each tile has its label box
    with pytest.raises(ValueError):
        contact_sheet(images, labels[:2])
