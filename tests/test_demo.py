"""`make demo`'s pipeline as an integration test: real server process, real edge client process, loopback."""
import io

from facelink.cloud import demo


def test_demo_end_to_end():
    buf = io.StringIO()
    summary = demo.run(timeout=240, out=buf)
    text = buf.getvalue()
    assert summary["frames"] == 9, text
    assert all("error" not in r for r in summary["results"]), text
    assert "server stopped" in text
    # through the edge client that cameras run: outbox and delivery, nothing left waiting
    assert "facelink-edge run " in text and "9 crops sent" in text and "9 answered, 0 left in the outbox" in text
    assert all(r["bytes"] > 0 and r["sequence"] > 0 for r in summary["results"])
    # the unenrolled person must not be named as someone else, and most enrolled ones are recognized
    capriati = [r for r in summary["results"] if "Capriati" in r["file"]][0]
    assert not capriati.get("identity"), text
    assert summary["correct"] >= 6, text
