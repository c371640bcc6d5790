"""The lesson of this project as tests (they pass because they assert it): a reader that
takes one recv() for one message breaks when the replies arrive in pieces; one that frames
its messages does not. socketlab's pytest plugin gives the `lab` fixture."""

import json

import pytest

SLICED = {"mss": 88, "slice_delay": "5ms"}  # 76-byte segments, 5 ms apart


def run(lab, client: str):
    result = lab.exec("client", ["python3", client, "server", "7007", "--messages", "20"])
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def test_on_a_clean_link_both_clients_get_every_reply(lab) -> None:
    assert run(lab, "naive_client.py") == (0, {"ok": True, "messages": 20})
    assert run(lab, "framed_client.py") == (0, {"ok": True, "messages": 20})


def test_sliced_replies_break_the_naive_client_only(lab) -> None:
    with lab.shaped("server", "client", **SLICED):
        naive = run(lab, "naive_client.py")
        framed = run(lab, "framed_client.py")
    code, report = naive
    assert code == 1
    assert report["error"] == "reply differs from request"
    assert report["got"] < report["sent"]  # one recv got part of the reply
    assert framed == (0, {"ok": True, "messages": 20})


@pytest.mark.lab_links({"server -> client": SLICED})
def test_the_marker_slices_for_one_test(lab) -> None:
    code, report = run(lab, "naive_client.py")
    assert (code, report["error"]) == (1, "reply differs from request")
