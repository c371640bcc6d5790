"""The lab as tests: socketlab's pytest plugin gives the `lab` fixture.

`lab` brings up this project's lab (compose.lab.yml) once per test session, under
a project name of its own, and always takes it down. A reaper container removes
it within a minute if pytest is killed.
"""

import pytest

MESSAGE = "hello, lab"


def echo(lab, text: str = MESSAGE, timeout: float = 5.0):
    return lab.exec(
        "client", ["python3", "echo_client.py", "server", "7007", text, "--timeout", str(timeout)]
    )


def test_the_message_comes_back(lab) -> None:
    result = echo(lab)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"reply: {MESSAGE}"


def test_the_message_survives_a_lossy_link(lab) -> None:
    with lab.shaped("server", "client", delay="40ms", loss="2%"):
        result = echo(lab)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"reply: {MESSAGE}"


@pytest.mark.lab_links({"client -> server": {"delay": "30ms"}})
def test_a_marker_shapes_for_one_test(lab) -> None:
    result = echo(lab)
    assert result.exit_code == 0, result.stderr


def test_a_partition_cuts_the_client_off(lab) -> None:
    with lab.partitioned("client", "server"):
        result = echo(lab, timeout=1.0)
    assert result.exit_code == 1
    assert "no reply" in result.stderr


def test_the_example_scenario_passes(lab) -> None:
    result = lab.run_scenario("scenarios/example.yaml")
    assert result.passed, result.reason()
