"""When frames are taken: prints start and end from print_stats.state, layer changes and the
macro's line trigger in layer mode, a timer in hyperlapse mode — all on a hand-moved clock."""

from __future__ import annotations

from camfabric.runtime.clock import ManualClock
from camfabric.subscribers.timelapse.triggers import (
    FRAME_MARKER,
    PrintEnded,
    PrintStarted,
    PrintTriggers,
    Trigger,
)


def kinds(events):
    return [type(e).__name__ for e in events]


def test_a_layer_print_triggers_once_per_layer_change_and_ends_with_its_state():
    clock = ManualClock()
    prints = PrintTriggers("layer", wall=clock.wall)
    assert prints.status({"state": "standby", "filename": "", "info": {"current_layer": None}},
                         clock.monotonic(), full=True) == []
    started = prints.status({"state": "printing", "filename": "sub/cube v2.gcode"}, clock.monotonic())
    assert kinds(started) == ["PrintStarted"]
    print_id = started[0].print_id
    assert print_id.startswith("cube_v2_") and "/" not in print_id
    triggers = []
    for layer in range(1, 6):
        clock.advance(3.0)
        triggers += prints.status({"info": {"current_layer": layer}}, clock.monotonic())
    # the same layer reported again (another field changed) is no new layer
    triggers += prints.status({"info": {"current_layer": 5}, "filename": "sub/cube v2.gcode"},
                              clock.monotonic())
    assert [t.layer for t in triggers] == [1, 2, 3, 4, 5]
    assert all(isinstance(t, Trigger) and t.print_id == print_id and t.reason == "layer" for t in triggers)
    assert triggers[2].t == 1009.0  # the moment the change arrived, on the monotonic clock
    assert prints.status({"state": "complete"}, clock.monotonic()) == [PrintEnded(print_id, "complete")]
    assert prints.status({"info": {"current_layer": 6}}, clock.monotonic()) == []  # idle: nothing


def test_nothing_is_recorded_while_paused_and_the_print_goes_on_after_resume():
    clock = ManualClock()
    prints = PrintTriggers("layer", wall=clock.wall)
    prints.status({"state": "printing", "filename": "a.gcode", "info": {"current_layer": None}},
                  clock.monotonic(), full=True)
    assert kinds(prints.status({"info": {"current_layer": 1}}, clock.monotonic())) == ["Trigger"]
    assert prints.status({"state": "paused"}, clock.monotonic()) == []
    assert prints.status({"info": {"current_layer": 2}}, clock.monotonic()) == []  # paused: no frame
    assert prints.status({"state": "printing"}, clock.monotonic()) == []  # same print, no new start
    assert kinds(prints.status({"info": {"current_layer": 3}}, clock.monotonic())) == ["Trigger"]


def test_the_macro_line_drives_a_print_alone_once_it_is_seen():
    clock = ManualClock()
    prints = PrintTriggers("layer", wall=clock.wall)
    assert prints.gcode_response(f"// {FRAME_MARKER}", clock.monotonic()) == []  # idle: nothing
    prints.status({"state": "printing", "filename": "a.gcode", "info": {"current_layer": None}},
                  clock.monotonic(), full=True)
    assert kinds(prints.status({"info": {"current_layer": 1}}, clock.monotonic())) == ["Trigger"]
    (macro,) = prints.gcode_response(f"// {FRAME_MARKER}", clock.monotonic())
    assert macro.reason == "macro" and macro.layer == 1
    # from now on a layer change is no trigger of its own: one frame per layer, not two
    assert prints.status({"info": {"current_layer": 2}}, clock.monotonic()) == []
    assert kinds(prints.gcode_response(f"echo: {FRAME_MARKER}", clock.monotonic())) == ["Trigger"]
    for other in (f"// not {FRAME_MARKER}", "!! Unknown command", f"{FRAME_MARKER}x"):
        assert prints.gcode_response(other, clock.monotonic()) == []


def test_hyperlapse_takes_one_frame_per_interval_while_printing_and_never_a_burst():
    clock = ManualClock()
    prints = PrintTriggers("hyperlapse", interval_s=2.0, wall=clock.wall)
    assert prints.tick(clock.monotonic()) == []  # idle
    events = prints.status({"state": "printing", "filename": "a.gcode"}, clock.monotonic(), full=True)
    assert kinds(events) == ["PrintStarted", "Trigger"]  # a frame at the start
    times = []
    for _ in range(40):
        clock.advance(0.25)
        times += [t.t for t in prints.tick(clock.monotonic())]
    assert times == [1002.0, 1004.0, 1006.0, 1008.0, 1010.0]
    assert prints.status({"info": {"current_layer": 3}}, clock.monotonic()) == []  # layers: no frame
    prints.status({"state": "paused"}, clock.monotonic())
    clock.advance(30)
    assert prints.tick(clock.monotonic()) == []  # paused
    prints.status({"state": "printing"}, clock.monotonic())
    # a machine that slept through 30 s gets one frame now, not fifteen
    assert len(prints.tick(clock.monotonic())) == 1
    assert prints.tick(clock.monotonic()) == []
    clock.advance(2.0)
    assert len(prints.tick(clock.monotonic())) == 1


def test_after_a_reconnect_the_full_state_continues_ends_or_replaces_the_print():
    clock = ManualClock()
    prints = PrintTriggers("layer", wall=clock.wall)
    full = {"state": "printing", "filename": "a.gcode", "info": {"current_layer": 4}}
    (started,) = prints.status(full, clock.monotonic(), full=True)
    # Moonraker came back; the printer is still on a.gcode, now at layer 6: one trigger, same print
    again = prints.status({**full, "info": {"current_layer": 6}}, clock.monotonic(), full=True)
    assert [(type(e), e.print_id) for e in again] == [(Trigger, started.print_id)]
    # … it finished while we were away
    assert prints.status({**full, "state": "complete"}, clock.monotonic(), full=True) == \
        [PrintEnded(started.print_id, "complete")]
    # … or another print runs now: the first ends with what it had, the new one starts
    (second,) = prints.status({**full, "filename": "b.gcode"}, clock.monotonic(), full=True)
    clock.advance(1)
    events = prints.status({**full, "filename": "c.gcode"}, clock.monotonic(), full=True)
    assert [type(e) for e in events] == [PrintEnded, PrintStarted]
    assert events[0] == PrintEnded(second.print_id, "lost")
    # Klipper restarted under the print: it ends with what was recorded
    assert prints.lost() == [PrintEnded(events[1].print_id, "lost")]
    assert prints.lost() == []


def test_a_print_already_running_at_first_sight_carries_on_with_its_unfinished_recording():
    clock = ManualClock()
    asked = []

    def resume(filename, since):
        asked.append((filename, since))
        return "cube_20261207_010000"

    prints = PrintTriggers("layer", wall=clock.wall, resume=resume)
    full = {"state": "printing", "filename": "cube.gcode", "total_duration": 600.0,
            "info": {"current_layer": 9}}
    (started,) = prints.status(full, clock.monotonic(), full=True)
    assert started == PrintStarted("cube_20261207_010000", "cube.gcode", resumed=True)
    assert asked == [("cube.gcode", clock.wall() - 600.0)]  # only a recording made since the start
    # a print seen starting live is always a new recording
    prints.status({"state": "complete"}, clock.monotonic())
    (fresh,) = prints.status({"state": "printing", "total_duration": 0.0}, clock.monotonic())
    assert not fresh.resumed and fresh.print_id.startswith("cube_") and len(asked) == 1
