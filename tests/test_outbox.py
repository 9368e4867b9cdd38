"""The on-device outbox (real SQLite files): order, acknowledgment, bounds with drop-oldest, restarts, ownership."""
import os
import signal
import subprocess
import sys
import threading

import pytest

from facelink.edge.outbox import Outbox, OutboxError


def test_queue_pending_ack_in_order(tmp_path):
    with Outbox(tmp_path / "o.db", device="cam-1") as ob:
        seqs = [ob.put(bytes([i]) * 10, source=f"f{i}", meta={"frame": i})[0] for i in range(1, 6)]
        assert seqs == [1, 2, 3, 4, 5]
        assert [f.sequence for f in ob.pending()] == seqs
        assert [f.sequence for f in ob.pending(after=3)] == [4, 5]
        assert ob.pending(limit=2)[1].meta == {"frame": 2} and ob.pending(limit=1)[0].source == "f1"
        assert ob.ack(2) and not ob.ack(2)  # a second acknowledgment finds nothing
        s = ob.stats()
        assert (s.frames, s.bytes, s.queued, s.acknowledged, s.dropped_frames) == (4, 40, 5, 1, 0)


def test_survives_reopen_and_keeps_identity(tmp_path):
    with Outbox(tmp_path / "o.db", device="cam-1") as ob:
        ob.put(b"abc")
        device_id = ob.device_id
    with Outbox(tmp_path / "o.db") as ob:  # no name given: the outbox's own
        assert ob.device_id == device_id and ob.device == "cam-1"
        assert [f.data for f in ob.pending()] == [b"abc"]
        assert ob.put(b"def")[0] == 2
    with pytest.raises(OutboxError, match="outbox of device 'cam-1'"):
        Outbox(tmp_path / "o.db", device="cam-2")


def test_a_recreated_outbox_is_another_incarnation(tmp_path):
    with Outbox(tmp_path / "a.db", device="cam") as a, Outbox(tmp_path / "b.db", device="cam") as b:
        assert a.device_id != b.device_id and a.device_id.startswith("cam/")


def test_drop_oldest_by_frames_and_bytes(tmp_path):
    with Outbox(tmp_path / "o.db", device="cam", max_frames=3, max_bytes=100) as ob:
        for i in range(3):
            assert ob.put(b"x" * 10, source=f"f{i}")[1] == []
        seq, dropped = ob.put(b"y" * 10, source="f3")
        assert seq == 4 and [(d.sequence, d.source, d.bytes) for d in dropped] == [(1, "f0", 10)]
        seq, dropped = ob.put(b"z" * 85, source="big")  # 30 + 85 > 100 bytes: the two oldest make room
        assert [d.sequence for d in dropped] == [2, 3]
        assert [f.sequence for f in ob.pending()] == [4, 5]
        s = ob.stats()
        assert (s.frames, s.bytes, s.dropped_frames, s.dropped_bytes) == (2, 95, 3, 30)
        with pytest.raises(OutboxError, match="larger than the outbox"):
            ob.put(b"w" * 101)
        with pytest.raises(OutboxError, match="empty"):
            ob.put(b"")


def test_keys_queue_a_crop_once(tmp_path):
    with Outbox(tmp_path / "o.db", device="cam") as ob:
        assert ob.put(b"a", key="file-1")[0] == 1
        ob.ack(1)
        assert ob.put(b"a", key="file-1") == (None, [])  # answered long ago: still not queued again
        assert ob.put(b"a", key="file-2")[0] == 2


def test_wait_wakes_on_put(tmp_path):
    with Outbox(tmp_path / "o.db", device="cam") as ob:
        assert not ob.wait(0, 0.05)
        t = threading.Timer(0.1, lambda: ob.put(b"late"))
        t.start()
        assert ob.wait(0, 30)
        t.join()


def test_bad_settings_and_files_are_clear_errors(tmp_path):
    with pytest.raises(OutboxError, match="does not exist"):
        Outbox(tmp_path / "nowhere" / "o.db")
    with pytest.raises(OutboxError, match="bounds must be positive"):
        Outbox(tmp_path / "o.db", max_frames=0)
    with pytest.raises(OutboxError, match="device name"):
        Outbox(tmp_path / "o.db", device="a/b")
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="not a usable outbox"):
        Outbox(tmp_path / "junk.db")


def test_kill_9_mid_stream_of_puts_loses_nothing_committed(tmp_path):
    """A writer process killed with SIGKILL: every put it reported is there, sequence numbers without gaps."""
    db = tmp_path / "o.db"
    code = ("import sys\nfrom facelink.edge.outbox import Outbox\nob = Outbox(sys.argv[1], device='cam')\n"
            "for i in range(100000):\n    seq, _ = ob.put(b'c' * 300, source=str(i))\n"
            "    print(seq, flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    reported = [int(proc.stdout.readline()) for _ in range(50)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Outbox(db) as ob:
        seqs = [f.sequence for f in ob.pending(limit=1_000_000)]
        assert seqs[:50] == reported and seqs == list(range(1, len(seqs) + 1))
        assert ob.stats().frames == len(seqs) and ob.stats().queued == len(seqs)
