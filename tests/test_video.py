"""`sapiens-hf predict` on videos, with the tiny pose and segmentation models and a 12-frame video of two "people"
(white rectangles moving apart) found by a stand-in detector: the H.264 visualisation, --frame-stride, track ids,
--smooth, the progress bar, and a run killed mid-video that resumes to the outputs of an uninterrupted one."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import rectangles_detector, two_people_video

from sapiens_hf.batch.engine import Interrupted
from sapiens_hf.batch.writers import FileWriter
from sapiens_hf.cli import main
from sapiens_hf.pipelines import SapiensPosePipeline
from sapiens_hf.tracking import PersonTracker, Smoothing
from sapiens_hf.visualization import draw_keypoints


FRAMES, FPS = 12, 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return two_people_video(tmp_path_factory.mktemp("video") / "clip.mp4", FRAMES, fps=FPS)


@pytest.fixture
def detector(monkeypatch):
    """`--detector rectangles` finds the rectangles (`helpers.rectangles_detector`)."""
    monkeypatch.setattr(SapiensPosePipeline, "_resolve_detector", lambda self, name, *args: rectangles_detector)


def pose(model, clip, output, *options) -> list[str]:
    return ["predict", "--task", "pose", "--model", model, str(clip), "--output", str(output), "--detector",
            "rectangles", "--quiet", *options]


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def people_by_frame(output: Path) -> dict[int, list[dict]]:
    coco = json.loads((output / "keypoints.json").read_text())
    frames = {image["id"]: image["frame"] for image in coco["images"]}
    people = {}
    for annotation in coco["annotations"]:
        people.setdefault(frames[annotation["image_id"]], []).append(annotation)
    return people


def test_the_visualisation_is_h264_that_browsers_play(tiny_model, tmp_path, detector):
    """Odd-sized input: H.264 High in MP4, yuv420p, padded to an even size, the moov atom before the media data
    (playable while it downloads), every frame at the input's frame rate."""
    clip = two_people_video(tmp_path / "odd.mkv", frames=5, size=(65, 49), fps=FPS, codec="ffv1")
    assert main(pose(tiny_model("pose"), clip, tmp_path / "out")) == 0
    path = tmp_path / "out" / "odd_pose_vis.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.codec_context.width, stream.codec_context.height) == (66, 50)
        assert stream.average_rate == FPS and container.format.name.startswith("mov,mp4")
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")
    frames = video_frames(path)
    assert len(frames) == 5 and frames[0].shape == (50, 66, 3)
    assert not (tmp_path / "out" / ".sapiens-hf").exists()  # the segments are gone once joined


def test_track_ids_follow_two_people_moving_apart(tiny_model, clip, tmp_path, detector):
    assert main(pose(tiny_model("pose"), clip, tmp_path / "out")) == 0
    people = people_by_frame(tmp_path / "out")
    assert sorted(people) == list(range(FRAMES))
    # The detector lists the people in another order every other frame: the ids follow the people, not the order.
    assert {people[frame][0]["bbox"][0] < people[frame][1]["bbox"][0] for frame in people} == {True, False}
    left = {min(people[frame], key=lambda a: a["bbox"][0])["track_id"] for frame in people}
    right = {max(people[frame], key=lambda a: a["bbox"][0])["track_id"] for frame in people}
    assert len(left) == len(right) == 1 and left != right and None not in left | right


def test_the_visualisation_shows_the_track_id():
    image = np.zeros((96, 96, 3), np.uint8)
    person = {"keypoints": torch.full((17, 2), 48.0), "scores": torch.zeros(17),
              "bbox_xywh": torch.tensor([20.0, 20.0, 50.0, 60.0])}
    plain = np.asarray(draw_keypoints(image, [person]))
    labelled = np.asarray(draw_keypoints(image, [{**person, "track_id": 7}]))
    changed = np.argwhere((plain != labelled).any(axis=-1))
    assert len(changed) and (changed >= 20).all() and (changed[:, 0] < 50).all()  # inside the box, at its top


def test_overwrite_with_another_stride_leaves_no_frame_of_the_earlier_run(tiny_model, clip, tmp_path, capsys):
    """--overwrite starts afresh: after a run of every frame, one of every 5th leaves frames 0, 5, 10 only (not the
    earlier run's others beside them); files not named as a frame's are kept."""
    output = tmp_path / "out"
    arguments = ["predict", "--task", "seg", "--model", tiny_model("seg"), str(clip), "--output", str(output), "--quiet"]
    assert main(arguments) == 0
    (output / "clip" / "notes.txt").write_text("mine")
    assert main(arguments + ["--frame-stride", "5", "--overwrite"]) == 0
    assert sorted(path.name for path in (output / "clip").iterdir()) == [
        "frame_000000_seg.png", "frame_000005_seg.png", "frame_000010_seg.png", "notes.txt"]


def test_an_image_named_like_a_frame_of_a_video_beside_it_is_refused(tiny_model, clip, tmp_path, capsys):
    """`clip/frame_000000.png` (frames extracted beside the video) and frame 0 of `clip.mp4` would write the same
    `clip/frame_000000_seg.png`: refused before any work, not one silently replaced by the other."""
    import shutil

    import PIL.Image

    (tmp_path / "in" / "clip").mkdir(parents=True)
    shutil.copy(clip, tmp_path / "in" / "clip.mp4")
    PIL.Image.new("RGB", (64, 48), "white").save(tmp_path / "in" / "clip" / "frame_000000.png")
    output = tmp_path / "out"
    assert main(["predict", "--task", "seg", "--model", tiny_model("seg"), str(tmp_path / "in"), "--output",
                 str(output), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "frame_000000.png and" in err and "clip.mp4 would both write" in err and "frame_000000_seg.png" in err
    assert not output.exists()


def test_frame_stride_and_the_progress_bar(tiny_model, clip, tmp_path, capsys):
    output = tmp_path / "out"
    arguments = ["predict", "--task", "seg", "--model", tiny_model("seg"), str(clip), "--output", str(output),
                 "--frame-stride", "5"]
    assert main(arguments) == 0
    captured = capsys.readouterr()
    assert "Wrote results for 3 image(s)/frame(s)" in captured.out
    assert "3/3" in captured.err and "frame" in captured.err  # the total (and with it the ETA) counts the stride
    assert sorted(path.name for path in (output / "clip").iterdir()) == [
        "frame_000000_seg.png", "frame_000005_seg.png", "frame_000010_seg.png"]
    with av.open(str(output / "clip_seg_vis.mp4")) as container:
        assert container.streams.video[0].average_rate == FPS / 5
    assert len(video_frames(output / "clip_seg_vis.mp4")) == 3

    assert main(arguments + ["--quiet", "--output", str(tmp_path / "quiet")]) == 0
    assert capsys.readouterr().err == ""


SIGNAL_AT_THE_SEVENTH_FRAME = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from helpers import rectangles_detector
from sapiens_hf.batch.writers import FileWriter
from sapiens_hf.cli import main
from sapiens_hf.pipelines import SapiensPosePipeline
SapiensPosePipeline._resolve_detector = lambda self, name, *args: rectangles_detector
FileWriter.segment_frames = 4
write, written = FileWriter.write, []
def write_then_signal(self, frame, result):
    if len(written) == 6:  # frames 0-5 written, 0-3 in a whole segment: stopped while writing frame 6
        os.kill(os.getpid(), signal.{signal})
    written.append(frame.index)
    return write(self, frame, result)
FileWriter.write = write_then_signal
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, clip, tmp_path_factory):
    """The outputs of an uninterrupted --smooth run, in segments of 4 frames."""
    output = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SapiensPosePipeline, "_resolve_detector", lambda self, name, *args: rectangles_detector)
        patch.setattr(FileWriter, "segment_frames", 4)
        assert main(pose(tiny_model("pose"), clip, output, "--smooth")) == 0
    return output


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT"])
def test_a_killed_video_resumes_as_if_never_stopped(signal_name, uninterrupted, tiny_model, clip, tmp_path,
                                                    detector, monkeypatch, capsys):
    """Killed while writing frame 6 (frames 0-3 in a whole segment), the same command predicts frames 4-11 only
    and ends with the outputs of the uninterrupted run: the same keypoints, smoothed the same, the same track ids,
    the same video frames, each frame once."""
    output = tmp_path / "out"
    arguments = pose(tiny_model("pose"), clip, output, "--smooth")
    script = SIGNAL_AT_THE_SEVENTH_FRAME.format(tests=str(Path(__file__).parent), signal=signal_name)
    result = subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True,
                            timeout=300, check=False)
    stopped = -signal.SIGKILL if signal_name == "SIGKILL" else 128 + signal.SIGINT
    assert result.returncode == stopped, result.stderr
    if signal_name == "SIGINT":
        assert sorted(people_by_frame(output)) == [0, 1, 2, 3]  # the frames of the whole segment

    monkeypatch.setattr(FileWriter, "segment_frames", 4)
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "Wrote results for 8 image(s)/frame(s)" in out
    assert "Resumed: went on with 1 video(s) after the 4 frame(s) that an earlier run finished" in out
    expected, resumed = people_by_frame(uninterrupted), people_by_frame(output)
    assert resumed == expected
    assert len({annotation["track_id"] for people in resumed.values() for annotation in people}) == 2
    assert [np.array_equal(a, b) for a, b in zip(video_frames(output / "clip_pose_vis.mp4"),
                                                 video_frames(uninterrupted / "clip_pose_vis.mp4"))] == [True] * FRAMES
    lines = [json.loads(line) for line in (output / "sapiens-hf-pose-progress.jsonl").read_text().splitlines()]
    recorded = [entry for line in lines for entry in line.get("records", [line["record"]] if "record" in line else [])]
    assert sorted(entry["frame"] for entry in recorded) == list(range(FRAMES))
    assert not (output / ".sapiens-hf").exists()


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_resumed_video_whose_segments_were_lost_is_predicted_again(tiny_model, tmp_path, detector, monkeypatch,
                                                                     capsys, damage):
    """The record says frames 0-3 are done, but the segment holding them was deleted or damaged since: the video is
    predicted again from its start (not joined without those frames, nor failing on the damaged file)."""
    video = two_people_video(tmp_path / "clip.mp4", FRAMES, fps=FPS)
    output = tmp_path / "out"
    arguments = pose(tiny_model("pose"), video, output)
    monkeypatch.setattr(FileWriter, "segment_frames", 4)
    with monkeypatch.context() as patch:
        interrupt_at_write(patch, 6)
        assert main(arguments) == 128 + signal.SIGINT
    [segment] = (output / ".sapiens-hf").rglob("000000-000003.mp4")
    if damage == "deleted":
        segment.unlink()
    else:
        segment.write_bytes(segment.read_bytes()[:300])
    assert main(arguments) == 0
    assert "Predicted again from the start 1 video(s) whose visualisation segments" in capsys.readouterr().out
    assert len(video_frames(output / "clip_pose_vis.mp4")) == FRAMES
    assert sorted(people_by_frame(output)) == list(range(FRAMES))


def interrupt_at_write(monkeypatch, count: int) -> None:
    write, written = FileWriter.write, []

    def write_then_interrupt(self, frame, result):
        if len(written) == count:
            raise Interrupted(signal.SIGINT)
        written.append(frame.index)
        return write(self, frame, result)

    monkeypatch.setattr(FileWriter, "write", write_then_interrupt)


def test_a_video_resumes_only_with_the_same_file_and_settings(tiny_model, clip, tmp_path, detector, monkeypatch,
                                                             capsys):
    video = two_people_video(tmp_path / "clip.mp4", FRAMES, fps=FPS)
    arguments = pose(tiny_model("pose"), video, tmp_path / "out")
    monkeypatch.setattr(FileWriter, "segment_frames", 4)
    for _ in range(2):  # frames 0-3, then 4-7 in whole segments; the second run goes on with the first's
        with monkeypatch.context() as patch:
            interrupt_at_write(patch, 6)
            assert main(arguments) == 128 + signal.SIGINT
    assert "went on with 1 video(s) after the 4 frame(s)" in capsys.readouterr().out
    for options, difference in ((["--frame-stride", "2"], "frame_stride: 1 then, 2 now"),
                                (["--smooth"], "smooth: None then, {"),
                                (["--smooth", "--smooth-beta", "0.5"], "'beta': 0.5")):
        assert main(arguments + options) == 2
        error = capsys.readouterr().err  # what differs, not the whole record
        assert "records a run with other settings (" in error and difference in error and "model_files" not in error
    with monkeypatch.context() as patch:  # a third run goes on after the second's frames (the record rewritten twice)
        interrupt_at_write(patch, 0)
        assert main(arguments) == 128 + signal.SIGINT
    assert "went on with 1 video(s) after the 8 frame(s)" in capsys.readouterr().out
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))  # changed since: not resumed
    assert main(arguments) == 0
    assert f"Wrote results for {FRAMES} image(s)/frame(s)" in capsys.readouterr().out
    assert sorted(people_by_frame(tmp_path / "out")) == list(range(FRAMES))


@pytest.mark.parametrize("options, message", [
    (["--frame-stride", "0"], "--frame-stride must be at least 1"),
    (["--task", "seg", "--smooth"], "--smooth applies to --task pose"),
    (["--smooth-beta", "0.1"], "--smooth-beta sets the filter of --smooth: add --smooth"),
    (["--smooth", "--smooth-min-cutoff", "nan"], "--smooth-min-cutoff must be a finite number above 0, got nan"),
    (["--smooth", "--smooth-beta", "-1"], "--smooth-beta must be a finite number 0 or more, got -1.0"),
])
def test_bad_video_options_are_refused_before_any_work(options, message, clip, tmp_path, capsys):
    arguments = ["predict", "--task", "pose", str(clip), "--output", str(tmp_path / "out")]
    assert main(arguments + options) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_one_euro_smoothing_removes_jitter_and_follows_moves():
    """A still person's jittering keypoints come out steadier; a moving one's follow it (beta), and replaying the
    same frames into a new tracker gives the same ids and points (what a resumed run relies on)."""
    generator = np.random.default_rng(0)
    box, fps = [[10.0, 10.0, 20.0, 40.0]], 30.0
    still = 50.0 + generator.normal(0, 2.0, size=(60, 1, 17, 2))
    trackers = [PersonTracker(fps, Smoothing()) for _ in range(2)]
    outputs = [[tracker.update(box, [0.9], index / fps, still[index]) for index in range(60)] for tracker in trackers]
    smoothed = np.stack([points for _, points in outputs[0]])
    assert smoothed[20:].std() < still[20:].std() / 2  # about a third at 1 Hz and 30 fps
    assert [ids for ids, _ in outputs[0]] == [[1]] * 60
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(*outputs))

    tracker, moving = PersonTracker(fps, Smoothing()), 100.0 * np.arange(60) / fps  # 100 px/s
    lag = [moving[index] - tracker.update(box, [0.9], index / fps, np.full((1, 17, 2), moving[index]))[1][0, 0, 0]
           for index in range(60)]
    assert 0 < lag[-1] < 10 and not math.isnan(lag[-1])


def test_a_tracks_filters_are_dropped_once_it_cannot_come_back():
    tracker, box = PersonTracker(30.0, Smoothing()), [[10.0, 10.0, 20.0, 40.0]]
    for index in range(3):
        tracker.update(box, [0.9], index / 30, np.full((1, 17, 2), 20.0))
    assert list(tracker.filters) == [1]
    for index in range(3, 3 + tracker.tracker.max_time_lost):
        tracker.update(np.zeros((0, 4)), [], index / 30, np.zeros((0, 17, 2)))
    assert list(tracker.filters) == [1]  # ByteTrack may still find the person again
    tracker.update(np.zeros((0, 4)), [], 1.0, np.zeros((0, 17, 2)))
    assert tracker.filters == {} and tracker.seen == {}


def test_a_segment_is_recorded_whole_or_not_at_all(tmp_path):
    """The frames of a segment are one entry of the record: a run stopped while writing it keeps none of them (their
    segment is removed and they are predicted again), never some."""
    from sapiens_hf.batch.writers import ProgressFile
    from sapiens_hf.tasks import TASKS

    record = ProgressFile(tmp_path, TASKS["pose"], {"frame_stride": 1})
    record.current = {"clip": ["clip.mp4", 1, 2]}
    record.open()
    record.start("clip")
    record.add_all("clip", [{"frame": index} for index in range(4)])
    record.add_all("clip", [{"frame": index} for index in range(4, 8)])
    record.close()
    text = record.path.read_text()
    record.path.write_text(text[: len(text) - 20])  # stopped while the second segment's line was written

    resumed = ProgressFile(tmp_path, TASKS["pose"], {"frame_stride": 1})
    resumed.current = {"clip": ["clip.mp4", 1, 2]}
    assert resumed.load() is None
    assert resumed.frames_done("clip") == {0, 1, 2, 3}
    resumed.current = {"clip": ["clip.mp4", 1, 3]}  # the file changed since: started again
    assert resumed.frames_done("clip") == set()


def test_a_rewritten_record_keeps_the_file_each_input_was_read_from(tmp_path):
    """Each resumed run rewrites the record; the inputs' file identities stay in it, so that a third run still skips
    the photos and goes on with the videos of the first (not "changed": predicted again)."""
    from sapiens_hf.batch.writers import ProgressFile
    from sapiens_hf.tasks import TASKS

    identities = {"photo": ["photo.jpg", 1, 2], "clip": ["clip.mp4", 3, 4]}
    record = ProgressFile(tmp_path, TASKS["segmentation"], {})
    record.current = identities
    record.open()
    for unit in identities:
        record.start(unit)
    record.add("photo", {})
    record.finish("photo", {})
    record.add_all("clip", [{"frame": 0}])
    record.close()
    for _ in range(2):  # two resumed runs, each rewriting the record
        record = ProgressFile(tmp_path, TASKS["segmentation"], {})
        record.current = identities
        assert record.load() is None
        assert record.forget_changed() == [] and record.done == {"photo"} and record.frames_done("clip") == {0}
        record.open()
        record.close()
