"""What lands in the output folder: a video only under its final name once complete, the frames
of a failed render kept, old frame folders and a crash's leftovers cleaned up."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from camfabric.protocol import encode_jpeg
from camfabric.subscribers.timelapse.frames import FrameFolder, clean_old
from camfabric.subscribers.timelapse.render import RenderError, render

from .conftest import rendered, taken, video_frames, wait_for


def frames(tmp_path, count: int, size=(160, 120)) -> list:
    folder = FrameFolder.create(tmp_path / ".frames", "print")
    rng = np.random.default_rng(1)
    for i in range(count):
        image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        folder.add(encode_jpeg(image, quality=90), {"seq": i})
    return folder.frames()


def test_a_video_appears_under_its_final_name_only_when_complete(tmp_path):
    paths = frames(tmp_path, 120, size=(320, 240))
    final = tmp_path / "out" / "timelapse_print.mp4"
    seen: list[int] = []
    done = threading.Event()

    def watch():
        while True:
            stopping = done.is_set()  # one more look after the render returned
            try:
                seen.append(final.stat().st_size)
            except FileNotFoundError:
                pass
            if stopping:
                return
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        video = render(paths, final, fps=30.0, duplicate_last_s=1.0)
    finally:
        done.set()
        watcher.join()
    size = final.stat().st_size
    assert seen and set(seen) == {size}  # whenever the name existed, it held the whole video
    assert video.frames == 150 == video_frames(final)
    assert sorted(p.name for p in final.parent.iterdir()) == ["timelapse_print.jpg", "timelapse_print.mp4"]


def test_no_frames_or_an_unwritable_target_is_a_render_error_that_leaves_nothing(tmp_path):
    with pytest.raises(RenderError, match="no frames"):
        render([], tmp_path / "a.mp4", fps=10)
    paths = frames(tmp_path, 3)
    (tmp_path / "b.mp4").mkdir()  # the final name is taken by a folder: the rename fails
    with pytest.raises(RenderError, match="b.mp4"):
        render(paths, tmp_path / "b.mp4", fps=10)
    assert not list(tmp_path.glob(".*partial*")) and len(paths) == 3 and all(p.exists() for p in paths)


def test_the_frames_of_a_failed_render_are_kept_and_the_error_is_in_the_status(node, moonraker,
                                                                                make_service):
    service = make_service(node.endpoint, moonraker.url)
    assert moonraker.wait_subscribed()
    moonraker.start_print("fails.gcode")
    moonraker.set_layer(1)
    moonraker.set_layer(2)
    wait_for(lambda: taken(service) == 1 or taken(service) == 2, what="a frame")
    blocker = service.frames_root.parent / f"timelapse_{service.recording.print_id}.mp4"
    blocker.mkdir()  # the video's name is taken: its render fails
    moonraker.finish("complete")
    (entry,) = rendered(service)
    assert entry["ok"] is False and entry["frames_dir"]
    kept = sorted(p.name for p in (service.frames_root / entry["print_id"]).glob("frame_*.jpg"))
    assert len(kept) == entry["frames_taken"] >= 1
    camera = service.status()["cameras"]["0"]
    assert "frames are kept in" in camera["last_error"] and camera["last_render"]["ok"] is False
    assert camera["state"] == "idle"


def test_old_frame_folders_and_a_crash_leftovers_are_removed_at_start(node, moonraker, make_service,
                                                                     tmp_path):
    root = tmp_path / "timelapse" / ".frames"
    old, recent = root / "old_print", root / "recent_print"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "frame_000001.jpg").write_bytes(b"x")
    (root / "old_print2.jsonl").write_text("{}\n")
    week_ago = time.time() - 8 * 86400
    for path in (old, root / "old_print2.jsonl"):
        os.utime(path, (week_ago, week_ago))
    partial = tmp_path / "timelapse" / ".timelapse_cut.partial.mp4"
    partial.write_bytes(b"half")
    make_service(node.endpoint, moonraker.url)  # frames_max_age_days = 7 (the default)
    assert sorted(p.name for p in root.iterdir()) == ["recent_print"]
    assert not partial.exists()
    assert clean_old(root, 0.0, keep={"recent_print"}, now=time.time() + 1) == []
    assert clean_old(root, 0.0, now=time.time() + 1) == ["recent_print"]


def test_with_pyav_the_video_is_h264_and_without_it_h264_is_a_clear_error(tmp_path):
    import shutil
    import subprocess

    from camfabric.subscribers.timelapse.render import have_pyav

    paths = frames(tmp_path, 12, size=(161, 121))  # odd sizes: H.264 wants them even
    if not have_pyav():
        with pytest.raises(RenderError, match="PyAV"):
            render(paths, tmp_path / "h.mp4", fps=12, codec="h264")
        pytest.skip("PyAV is not installed (the optional `timelapse` extra): the mp4v path is used")
    video = render(paths, tmp_path / "h.mp4", fps=12, codec="auto")
    assert video.encoder == "h264" and video_frames(video.path) == 12
    if shutil.which("ffprobe"):
        codec = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name,width,height", "-of", "csv=p=0", str(video.path)],
                               capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        assert codec == "h264,160,120"


def test_vp9_through_opencv_is_a_video_browsers_play_without_pyav(tmp_path):
    import shutil
    import subprocess

    video = render(frames(tmp_path, 6), tmp_path / "v.mp4", fps=6, codec="vp9")
    assert video.encoder == "vp9" and video_frames(video.path) == 6
    if shutil.which("ffprobe"):
        codec = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name", "-of", "csv=p=0", str(video.path)],
                               capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        assert codec == "vp9"
